//! `knowhow embed`: one text per line in, one JSON vector per line out.

use std::io::{BufRead as _, BufWriter, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;

use crate::{embedding, output, Context};

#[derive(clap::Args)]
pub struct Args {
    /// Text file with one text per line; `-` or nothing reads stdin
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Embedding model: a name, a folder, or openai:BASE_URL#MODEL
    #[arg(long, default_value = knowhow_hub::DEFAULT_EMBEDDING_MODEL, value_name = "MODEL")]
    model: String,
    /// Texts per batch (batches are sorted by length to avoid padding)
    #[arg(long, default_value_t = 32, value_name = "N")]
    batch_size: usize,
    /// Print timing on stderr as one JSON line (model loading and output excluded)
    #[arg(long)]
    stats: bool,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let texts = read_lines(args.file.as_deref())?;
    let loaded = embedding::load(context, &args.model, args.batch_size)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bar = output::progress(refs.len() as u64, context.json || refs.len() < 256, "embedding");
    let started = Instant::now();
    let mut vectors = Vec::with_capacity(refs.len());
    for slice in refs.chunks(1024) {
        vectors.extend(loaded.embedder.embed(slice)?);
        bar.inc(slice.len() as u64);
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let written = (|| -> std::io::Result<()> {
        let mut out = BufWriter::new(std::io::stdout().lock());
        for vector in &vectors {
            serde_json::to_writer(&mut out, vector)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    })();
    output::closed_pipe_ends_quietly(written)?;
    if args.stats {
        eprintln!(
            "{}",
            json!({
                "model": loaded.pin.id,
                "texts": texts.len(),
                "dimension": loaded.pin.dimension,
                "embed_seconds": seconds,
                "texts_per_second": texts.len() as f64 / seconds.max(1e-9),
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn read_lines(file: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    let name = file.map_or_else(|| "stdin".to_string(), |f| f.display().to_string());
    let reader: Box<dyn std::io::BufRead> = match file {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {name}"))?,
        )),
    };
    reader
        .lines()
        .enumerate()
        .map(|(i, line)| line.with_context(|| format!("{name}:{}: not UTF-8 text", i + 1)))
        .collect()
}
