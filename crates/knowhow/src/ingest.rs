//! `knowhow ingest`: the arguments, progress and printing of `knowhow_rag::pipeline`.
//!
//! Each batch of files is loaded on all cores, then committed in one store
//! transaction; only after the commit is a file reported (with `--json`, one
//! line per file: those lines are the acknowledgements).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use knowhow_ingest::load::{LoadOptions, Remedy, RowFields};
use knowhow_ingest::walk::WalkOptions;
use knowhow_rag::pipeline::{self, Event, FileReport, IngestOptions, Problem, Summary};
use serde_json::json;

use crate::{embedding, output, Context};

#[derive(clap::Args)]
pub struct Args {
    /// Files and folders to ingest (folders recursively; hidden and .gitignore'd paths are skipped)
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Also remove documents whose source file no longer exists
    #[arg(long)]
    pub prune: bool,
    /// Only files matching this gitignore-style glob (repeatable; prefix ! to exclude)
    #[arg(long = "glob", short = 'g', value_name = "GLOB")]
    pub globs: Vec<String>,
    /// Skip files larger than this many bytes
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub max_file_size: u64,
    /// Maximum chunk size in tokens (128-2048) [default: 512, or less when the embedding model reads less]
    #[arg(long, value_name = "TOKENS")]
    pub chunk_tokens: Option<usize>,
    /// Tokens shared by consecutive chunks
    #[arg(long, default_value_t = 64, value_name = "TOKENS")]
    pub chunk_overlap: usize,
    /// CSV/JSONL: field holding the text [default: text, content, body, document, passage, contents]
    #[arg(long, value_name = "FIELD")]
    pub text_field: Option<String>,
    /// CSV/JSONL: field holding the row's id [default: id, _id, uuid, key; else the line number]
    #[arg(long, value_name = "FIELD")]
    pub id_field: Option<String>,
    /// CSV/JSONL: field holding the title [default: title, name, subject]
    #[arg(long, value_name = "FIELD")]
    pub title_field: Option<String>,
    /// Embedding model: a name (all-MiniLM-L6-v2, org/name), a folder, openai:BASE_URL#MODEL, or
    /// `none` for lexical search only [default: the collection's model, else all-MiniLM-L6-v2]
    #[arg(long, value_name = "MODEL")]
    pub embed_model: Option<String>,
    /// Texts per embedding batch
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub embed_batch: usize,
    /// Decode text files with this encoding (e.g. windows-1252) instead of requiring UTF-8
    #[arg(long, value_name = "LABEL")]
    pub encoding: Option<String>,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let summary = ingest(context, &args, context.json)?;
    report(context, &summary);
    Ok(if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

impl Args {
    /// The pipeline's options from the command line.
    pub fn options(&self) -> anyhow::Result<IngestOptions> {
        let encoding = match &self.encoding {
            Some(label) => Some(encoding_rs::Encoding::for_label(label.as_bytes()).with_context(|| {
                format!("unknown --encoding {label:?} (try utf-8, windows-1252, shift_jis, utf-16le)")
            })?),
            None => None,
        };
        Ok(IngestOptions {
            walk: WalkOptions {
                globs: self.globs.clone(),
                max_file_bytes: self.max_file_size,
            },
            load: LoadOptions {
                encoding,
                row_fields: RowFields {
                    id: self.id_field.clone(),
                    title: self.title_field.clone(),
                    text: self.text_field.clone(),
                },
                ..LoadOptions::default()
            },
            chunk_tokens: self.chunk_tokens,
            chunk_overlap: self.chunk_overlap,
            prune: self.prune,
        })
    }
}

/// Ingests `args.paths` into the context's collection. With `events`, one
/// JSON line per file goes to stdout as each batch commits.
pub fn ingest(context: &Context, args: &Args, events: bool) -> anyhow::Result<Summary> {
    let model = args.embed_model.as_deref();
    ingest_paths(context, &args.paths, &args.options()?, model, args.embed_batch, events)
}

/// Ingests `paths` with a progress bar, embedding with `embed_model` (a spec, [`embedding::NONE`], or `None` for
/// the collection's model).
pub fn ingest_paths(
    context: &Context,
    paths: &[PathBuf],
    options: &IngestOptions,
    embed_model: Option<&str>,
    embed_batch: usize,
    events: bool,
) -> anyhow::Result<Summary> {
    let mut writer = context.home.open_writer(&context.collection, true)?;
    let embedder = embedding::for_ingest(context, &mut writer, embed_model, embed_batch)?;
    // Sized once the walk has counted the files.
    let mut files = indicatif::ProgressBar::hidden();
    let mut embedding_bar = None;
    let mut on_event = |event: Event<'_>| match event {
        Event::Found { files: count } => {
            files = output::progress(count as u64, context.json, "ingesting");
        }
        Event::Skipped(skipped) => {
            if !skipped.expected && !events {
                eprintln!(
                    "skipped {}: {}",
                    skipped.path,
                    with_flag(&skipped.reason, skipped.remedy.as_ref())
                );
            }
        }
        Event::Embedding { chunks } => {
            embedding_bar = Some(output::progress(
                chunks as u64,
                context.json || chunks < 256,
                "embedding",
            ));
        }
        Event::Embedded { chunks } => {
            if let Some(bar) = &embedding_bar {
                bar.inc(chunks as u64);
                if bar.length() == Some(bar.position()) {
                    bar.finish_and_clear();
                }
            }
        }
        Event::File(report) => {
            if events {
                output::json_line(&file_json(report));
            }
        }
        Event::Batch { files: count } => files.inc(count as u64),
        Event::Preparing { .. } => {}
    };
    let summary = pipeline::ingest(writer, embedder.as_ref(), paths, options, &mut on_event)?;
    files.finish_and_clear();
    Ok(summary)
}

/// A file's acknowledgement line.
fn file_json(report: &FileReport) -> serde_json::Value {
    let mut report = report.clone();
    if let Some(error) = &mut report.error {
        *error = with_flag(error, report.remedy.as_ref());
    }
    report.errors.iter_mut().flatten().for_each(name_flag);
    let mut value = serde_json::to_value(report).expect("a file report serializes");
    value["type"] = json!("file");
    value
}

/// `text`, followed by the flag that would fix it, where one would.
fn with_flag(text: &str, remedy: Option<&Remedy>) -> String {
    match remedy {
        None => text.to_string(),
        Some(Remedy::Encoding(label)) => format!("{text}: pass --encoding {label}"),
        Some(Remedy::TextField) => format!("{text}: pass --text-field FIELD"),
        Some(Remedy::MaxFileSize) => format!("{text} (raise it with --max-file-size)"),
    }
}

fn name_flag(problem: &mut Problem) {
    problem.error = with_flag(&problem.error, problem.remedy.as_ref());
}

fn report(context: &Context, summary: &Summary) {
    let mut summary = summary.clone();
    summary.failures.iter_mut().for_each(name_flag);
    for skipped in &mut summary.skipped {
        skipped.reason = with_flag(&skipped.reason, skipped.remedy.as_ref());
    }
    if context.json {
        let mut value = serde_json::to_value(&summary).expect("summary serializes");
        value["type"] = json!("summary");
        value["collection"] = json!(context.collection.to_string());
        output::json_line(&value);
        return;
    }
    outln!(
        "{}: {} files ({} unchanged); documents: {} added, {} updated, {} unchanged, {} removed; {} chunks written",
        context.collection,
        summary.files,
        summary.files_unchanged,
        summary.documents_added,
        summary.documents_updated,
        summary.documents_unchanged,
        summary.documents_removed,
        summary.chunks_written,
    );
    if let Some(out) = summary.filtered_out {
        outln!(
            "no file to ingest: of the {} files there, {} are hidden (a name starting with '.'), {} are excluded \
             by .gitignore or .ignore files, and {} do not match --glob",
            out.files,
            out.hidden,
            out.ignored,
            out.unmatched
        );
    }
    let unsupported = summary.skipped.iter().filter(|s| s.expected).count();
    if unsupported > 0 {
        outln!("{unsupported} files of unsupported types skipped (use --json to list them)");
    }
    if !summary.failures.is_empty() {
        outln!("{} failures:", summary.failures.len());
        for failure in &summary.failures {
            let location = match failure.line {
                Some(line) => format!("{}:{line}", failure.source),
                None => failure.source.clone(),
            };
            outln!("  {location}: {}", failure.error);
        }
    }
}
