//! `knowhow eval`: retrieval quality on a standard benchmark.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use knowhow_core::CollectionRef;
use knowhow_eval::{beir, evaluate, Run};
use serde_json::json;

use crate::search::Mode;
use crate::{ingest, output, Context};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Evaluate retrieval on a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)
    ///
    /// The corpus is ingested into namespace `beir`, collection named after the
    /// folder (a second run skips ingestion), every judged query of the split
    /// is run, chunk hits are mapped to documents (best chunk per document),
    /// and nDCG@10, Recall@100 and MRR@10 are computed as trec_eval does.
    Beir {
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "lexical")]
        mode: Mode,
        #[arg(long, default_value = "test")]
        split: String,
        /// Also report ingest and query timings (adds a "timings" key to --json)
        #[arg(long)]
        timings: bool,
    },
}

pub fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let Command::Beir {
        dir,
        mode,
        split,
        timings,
    } = command;
    let Mode::Lexical = mode;
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
    let collection = CollectionRef::new("beir", &name)?;
    let beir_context = Context {
        home: context.home.clone(),
        collection: collection.clone(),
        json: context.json,
    };

    let started = Instant::now();
    let args = ingest::Args {
        paths: vec![dataset.corpus.clone()],
        id_field: Some("_id".into()),
        text_field: Some("text".into()),
        title_field: Some("title".into()),
        max_file_size: u64::MAX,
        chunk_tokens: 512,
        chunk_overlap: 64,
        ..ingest::Args::default()
    };
    let summary = ingest::ingest(&beir_context, &args, false)?;
    if let Some(failure) = summary.failures.first() {
        anyhow::bail!(
            "{} rows of the corpus failed to load, first: {failure}",
            summary.failures.len()
        );
    }
    let ingest_seconds = started.elapsed().as_secs_f64();

    let reader = context.home.open_reader(&collection)?;
    let started = Instant::now();
    let bar = output::progress(dataset.queries.len() as u64, context.json, "querying");
    let mut runs: HashMap<String, Run> = HashMap::with_capacity(dataset.queries.len());
    for (id, text) in &dataset.queries {
        runs.insert(id.clone(), top_documents(&reader, text, 100)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let query_seconds = started.elapsed().as_secs_f64();
    let scores = evaluate(&dataset.qrels, &runs);

    let timing = json!({
        "ingest_seconds": ingest_seconds,
        "query_seconds": query_seconds,
        "queries_per_second": dataset.queries.len() as f64 / query_seconds.max(1e-9),
        "ingested_documents": summary.documents_added + summary.documents_updated,
    });
    if context.json {
        let mut value = serde_json::to_value(scores)?;
        if timings {
            value["timings"] = timing;
        }
        output::json_line(&value);
    } else {
        println!(
            "{} ({} split, {} queries, mode lexical)",
            dir.display(),
            split,
            scores.queries
        );
        println!("  nDCG@10    {:.4}", scores.ndcg_at_10);
        println!("  Recall@100 {:.4}", scores.recall_at_100);
        println!("  MRR@10     {:.4}", scores.mrr_at_10);
        if timings {
            println!("  ingest {ingest_seconds:.2}s, queries {query_seconds:.3}s");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `k` best documents for a query: chunk hits mapped to their document,
/// each document scored by its best chunk. Fetches more chunks until `k`
/// distinct documents are found or the index runs out.
fn top_documents(reader: &knowhow_index::Reader, query: &str, k: usize) -> anyhow::Result<Run> {
    // Chunks per document average a little over one, so 1.5k chunks usually
    // hold k documents; a larger top-k costs tantivy more than the rare retry.
    let mut limit = k * 3 / 2;
    loop {
        let chunks = reader.rank(query, limit)?;
        let mut best: Vec<(String, f32)> = Vec::with_capacity(k);
        let mut seen = std::collections::HashSet::new();
        for chunk in &chunks {
            if seen.insert(chunk.document_id.as_str()) {
                best.push((chunk.document_id.clone(), chunk.score));
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
