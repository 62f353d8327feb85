//! `knowhow search`: ranked chunks with where they come from and a snippet.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
use knowhow_index::{Filter, Hit, Reader, ScoredChunk};
use knowhow_rag::{Mode, Options as RetrievalOptions, Retriever, RetrieverSettings};
use serde_json::json;

use crate::{embedding, output, Context};

/// `--mode`: the library's retrieval modes, with their descriptions in `--help`.
fn mode_parser() -> impl clap::builder::TypedValueParser<Value = Mode> {
    let names = Mode::ALL.map(|m| PossibleValue::new(m.name()).help(m.describe()));
    PossibleValuesParser::new(names).map(|name| name.parse::<Mode>().expect("clap checked the name"))
}

/// How to retrieve: shared by `search` and `eval beir`.
#[derive(clap::Args, Clone)]
pub struct RetrievalArgs {
    /// Retrieval mode [default: hybrid when the collection has vectors, else lexical]
    #[arg(long, value_parser = mode_parser())]
    pub mode: Option<Mode>,
    #[command(flatten)]
    pub tuning: RetrievalTuning,
}

/// Models and knobs of retrieval: shared by `search`, `eval beir` and `ask`.
#[derive(clap::Args, Clone)]
pub struct RetrievalTuning {
    /// Embedding model for the query; must be the collection's [default: the collection's model]
    #[arg(long, value_name = "MODEL")]
    pub embed_model: Option<String>,
    /// Cross-encoder for --mode rerank: a model name or folder, tei:URL, cohere:URL#MODEL or jina:URL#MODEL
    #[arg(long, value_name = "MODEL", default_value = "cross-encoder/ms-marco-MiniLM-L-6-v2")]
    pub rerank_model: String,
    /// Chunks each retriever hands to fusion
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub candidates: usize,
    /// Fused chunks the cross-encoder re-scores
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub rerank_top: usize,
    /// Reciprocal Rank Fusion constant k
    #[arg(long, default_value_t = knowhow_rag::fusion::DEFAULT_K, value_name = "K")]
    pub rrf_k: f64,
    /// RRF weight of the BM25 list
    #[arg(long, default_value_t = 1.0, value_name = "W")]
    pub lexical_weight: f64,
    /// RRF weight of the dense list
    #[arg(long, default_value_t = 1.0, value_name = "W")]
    pub dense_weight: f64,
    /// Only documents whose metadata has KEY=VALUE (repeatable; dense mode)
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

impl RetrievalTuning {
    fn settings(&self) -> anyhow::Result<RetrieverSettings> {
        let filter = if self.filters.is_empty() {
            None
        } else {
            let metadata = self
                .filters
                .iter()
                .map(|f| {
                    f.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("--filter {f:?} is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?;
            Some(Filter { metadata })
        };
        Ok(RetrieverSettings {
            embed_model: self.embed_model.clone(),
            rerank_model: self.rerank_model.clone(),
            options: RetrievalOptions {
                candidates: self.candidates,
                rrf_k: self.rrf_k,
                lexical_weight: self.lexical_weight,
                dense_weight: self.dense_weight,
                rerank_top: self.rerank_top,
                filter,
            },
        })
    }
}

/// The retriever for `requested` (or the collection's best mode) over the context's collection. Models are never
/// downloaded here; falling back to lexical search is said once on stderr.
pub fn retriever(
    context: &Context,
    reader: &Reader,
    requested: Option<Mode>,
    tuning: &RetrievalTuning,
) -> anyhow::Result<Retriever> {
    let resolve = embedding::resolve_options(context, false);
    let retriever = match Retriever::new(reader, &context.collection, requested, &tuning.settings()?, &resolve) {
        Err(knowhow_rag::Error::FilterNeedsDense(_)) => {
            anyhow::bail!("--filter applies to dense retrieval only: add --mode dense")
        }
        Err(knowhow_rag::Error::Index(knowhow_index::Error::NoModel(collection))) => anyhow::bail!(
            "{collection} has no vectors (it was ingested without an embedding model), so --mode {} cannot run; \
             `knowhow reembed` adds vectors",
            requested.map_or("hybrid", Mode::name)
        ),
        other => other?,
    };
    if let Some(fallback) = retriever.fallback() {
        embedding::lexical_only_notice(
            &fallback.reason,
            &format!(
                "`knowhow model pull {}` (or --embed-model FOLDER) enables hybrid search",
                fallback.model
            ),
        );
    }
    Ok(retriever)
}

#[derive(clap::Args)]
pub struct Args {
    /// What to look for, in plain words
    query: String,
    /// Number of results
    #[arg(short, default_value_t = 10)]
    k: usize,
    #[command(flatten)]
    retrieval: RetrievalArgs,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let reader = context.home.open_reader(&context.collection)?;
    let retriever = retriever(context, &reader, args.retrieval.mode, &args.retrieval.tuning)?;
    let retrieved = retriever.retrieve(&reader, &args.query, args.k)?;
    let chunks: Vec<ScoredChunk> = retrieved
        .iter()
        .map(|r| ScoredChunk {
            id: r.id.clone(),
            score: r.score,
        })
        .collect();
    let hits = reader.hits(&args.query, &chunks)?;
    if context.json {
        let hits: Vec<serde_json::Value> = hits
            .iter()
            .map(|hit| {
                let mut value = hit_json(hit);
                if let Some(r) = retrieved.iter().find(|r| r.id == hit.id) {
                    value["lexical_rank"] = json!(r.lexical_rank);
                    value["dense_rank"] = json!(r.dense_rank);
                    value["rerank_score"] = json!(r.rerank_score);
                }
                value
            })
            .collect();
        output::json_line(&json!({
            "query": args.query,
            "collection": context.collection.to_string(),
            "mode": retriever.mode(),
            "hits": hits,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if hits.is_empty() {
        outln!("no matches in {}", context.collection);
    }
    for (rank, hit) in hits.iter().enumerate() {
        print_hit(rank + 1, hit);
    }
    Ok(ExitCode::SUCCESS)
}

fn location(hit: &Hit) -> String {
    let mut parts = vec![hit.source.clone()];
    if !hit.heading_path.is_empty() {
        parts.push(hit.heading_path.join(" › "));
    }
    match hit.pages {
        Some((a, b)) if a == b => parts.push(format!("p. {a}")),
        Some((a, b)) => parts.push(format!("pp. {a}-{b}")),
        None => {}
    }
    parts.join(" | ")
}

fn print_hit(rank: usize, hit: &Hit) {
    outln!("{rank}. {}  [{}]  score {:.3}", hit.title, hit.id, hit.score);
    outln!("   {}", location(hit));
    let snippet = output::mark(&hit.snippet.text, &hit.snippet.highlights);
    outln!("   {}", snippet.split_whitespace().collect::<Vec<_>>().join(" "));
}

fn hit_json(hit: &Hit) -> serde_json::Value {
    json!({
        "document_id": hit.id.document_id,
        "chunk": hit.id.ordinal,
        "score": hit.score,
        "title": hit.title,
        "source": hit.source,
        "heading_path": hit.heading_path,
        "pages": hit.pages.map(|(a, b)| json!([a, b])),
        "snippet": hit.snippet.text,
        "highlights": hit.snippet.highlights,
    })
}
