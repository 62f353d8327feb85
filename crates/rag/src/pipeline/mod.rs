//! The incremental ingest pipeline: files and folders into a collection, the one code path of `knowhow ingest`,
//! `eval beir`, the quickstart and the server's upload jobs.
//!
//! ```text
//! walk ─▶ batches of files ─▶ prepare (on all cores: unchanged? read, load, chunk)
//!                           ─▶ embed new or changed documents ─▶ Writer::apply (one transaction) ─▶ FileReport events
//! ```
//!
//! A file is reported ([`Event::File`]) only after the transaction holding it committed: those reports are the
//! acknowledgements. Re-ingest is incremental: a file whose size, modification time and settings are unchanged is
//! not read; one whose bytes hash the same is not parsed; a document whose content hash is unchanged keeps its
//! vectors. A file that fails to load is reported and the batch goes on.

mod prepare;

use std::path::{Path, PathBuf};

use knowhow_index::{Applied, DocumentUpdate, SourceRecord, Writer};
use knowhow_ingest::chunk::{estimate_tokens, ChunkOptions};
use knowhow_ingest::load::{Format, LoadOptions, Remedy, RowError};
use knowhow_ingest::walk::{walk, Skipped, WalkOptions};
use rayon::prelude::*;
use serde::Serialize;

use crate::models::{Embedder, LoadedEmbedder};
use crate::Error;
use prepare::{prepare, Prepared};

/// Chunk size when no embedding model limits it.
pub const DEFAULT_CHUNK_TOKENS: usize = 512;

/// What to ingest and how to turn files into chunks.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub walk: WalkOptions,
    pub load: LoadOptions,
    /// Maximum chunk size in tokens; `None`: [`DEFAULT_CHUNK_TOKENS`], or less when the embedding model reads less.
    pub chunk_tokens: Option<usize>,
    /// Tokens shared by consecutive chunks.
    pub chunk_overlap: usize,
    /// Also remove the documents of sources that no longer exist.
    pub prune: bool,
}

impl Default for IngestOptions {
    fn default() -> IngestOptions {
        IngestOptions {
            walk: WalkOptions {
                globs: Vec::new(),
                max_file_bytes: 64 * 1024 * 1024,
            },
            load: LoadOptions::default(),
            chunk_tokens: None,
            chunk_overlap: 64,
            prune: false,
        }
    }
}

/// What happened to one file, once it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Added,
    Updated,
    Unchanged,
    Failed,
    /// Its source is gone and its documents were removed (with [`IngestOptions::prune`]).
    Pruned,
}

/// The acknowledgement of one file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileReport {
    pub source: String,
    pub status: FileStatus,
    /// Document counts, when the file went through the store (absent when it was not even read, failed or was
    /// pruned).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub counts: Option<DocumentCounts>,
    /// The reason, for a failed file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The ingest setting that would load a failed file, where one would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<Remedy>,
    /// Rows or documents of the file that failed while the rest went in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Problem>>,
}

/// Documents of one file by what the store did with them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DocumentCounts {
    pub added: u32,
    pub updated: u32,
    pub unchanged: u32,
    pub removed: u32,
}

/// Something that failed: a whole file, one of its rows (`line`), or one of its documents (`document`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    pub error: String,
    /// The ingest setting that would load it, where one would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<Remedy>,
}

/// A path the walk passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedPath {
    pub path: String,
    pub reason: String,
    /// The ingest setting that would take the file, where one would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<Remedy>,
    /// An unsupported file type is expected in any folder; other reasons (too large, unreadable) deserve a word.
    #[serde(skip)]
    pub expected: bool,
}

/// Counts over a whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub files: u64,
    pub files_unchanged: u64,
    pub documents_added: u64,
    pub documents_updated: u64,
    pub documents_unchanged: u64,
    pub documents_removed: u64,
    pub chunks_written: u64,
    pub failures: Vec<Problem>,
    pub skipped: Vec<SkippedPath>,
    /// Set when the folders hold files but the walk's filters left none: which filter took how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filtered_out: Option<knowhow_ingest::walk::FilteredOut>,
}

