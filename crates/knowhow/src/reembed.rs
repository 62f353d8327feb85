//! `knowhow reembed`: moves a collection to another embedding model, or
//! gives a lexical-only collection its vectors.
//!
//! Crash-safe and resumable: new vectors are staged in durable batches while
//! the old model stays in force; the switch is one transaction at the end. A
//! re-run after a kill resumes where the staging stopped.

use std::process::ExitCode;

use serde_json::json;

use crate::{embedding, output, Context};

#[derive(clap::Args)]
pub struct Args {
    /// The new embedding model: a name, a folder, or openai:BASE_URL#MODEL
    #[arg(long, default_value = knowhow_hub::DEFAULT_EMBEDDING_MODEL, value_name = "MODEL")]
    model: String,
    /// Texts per embedding batch
    #[arg(long, default_value_t = 32, value_name = "N")]
    batch_size: usize,
}

/// Chunks embedded and staged per durable transaction.
const STAGE: usize = 1024;

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let mut writer = context.home.open_writer(&context.collection, false)?;
    let loaded = embedding::load(context, &args.model, args.batch_size)?;
    let previous = writer.model_pin().cloned();
    if previous.as_ref().is_some_and(|p| p.same_model(&loaded.pin)) {
        let message = format!("{} already holds vectors of {}", context.collection, loaded.pin);
        report(context, &message, 0, &loaded.pin.id);
        return Ok(ExitCode::SUCCESS);
    }
    let progress = writer.start_reembed(&loaded.pin)?;
    let bar = output::progress(progress.chunks, context.json, "re-embedding");
    bar.set_position(progress.staged);
    let mut embedded = 0u64;
    loop {
        let todo = writer.reembed_todo(STAGE)?;
        if todo.is_empty() {
            break;
        }
        let texts: Vec<&str> = todo.iter().map(|c| c.text.as_str()).collect();
        let vectors = loaded.embedder.embed(&texts)?;
        let staged = writer.stage_vectors(&todo, &vectors)?;
        embedded += staged as u64;
        bar.inc(staged as u64);
    }
    writer.finish_reembed()?;
    writer.finish()?;
    bar.finish_and_clear();
    let message = match previous {
        Some(previous) => format!("{}: moved from {} to {}", context.collection, previous.id, loaded.pin),
        None => format!("{}: vectors of {} added", context.collection, loaded.pin),
    };
    report(context, &message, embedded, &loaded.pin.id);
    Ok(ExitCode::SUCCESS)
}

fn report(context: &Context, message: &str, embedded: u64, model: &str) {
    if context.json {
        output::json_line(&json!({
            "collection": context.collection.to_string(),
            "model": model,
            "chunks_embedded": embedded,
        }));
    } else {
        outln!("{message} ({embedded} chunks embedded)");
    }
}
