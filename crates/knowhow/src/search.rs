//! `knowhow search`: ranked chunks with where they come from and a snippet.

use std::process::ExitCode;

use anyhow::Context as _;
use knowhow_index::{Filter, Hit, Reader, ScoredChunk};
use knowhow_rag::{LoadedEmbedder, Mode as RetrievalMode, Options as RetrievalOptions, Reranker, Retrieved};
use serde_json::json;

use crate::{embedding, output, Context};

/// Retrieval modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// BM25 over chunk text (English stemming and stop words)
    Lexical,
    /// Nearest vectors of the query's embedding (exact scan)
    Dense,
    /// BM25 and dense, fused by Reciprocal Rank Fusion
    Hybrid,
    /// Hybrid, then the top candidates re-scored by a cross-encoder
    Rerank,
}

impl Mode {
    fn retrieval(self) -> RetrievalMode {
        match self {
            Mode::Lexical => RetrievalMode::Lexical,
            Mode::Dense => RetrievalMode::Dense,
            Mode::Hybrid => RetrievalMode::Hybrid,
            Mode::Rerank => RetrievalMode::Rerank,
        }
    }
}

/// How to retrieve: shared by `search` and `eval beir`.
#[derive(clap::Args, Clone)]
pub struct RetrievalArgs {
    /// Retrieval mode [default: hybrid when the collection has vectors, else lexical]
    #[arg(long, value_enum)]
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

/// The models and settings of one retrieval mode over one collection.
pub struct Retriever {
    pub mode: Mode,
    embedder: Option<LoadedEmbedder>,
    reranker: Option<Reranker>,
    options: RetrievalOptions,
}

impl Retriever {
    /// Picks the mode and loads what it needs. Models are never downloaded
    /// here. Without `--mode`, a collection whose model cannot be loaded is
    /// searched lexically (said once on stderr).
    pub fn new(
        context: &Context,
        reader: &Reader,
        requested: Option<Mode>,
        args: &RetrievalTuning,
    ) -> anyhow::Result<Retriever> {
        let pin = reader.model_pin()?;
        let mut mode = requested.unwrap_or(if pin.is_some() { Mode::Hybrid } else { Mode::Lexical });
        let mut embedder = None;
        if mode != Mode::Lexical {
            let Some(pin) = &pin else {
                anyhow::bail!(
                    "{} has no vectors (it was ingested without an embedding model), so --mode {} cannot run; \
                     `knowhow reembed` adds vectors",
                    context.collection,
                    mode_name(mode)
                );
            };
            match embedding::for_query(context, args.embed_model.as_deref(), pin, 32) {
                Ok(loaded) => embedder = Some(loaded),
                Err(e) if requested.is_none() => {
                    embedding::lexical_only_notice(
                        &format!("{e:#}"),
                        &format!(
                            "`knowhow model pull {}` (or --embed-model FOLDER) enables hybrid search",
                            pin.id
                        ),
                    );
                    mode = Mode::Lexical;
                }
                Err(e) => return Err(e),
            }
        }
        let reranker = if mode == Mode::Rerank {
            let options = embedding::resolve_options(context, false);
            Some(knowhow_rag::load_reranker(&args.rerank_model, &options)?)
        } else {
            None
        };
        let filter = if args.filters.is_empty() {
            None
        } else {
            if mode != Mode::Dense {
                anyhow::bail!("--filter applies to dense retrieval only: add --mode dense");
            }
            let metadata = args
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
        Ok(Retriever {
            mode,
            embedder,
            reranker,
            options: RetrievalOptions {
                candidates: args.candidates,
                rrf_k: args.rrf_k,
                lexical_weight: args.lexical_weight,
                dense_weight: args.dense_weight,
                rerank_top: args.rerank_top,
                filter,
            },
        })
    }

    /// The query embedder, when the mode uses one.
    pub fn embedder(&self) -> Option<&knowhow_rag::Embedder> {
        self.embedder.as_ref().map(|e| &e.embedder)
    }

    pub fn reranker(&self) -> Option<&Reranker> {
        self.reranker.as_ref()
    }

    pub fn options(&self) -> &RetrievalOptions {
        &self.options
    }

    /// The top `k` chunks for `query`.
    pub fn retrieve(&self, reader: &Reader, query: &str, k: usize) -> anyhow::Result<Vec<Retrieved>> {
        Ok(knowhow_rag::retrieve(
            reader,
            query,
            k,
            self.mode.retrieval(),
            self.embedder.as_ref().map(|e| &e.embedder),
            self.reranker.as_ref(),
            &self.options,
        )?)
    }
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Lexical => "lexical",
        Mode::Dense => "dense",
        Mode::Hybrid => "hybrid",
        Mode::Rerank => "rerank",
    }
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
    let retriever = Retriever::new(context, &reader, args.retrieval.mode, &args.retrieval.tuning)?;
    let retrieved = retriever.retrieve(&reader, &args.query, args.k)?;
    let chunks: Vec<ScoredChunk> = retrieved
        .iter()
        .map(|r| ScoredChunk {
            document_id: r.document_id.clone(),
            ordinal: r.ordinal,
            score: r.score,
        })
        .collect();
    let hits = reader.hits(&args.query, &chunks)?;
    if context.json {
        let hits: Vec<serde_json::Value> = hits
            .iter()
            .map(|hit| {
                let mut value = hit_json(hit);
                if let Some(r) = retrieved
                    .iter()
                    .find(|r| r.document_id == hit.document_id && r.ordinal == hit.ordinal)
                {
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
            "mode": mode_name(retriever.mode),
            "hits": hits,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if hits.is_empty() {
        println!("no matches in {}", context.collection);
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
    println!(
        "{rank}. {}  [{}#{}]  score {:.3}",
        hit.title, hit.document_id, hit.ordinal, hit.score
    );
    println!("   {}", location(hit));
    let snippet = output::mark(&hit.snippet.text, &hit.snippet.highlights);
    println!("   {}", snippet.split_whitespace().collect::<Vec<_>>().join(" "));
}

fn hit_json(hit: &Hit) -> serde_json::Value {
    json!({
        "document_id": hit.document_id,
        "chunk": hit.ordinal,
        "score": hit.score,
        "title": hit.title,
        "source": hit.source,
        "heading_path": hit.heading_path,
        "pages": hit.pages.map(|(a, b)| json!([a, b])),
        "snippet": hit.snippet.text,
        "highlights": hit.snippet.highlights,
    })
}
