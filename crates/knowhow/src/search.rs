//! `knowhow search`: ranked chunks with where they come from and a snippet.

use std::process::ExitCode;

use knowhow_index::Hit;
use serde_json::json;

use crate::output;
use crate::Context;

/// Retrieval modes. Only lexical (BM25) exists so far; dense and hybrid
/// retrieval arrive with embeddings.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Mode {
    /// BM25 over chunk text (English stemming and stop words)
    Lexical,
}

#[derive(clap::Args)]
pub struct Args {
    /// What to look for, in plain words
    query: String,
    /// Number of results
    #[arg(short, default_value_t = 10)]
    k: usize,
    #[arg(long, value_enum, default_value = "lexical")]
    mode: Mode,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let Mode::Lexical = args.mode;
    let reader = context.home.open_reader(&context.collection)?;
    let hits = reader.search(&args.query, args.k)?;
    if context.json {
        let hits: Vec<serde_json::Value> = hits.iter().map(hit_json).collect();
        output::json_line(&json!({"query": args.query, "collection": context.collection.to_string(), "hits": hits}));
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
