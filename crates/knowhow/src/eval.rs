//! `knowhow eval`: retrieval quality on a standard benchmark.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use knowhow_core::CollectionRef;
use knowhow_eval::{beir, evaluate, Run};
use knowhow_ingest::load::RowFields;
use serde_json::json;

use knowhow_rag::pipeline::IngestOptions;
use knowhow_rag::{Mode, Retriever};

use crate::search::{self, RetrievalArgs};
use crate::{embedding, ingest, output, Context};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Evaluate retrieval on a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)
    ///
    /// The corpus is ingested into namespace `beir`, collection named after the
    /// folder (lexical mode), or after the folder and the embedding model
    /// (other modes); a second run skips ingestion. Every judged query of the split
    /// is run, chunk hits are mapped to documents (best chunk per document),
    /// and nDCG@10, Recall@100 and MRR@10 are computed as trec_eval does.
    Beir {
        dir: PathBuf,
        #[command(flatten)]
        retrieval: RetrievalArgs,
        #[arg(long, default_value = "test")]
        split: String,
        /// Also report ingest and query timings (adds a "timings" key to --json)
        #[arg(long)]
        timings: bool,
    },
    /// Compare a fine-tuned adapter with its base model on held-out rows: loss, perplexity, exact match,
    /// JSON-valid, JSON-schema-valid and regex match rates (stored on the adapter's card)
    Tune(crate::tune::EvalArgs),
}

pub fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let (dir, mut retrieval, split, timings) = match command {
        Command::Beir {
            dir,
            retrieval,
            split,
            timings,
        } => (dir, retrieval, split, timings),
        Command::Tune(args) => return crate::tune::evaluate(context, args),
    };
    let mode = *retrieval.mode.get_or_insert(Mode::Lexical);
    let dataset = beir::load(&dir, &split).map_err(anyhow::Error::msg)?;
    let name = dir
        .canonicalize()
        .with_context(|| dir.display().to_string())?
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .replace(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'), "_")
        })
        .unwrap_or_else(|| "dataset".into());
    // Lexical evaluation needs no vectors: it keeps its own collection, so it
    // never waits for embeddings.
    let embed_model = match mode {
        Mode::Lexical => embedding::NONE.to_string(),
        _ => retrieval
            .tuning
            .embed_model
            .clone()
            .unwrap_or_else(|| knowhow_hub::DEFAULT_EMBEDDING_MODEL.to_string()),
    };
    let name = match mode {
        Mode::Lexical => name,
        _ => format!("{name}--{}", slug(&embed_model)),
    };
    let collection = CollectionRef::new("beir", &name)?;
    let beir_context = Context {
        home: context.home.clone(),
        collection: collection.clone(),
        json: context.json,
    };

    let started = Instant::now();
    let mut options = IngestOptions::default();
    options.walk.max_file_bytes = u64::MAX;
    options.load.row_fields = RowFields {
        id: Some("_id".into()),
        text: Some("text".into()),
        title: Some("title".into()),
    };
    let corpus = [dataset.corpus.clone()];
    let summary = ingest::ingest_paths(&beir_context, &corpus, &options, Some(&embed_model), 32, false)?;
    if let Some(failure) = summary.failures.first() {
        anyhow::bail!(
            "{} rows of the corpus failed to load, first: {}: {}",
            summary.failures.len(),
            failure.source,
            failure.error
        );
    }
    let ingest_seconds = started.elapsed().as_secs_f64();

    let reader = context.home.open_reader(&collection)?;
    let retriever = search::retriever(&beir_context, &reader, retrieval.mode, &retrieval.tuning)?;
    let started = Instant::now();
    let bar = output::progress(dataset.queries.len() as u64, context.json, "querying");
    let mut runs: HashMap<String, Run> = HashMap::with_capacity(dataset.queries.len());
    let mut latencies = Vec::with_capacity(dataset.queries.len());
    for (id, text) in &dataset.queries {
        let query_started = Instant::now();
        runs.insert(id.clone(), top_documents(&retriever, &reader, text, 100)?);
        latencies.push(query_started.elapsed().as_secs_f64() * 1000.0);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let query_seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let scores = evaluate(&dataset.qrels, &runs);

    let timing = json!({
        "ingest_seconds": ingest_seconds,
        "query_seconds": query_seconds,
        "queries_per_second": dataset.queries.len() as f64 / query_seconds.max(1e-9),
        "latency_ms_p50": percentile(&latencies, 0.50),
        "latency_ms_p95": percentile(&latencies, 0.95),
        "ingested_documents": summary.documents_added + summary.documents_updated,
    });
    if context.json {
        let mut value = serde_json::to_value(scores)?;
        if timings {
            value["timings"] = timing;
        }
        output::json_line(&value);
    } else {
        outln!(
            "{} ({} split, {} queries, mode {})",
            dir.display(),
            split,
            scores.queries,
            retriever.mode()
        );
        outln!("  nDCG@10    {:.4}", scores.ndcg_at_10);
        outln!("  Recall@100 {:.4}", scores.recall_at_100);
        outln!("  MRR@10     {:.4}", scores.mrr_at_10);
        if timings {
            outln!(
                "  ingest {ingest_seconds:.2}s, queries {query_seconds:.3}s, latency p50 {:.2} ms, p95 {:.2} ms",
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.95)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `k` best documents for a query: chunk hits mapped to their document,
/// each document scored by its best chunk. Fetches more chunks until `k`
/// distinct documents are found or the index runs out.
fn top_documents(retriever: &Retriever, reader: &knowhow_index::Reader, query: &str, k: usize) -> anyhow::Result<Run> {
    // Chunks per document average a little over one, so 1.5k chunks usually
    // hold k documents; a larger top-k costs tantivy more than the rare retry.
    let mut limit = k * 3 / 2;
    loop {
        let chunks = retriever.retrieve(reader, query, limit)?;
        let mut best: Vec<(String, f32)> = Vec::with_capacity(k);
        let mut seen = std::collections::HashSet::new();
        for chunk in &chunks {
            if seen.insert(chunk.id.document_id.as_str()) {
                best.push((chunk.id.document_id.clone(), chunk.score));
                if best.len() == k {
                    return Ok(best);
                }
            }
        }
        if chunks.len() < limit {
            return Ok(best);
        }
        limit *= 4;
    }
}

/// The value below which `fraction` of the sorted `values` fall (nearest rank).
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A model spec as part of a collection name: lowercase letters, digits, `-`.
fn slug(spec: &str) -> String {
    let tail = spec.trim_end_matches('/').rsplit(['/', '#']).next().unwrap_or(spec);
    tail.to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 10.0);
        assert_eq!(percentile(&values, 0.95), 19.0);
        assert_eq!(percentile(&[3.0], 0.95), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn model_specs_become_collection_name_parts() {
        assert_eq!(slug("all-MiniLM-L6-v2"), "all-minilm-l6-v2");
        assert_eq!(slug("BAAI/bge-small-en-v1.5"), "bge-small-en-v1-5");
        assert_eq!(slug("/models/minilm/"), "minilm");
        assert_eq!(
            slug("openai:http://h:8000/v1#text-embedding-3-small"),
            "text-embedding-3-small"
        );
    }
}