/// Progress of a run, in the order it happens.
#[derive(Debug)]
pub enum Event<'a> {
    /// The walk found this many files to consider.
    Found {
        files: usize,
    },
    Skipped(&'a SkippedPath),
    /// These files (their sources) are being read, parsed and chunked, as one batch.
    Preparing {
        sources: Vec<String>,
    },
    /// A batch has this many chunks to embed; [`Event::Embedded`] follows as they are.
    Embedding {
        chunks: usize,
    },
    Embedded {
        chunks: usize,
    },
    /// A file is durable (or failed, or was pruned).
    File(&'a FileReport),
    /// A batch of this many files is done.
    Batch {
        files: usize,
    },
}

/// Ingests `paths` into `writer`'s collection, then finishes the writer (everything reported is durable).
/// `embedder`, when given, must be the collection's pinned model (see [`crate::embedding::embedder_for_ingest`]);
/// without it the collection is lexical only. `on_event` sees every step.
pub fn ingest(
    mut writer: Writer,
    embedder: Option<&LoadedEmbedder>,
    paths: &[PathBuf],
    options: &IngestOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Summary, Error> {
    let found = walk(paths, &options.walk).map_err(Error::Ingest)?;
    let mut summary = Summary {
        filtered_out: found.filtered_out,
        ..Summary::default()
    };
    for skipped in &found.skipped {
        let skipped = skipped_path(skipped);
        on_event(Event::Skipped(&skipped));
        summary.skipped.push(skipped);
    }
    let chunk_options = chunk_options(options, embedder)?;
    let counter: &(dyn Fn(&str) -> usize + Sync) = match embedder.and_then(|e| e.embedder.token_counter()) {
        Some(model) => &|text: &str| model.count_tokens(text),
        None => &estimate_tokens,
    };
    let settings = settings_fingerprint(options, chunk_options, embedder.map(|e| e.pin.id.as_str()));
    on_event(Event::Found {
        files: found.files.len(),
    });
    for batch in batches(&found.files) {
        on_event(Event::Preparing {
            sources: batch
                .iter()
                .map(|(path, _)| path.to_string_lossy().into_owned())
                .collect(),
        });
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
                    &options.load,
                    chunk_options,
                    counter,
                )
            })
            .collect();
        if let Some(embedder) = embedder {
            embed(&writer, &embedder.embedder, &mut prepared, on_event)?;
        }
        commit(&mut writer, prepared, on_event, &mut summary)?;
        on_event(Event::Batch { files: batch.len() });
    }
    if options.prune {
        prune(&mut writer, on_event, &mut summary)?;
    }
    writer.finish()?;
    Ok(summary)
}

fn skipped_path(skipped: &Skipped) -> SkippedPath {
    SkippedPath {
        path: skipped.path.display().to_string(),
        reason: skipped.reason.to_string(),
        remedy: skipped.reason.remedy(),
        expected: matches!(skipped.reason, knowhow_ingest::walk::SkipReason::UnsupportedType),
    }
}

/// The chunker's settings: the asked size, else the default capped by what the model reads whole.
fn chunk_options(options: &IngestOptions, embedder: Option<&LoadedEmbedder>) -> Result<ChunkOptions, Error> {
    let model_tokens = embedder.and_then(|e| e.embedder.max_tokens());
    let chunk_tokens = options
        .chunk_tokens
        .unwrap_or_else(|| model_tokens.map_or(DEFAULT_CHUNK_TOKENS, |m| m.clamp(128, DEFAULT_CHUNK_TOKENS)));
    ChunkOptions::new(chunk_tokens, options.chunk_overlap).map_err(Error::Ingest)
}

/// Groups files so that a batch is neither tiny (one transaction per file would be fsync-bound) nor huge
/// (acknowledgements should come often).
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

