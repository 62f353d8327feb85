//! The parallel phase of a batch: for one file, decide whether it changed, and if so read, load and chunk it.

use std::path::Path;
use std::time::UNIX_EPOCH;

use knowhow_index::{DocumentUpdate, SourceRecord, SourceUpdate};
use knowhow_ingest::chunk::{chunk_document, ChunkOptions};
use knowhow_ingest::load::{load_bytes, Format, LoadOptions, Remedy, RowError};
use rayon::prelude::*;

/// One file after the parallel phase.
pub(super) enum Prepared {
    /// Size, time and settings unchanged: not even read.
    Untouched { source: String },
    Update {
        update: SourceUpdate,
        row_errors: Vec<RowError>,
        chunks: u64,
    },
    Failed {
        source: String,
        error: String,
        remedy: Option<Remedy>,
    },
}

pub(super) fn prepare(
    path: &Path,
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
        remedy: None,
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
    // Touched but byte-identical: the store records the new size and time, nothing is parsed.
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
        Err(e) => {
            return Prepared::Failed {
                source,
                error: e.message,
                remedy: e.remedy,
            }
        }
    };
    // A row file with bad rows is read again next time, so that its errors are reported again.
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
