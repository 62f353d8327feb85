//! `knowhow ingest`: walk, load and chunk in parallel, commit in batches.
//!
//! Each batch of files is loaded on all cores, then committed in one store
//! transaction; only after the commit is a file reported (with `--json`, one
//! line per file: those lines are the acknowledgements).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use anyhow::Context as _;
use knowhow_index::{Applied, DocumentUpdate, SourceRecord, SourceUpdate, Writer};
use knowhow_ingest::chunk::{chunk_document, estimate_tokens, ChunkOptions};
use knowhow_ingest::load::{load_bytes, Format, LoadOptions, RowError, RowFields};
use knowhow_ingest::walk::{walk, SkipReason, WalkOptions};
use knowhow_rag::{Embedder, LoadedEmbedder};
use rayon::prelude::*;
use serde_json::json;

use crate::{embedding, output, Context};

#[derive(clap::Args, Default)]
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

/// Counts over the whole run.
#[derive(Default, serde::Serialize)]
pub struct Summary {
    pub files: u64,
    pub files_unchanged: u64,
    pub documents_added: u64,
    pub documents_updated: u64,
    pub documents_unchanged: u64,
    pub documents_removed: u64,
    pub chunks_written: u64,
    pub failures: Vec<serde_json::Value>,
    pub skipped: Vec<serde_json::Value>,
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

/// Ingests `args.paths` into the context's collection. With `events`, one
/// JSON line per file goes to stdout as each batch commits.
pub fn ingest(context: &Context, args: &Args, events: bool) -> anyhow::Result<Summary> {
    let encoding =
        match &args.encoding {
            Some(label) => Some(encoding_rs::Encoding::for_label(label.as_bytes()).with_context(|| {
                format!("unknown --encoding {label:?} (try utf-8, windows-1252, shift_jis, utf-16le)")
            })?),
            None => None,
        };
    let load_options = LoadOptions {
        encoding,
        row_fields: RowFields {
            id: args.id_field.clone(),
            title: args.title_field.clone(),
            text: args.text_field.clone(),
        },
        ..LoadOptions::default()
    };
    let walk_options = WalkOptions {
        globs: args.globs.clone(),
        max_file_bytes: args.max_file_size,
    };
    let found = walk(&args.paths, &walk_options).map_err(anyhow::Error::msg)?;
    let mut summary = Summary::default();
    for skipped in &found.skipped {
        let path = skipped.path.display().to_string();
        if !matches!(skipped.reason, SkipReason::UnsupportedType) && !events {
            eprintln!("skipped {path}: {}", skipped.reason);
        }
        summary
            .skipped
            .push(json!({"path": path, "reason": skipped.reason.to_string()}));
    }

    let mut writer = context.home.open_writer(&context.collection, true)?;
    let embedder = embedder_for(context, args, &mut writer)?;
    let model_tokens = embedder.as_ref().and_then(|e| e.embedder.max_tokens());
    let chunk_tokens = args
        .chunk_tokens
        .unwrap_or_else(|| model_tokens.map_or(DEFAULT_CHUNK_TOKENS, |m| m.clamp(128, DEFAULT_CHUNK_TOKENS)));
    let chunk_options = ChunkOptions::new(chunk_tokens, args.chunk_overlap).map_err(anyhow::Error::msg)?;
    let counter: &(dyn Fn(&str) -> usize + Sync) = match embedder.as_ref().and_then(|e| e.embedder.token_counter()) {
        Some(model) => &|text: &str| model.count_tokens(text),
        None => &estimate_tokens,
    };
    let settings = settings_fingerprint(args, chunk_options, embedder.as_ref().map(|e| e.pin.id.as_str()));
    let bar = output::progress(found.files.len() as u64, context.json, "ingesting");
    for batch in batches(&found.files) {
        let previous: Vec<Option<SourceRecord>> = batch
            .iter()
            .map(|(path, _)| writer.source(&path.to_string_lossy()))
            .collect::<Result<_, _>>()?;
        let mut prepared: Vec<Prepared> = batch
            .par_iter()
            .zip(previous.par_iter())
            .map(|((path, format), previous)| {
                prepare(
                    path,
                    *format,
                    previous.as_ref(),
                    &settings,
                    &load_options,
                    chunk_options,
                    counter,
                )
            })
            .collect();
        if let Some(embedder) = &embedder {
            embed(&writer, &embedder.embedder, &mut prepared, context.json)?;
        }
        commit(&mut writer, prepared, events, &mut summary)?;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();

    if args.prune {
        let gone: Vec<String> = writer
            .sources()?
            .into_iter()
            .map(|(source, _)| source)
            .filter(|source| !std::path::Path::new(source).exists())
            .collect();
        summary.documents_removed += u64::from(writer.remove_sources(&gone)?);
        for source in gone {
            if events {
                output::json_line(&json!({"type": "file", "source": source, "status": "pruned"}));
            }
        }
    }
    writer.finish()?;
    Ok(summary)
}

/// Groups files so that a batch is neither tiny (one transaction per file
/// would be fsync-bound) nor huge (acknowledgements should come often).
fn batches(files: &[(PathBuf, Format)]) -> Vec<&[(PathBuf, Format)]> {
    const MAX_FILES: usize = 64;
    const MAX_BYTES: u64 = 32 * 1024 * 1024;
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, (path, _)) in files.iter().enumerate() {
        bytes += std::fs::metadata(path).map_or(0, |m| m.len());
        if i + 1 - start >= MAX_FILES || bytes >= MAX_BYTES {
            out.push(&files[start..=i]);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < files.len() {
        out.push(&files[start..]);
    }
    out
}

/// Chunk size when no embedding model limits it.
const DEFAULT_CHUNK_TOKENS: usize = 512;

/// The embedder for this ingest, pinned to the collection; `None`: lexical
/// only (said on stderr).
fn embedder_for(context: &Context, args: &Args, writer: &mut Writer) -> anyhow::Result<Option<LoadedEmbedder>> {
    let pin = writer.model_pin().cloned();
    let Some(loaded) = embedding::for_ingest(context, args.embed_model.as_deref(), pin.as_ref(), args.embed_batch)?
    else {
        return Ok(None);
    };
    match &pin {
        // The pinned model under another name or path: keep the pin as it is.
        Some(pin) if embedding::same_model(pin, &loaded.pin) => Ok(Some(LoadedEmbedder {
            pin: pin.clone(),
            ..loaded
        })),
        Some(pin) => anyhow::bail!(
            "{} keeps vectors of {pin}, not of {}: vectors of two models cannot be compared. Ingest without \
             --embed-model, or move the collection to the new model with `knowhow reembed --model {}`",
            context.collection,
            loaded.pin,
            loaded.pin.id
        ),
        None => match writer.pin_model(&loaded.pin) {
            Ok(()) => Ok(Some(loaded)),
            // Documents ingested without vectors (offline, or --embed-model none).
            Err(knowhow_index::Error::Unembedded { .. }) if args.embed_model.is_none() => {
                embedding::lexical_only_notice(
                    &format!("{} was built without vectors", context.collection),
                    "`knowhow reembed` adds them",
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// Embeds the chunks of every new or changed document of a batch. Unchanged
/// documents (same content hash as stored) keep their vectors and are not
/// embedded again.
fn embed(writer: &Writer, embedder: &Embedder, prepared: &mut [Prepared], json: bool) -> anyhow::Result<()> {
    let mut todo: Vec<&mut DocumentUpdate> = Vec::new();
    for item in prepared.iter_mut() {
        let Prepared::Update { update, .. } = item else {
            continue;
        };
        for document in update.documents.iter_mut().flatten() {
            let stored = writer.stored_document(&document.document.id)?;
            if stored.is_none_or(|s| s.document.hash != document.document.hash) {
                todo.push(document);
            }
        }
    }
    let total: usize = todo.iter().map(|d| d.chunks.len()).sum();
    if total == 0 {
        return Ok(());
    }
    let bar = output::progress(total as u64, json || total < 256, "embedding");
    let texts: Vec<&str> = todo
        .iter()
        .flat_map(|d| d.chunks.iter().map(|c| c.text.as_str()))
        .collect();
    let mut vectors = Vec::with_capacity(total);
    // Slices large enough for length-sorted batches, small enough for a live bar.
    for slice in texts.chunks(1024) {
        vectors.extend(embedder.embed(slice)?);
        bar.inc(slice.len() as u64);
    }
    bar.finish_and_clear();
    let mut vectors = vectors.into_iter();
    for document in todo {
        document.vectors = Some(vectors.by_ref().take(document.chunks.len()).collect());
    }
    Ok(())
}

/// Loader, chunker and model settings that change what a file turns into.
fn settings_fingerprint(args: &Args, chunk: ChunkOptions, model: Option<&str>) -> String {
    let parts = json!([
        model,
        chunk.max_tokens,
        chunk.overlap_tokens,
        args.text_field,
        args.id_field,
        args.title_field,
        args.encoding,
        env!("CARGO_PKG_VERSION"),
    ]);
    blake3::hash(parts.to_string().as_bytes()).to_hex()[..16].to_string()
}

/// One file after the parallel phase.
enum Prepared {
    /// Size and time unchanged: not even read.
    Untouched {
        source: String,
    },
    Update {
        update: SourceUpdate,
        row_errors: Vec<RowError>,
        chunks: u64,
    },
    Failed {
        source: String,
        error: String,
    },
}

fn prepare(
    path: &std::path::Path,
    format: Format,
    previous: Option<&SourceRecord>,
    settings: &str,
    load_options: &LoadOptions,
    chunk_options: ChunkOptions,
    count_tokens: &(dyn Fn(&str) -> usize + Sync),
) -> Prepared {
    let source = path.to_string_lossy().into_owned();
    let failed = |error: String| Prepared::Failed {
        source: source.clone(),
        error,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => return failed(format!("cannot read: {e}")),
    };
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    let settings_same = previous.is_some_and(|p| p.settings == settings && p.file_hash.is_some());
    if settings_same && previous.is_some_and(|p| p.bytes == meta.len() && p.modified_ns == modified_ns) {
        return Prepared::Untouched { source };
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return failed(format!("cannot read: {e}")),
    };
    let file_hash = blake3::hash(&bytes).to_hex().to_string();
    let mut record = SourceRecord {
        bytes: meta.len(),
        modified_ns,
        file_hash: Some(file_hash.clone()),
        settings: settings.to_string(),
        document_ids: Vec::new(),
    };
    if settings_same && previous.and_then(|p| p.file_hash.as_deref()) == Some(file_hash.as_str()) {
        let update = SourceUpdate {
            source,
            record,
            documents: None,
        };
        return Prepared::Update {
            update,
            row_errors: Vec::new(),
            chunks: 0,
        };
    }
    let loaded = match load_bytes(format, &bytes, &source, load_options) {
        Ok(loaded) => loaded,
        Err(e) => return failed(e.message),
    };
    if !loaded.row_errors.is_empty() {
        record.file_hash = None;
    }
    let documents: Vec<DocumentUpdate> = loaded
        .documents
        .into_par_iter()
        .map(|document| {
            let chunks = chunk_document(&document, chunk_options, count_tokens);
            DocumentUpdate {
                document,
                chunks,
                vectors: None,
            }
        })
        .collect();
    let chunks = documents.iter().map(|d| d.chunks.len() as u64).sum();
    Prepared::Update {
        update: SourceUpdate {
            source,
            record,
            documents: Some(documents),
        },
        row_errors: loaded.row_errors,
        chunks,
    }
}

fn commit(writer: &mut Writer, prepared: Vec<Prepared>, json: bool, summary: &mut Summary) -> anyhow::Result<()> {
    let mut updates = Vec::new();
    let mut extra = Vec::new();
    for item in prepared {
        summary.files += 1;
        match item {
            Prepared::Untouched { source } => {
                summary.files_unchanged += 1;
                if json {
                    output::json_line(&json!({"type": "file", "source": source, "status": "unchanged"}));
                }
            }
            Prepared::Failed { source, error } => {
                if json {
                    output::json_line(&json!({"type": "file", "source": source, "status": "failed", "error": error}));
                }
                summary.failures.push(json!({"source": source, "error": error}));
            }
            Prepared::Update {
                update,
                row_errors,
                chunks,
            } => {
                updates.push(update);
                extra.push((row_errors, chunks));
            }
        }
    }
    if updates.is_empty() {
        return Ok(());
    }
    let applied = writer.apply(updates)?;
    for (applied, (row_errors, chunks)) in applied.into_iter().zip(extra) {
        record_applied(&applied, &row_errors, chunks, json, summary);
    }
    Ok(())
}

fn record_applied(applied: &Applied, row_errors: &[RowError], chunks: u64, json: bool, summary: &mut Summary) {
    let written = applied.added + applied.updated;
    let status = if written == 0 && applied.removed == 0 {
        "unchanged"
    } else if applied.updated > 0 || applied.removed > 0 {
        "updated"
    } else {
        "added"
    };
    if status == "unchanged" {
        summary.files_unchanged += 1;
    }
    summary.documents_added += u64::from(applied.added);
    summary.documents_updated += u64::from(applied.updated);
    summary.documents_unchanged += u64::from(applied.unchanged);
    summary.documents_removed += u64::from(applied.removed);
    if written > 0 {
        summary.chunks_written += chunks;
    }
    let mut problems: Vec<serde_json::Value> = row_errors
        .iter()
        .map(|e| json!({"source": applied.source, "line": e.line, "error": e.message}))
        .collect();
    problems.extend(applied.conflicts.iter().map(|(id, other)| {
        json!({"source": applied.source, "document": id, "error": format!("document id {id:?} already belongs to {other}")})
    }));
    if json {
        output::json_line(&json!({
            "type": "file",
            "source": applied.source,
            "status": status,
            "added": applied.added,
            "updated": applied.updated,
            "unchanged": applied.unchanged,
            "removed": applied.removed,
            "errors": problems,
        }));
    }
    summary.failures.extend(problems);
}

fn report(context: &Context, summary: &Summary) {
    if context.json {
        let mut value = serde_json::to_value(summary).expect("summary serializes");
        value["type"] = json!("summary");
        value["collection"] = json!(context.collection.to_string());
        output::json_line(&value);
        return;
    }
    println!(
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
    let unsupported = summary
        .skipped
        .iter()
        .filter(|s| s["reason"] == "unsupported file type")
        .count();
    if unsupported > 0 {
        println!("{unsupported} files of unsupported types skipped (use --json to list them)");
    }
    if !summary.failures.is_empty() {
        println!("{} failures:", summary.failures.len());
        for failure in &summary.failures {
            let source = failure["source"].as_str().unwrap_or("");
            let location = match failure["line"].as_u64() {
                Some(line) => format!("{source}:{line}"),
                None => source.to_string(),
            };
            println!("  {location}: {}", failure["error"].as_str().unwrap_or(""));
        }
    }
}