/// Embeds the chunks of every new or changed document of a batch. Unchanged documents (same content hash as
/// stored) keep their vectors and are not embedded again.
fn embed(
    writer: &Writer,
    embedder: &Embedder,
    prepared: &mut [Prepared],
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(), Error> {
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
    on_event(Event::Embedding { chunks: total });
    let texts: Vec<&str> = todo
        .iter()
        .flat_map(|d| d.chunks.iter().map(|c| c.text.as_str()))
        .collect();
    let mut vectors = Vec::with_capacity(total);
    // Slices large enough for length-sorted batches, small enough for live progress.
    for slice in texts.chunks(1024) {
        vectors.extend(embedder.embed(slice)?);
        on_event(Event::Embedded { chunks: slice.len() });
    }
    let mut vectors = vectors.into_iter();
    for document in todo {
        document.vectors = Some(vectors.by_ref().take(document.chunks.len()).collect());
    }
    Ok(())
}

/// Loader, chunker and model settings that change what a file turns into.
fn settings_fingerprint(options: &IngestOptions, chunk: ChunkOptions, model: Option<&str>) -> String {
    let fields = &options.load.row_fields;
    let parts = serde_json::json!([
        model,
        chunk.max_tokens,
        chunk.overlap_tokens,
        fields.text,
        fields.id,
        fields.title,
        options.load.encoding.map(|e| e.name()),
        env!("CARGO_PKG_VERSION"),
    ]);
    blake3::hash(parts.to_string().as_bytes()).to_hex()[..16].to_string()
}

fn commit(
    writer: &mut Writer,
    prepared: Vec<Prepared>,
    on_event: &mut dyn FnMut(Event<'_>),
    summary: &mut Summary,
) -> Result<(), Error> {
    let mut updates = Vec::new();
    let mut extra = Vec::new();
    for item in prepared {
        summary.files += 1;
        match item {
            Prepared::Untouched { source } => {
                summary.files_unchanged += 1;
                on_event(Event::File(&FileReport::bare(source, FileStatus::Unchanged)));
            }
            Prepared::Failed { source, error, remedy } => {
                let mut report = FileReport::bare(source.clone(), FileStatus::Failed);
                report.error = Some(error.clone());
                report.remedy = remedy.clone();
                on_event(Event::File(&report));
                summary.failures.push(Problem {
                    source,
                    line: None,
                    document: None,
                    error,
                    remedy,
                });
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
        let report = applied_report(&applied, &row_errors);
        summary.add(&report, chunks);
        on_event(Event::File(&report));
    }
    Ok(())
}

fn applied_report(applied: &Applied, row_errors: &[RowError]) -> FileReport {
    let written = applied.added + applied.updated;
    let status = if written == 0 && applied.removed == 0 {
        FileStatus::Unchanged
    } else if applied.updated > 0 || applied.removed > 0 {
        FileStatus::Updated
    } else {
        FileStatus::Added
    };
    let mut problems: Vec<Problem> = row_errors
        .iter()
        .map(|e| Problem {
            source: applied.source.clone(),
            line: Some(e.line),
            document: None,
            error: e.message.clone(),
            remedy: e.remedy.clone(),
        })
        .collect();
    problems.extend(applied.conflicts.iter().map(|(id, other)| Problem {
        source: applied.source.clone(),
        line: None,
        document: Some(id.clone()),
        error: format!("document id {id:?} already belongs to {other}"),
        remedy: None,
    }));
    FileReport {
        source: applied.source.clone(),
        status,
        counts: Some(DocumentCounts {
            added: applied.added,
            updated: applied.updated,
            unchanged: applied.unchanged,
            removed: applied.removed,
        }),
        error: None,
        remedy: None,
        errors: Some(problems),
    }
}

fn prune(writer: &mut Writer, on_event: &mut dyn FnMut(Event<'_>), summary: &mut Summary) -> Result<(), Error> {
    let gone: Vec<String> = writer
        .sources()?
        .into_iter()
        .map(|(source, _)| source)
        .filter(|source| !Path::new(source).exists())
        .collect();
    summary.documents_removed += u64::from(writer.remove_sources(&gone)?);
    for source in gone {
        on_event(Event::File(&FileReport::bare(source, FileStatus::Pruned)));
    }
    Ok(())
}

impl FileReport {
    fn bare(source: String, status: FileStatus) -> FileReport {
        FileReport {
            source,
            status,
            counts: None,
            error: None,
            remedy: None,
            errors: None,
        }
    }
}

impl Summary {
    /// Counts a file that went through the store, with the `chunks` it was cut into.
    fn add(&mut self, report: &FileReport, chunks: u64) {
        let counts = report.counts.unwrap_or_default();
        if report.status == FileStatus::Unchanged {
            self.files_unchanged += 1;
        }
        self.documents_added += u64::from(counts.added);
        self.documents_updated += u64::from(counts.updated);
        self.documents_unchanged += u64::from(counts.unchanged);
        self.documents_removed += u64::from(counts.removed);
        if counts.added + counts.updated > 0 {
            self.chunks_written += chunks;
        }
        self.failures.extend(report.errors.iter().flatten().cloned());
    }
}

#[cfg(test)]
mod tests;
