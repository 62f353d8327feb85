//! The redb store: the transactional source of truth of one collection.
//!
//! Tables:
//! - `documents`: id → [`StoredDocument`] (JSON)
//! - `chunks`: (id, ordinal) → [`Chunk`] (JSON)
//! - `sources`: source path → [`SourceRecord`] (JSON)
//! - `vectors`: (id, ordinal) → the chunk's embedding, little-endian f32;
//!   present for every chunk exactly when the collection pins a model
//! - `reembed_vectors`: (id, ordinal) → the chunk's embedding by the model a
//!   re-embedding migrates to, staged until the migration commits
//! - `model`: `pinned` → the [`ModelPin`] of `vectors`; `reembed` → the pin
//!   of `reembed_vectors` (JSON)
//! - `oplog`: sequence number → id of the document changed (added, replaced
//!   or removed) at that step; derived indexes replay it to catch up
//! - `meta`: `next_seq`; `log_trimmed`, the sequence number up to which the
//!   oplog has been dropped (a derived index stamped below it must rebuild)
//!
//! A document, all its chunks and all their vectors are written in one
//! transaction, so no reader can ever see half a document.

use knowhow_core::{Chunk, ChunkId, Document};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{Error, ModelPin};

pub(crate) const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");
pub(crate) const CHUNKS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("chunks");
pub(crate) const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources");
pub(crate) const OPLOG: TableDefinition<u64, &str> = TableDefinition::new("oplog");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const VECTORS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("vectors");
pub(crate) const REEMBED_VECTORS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("reembed_vectors");
pub(crate) const MODEL: TableDefinition<&str, &[u8]> = TableDefinition::new("model");

/// Keys of the `model` table.
pub(crate) const PINNED: &str = "pinned";
pub(crate) const REEMBED: &str = "reembed";

/// A document as stored: the document itself plus bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDocument {
    pub document: Document,
    pub chunk_count: u32,
    /// Unix seconds of the ingest that wrote this version.
    pub ingested_at: u64,
}

/// What the store remembers of a source file, to skip it when unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Size and modification time (ns since the epoch) when last ingested:
    /// when both match, the file is not even read again.
    pub bytes: u64,
    pub modified_ns: i64,
    /// blake3 of the file's bytes; `None` when some of its rows failed, so
    /// that the next run tries (and reports) them again.
    pub file_hash: Option<String>,
    /// Fingerprint of the loader and chunker settings used: changing them
    /// re-processes the file.
    pub settings: String,
    pub document_ids: Vec<String>,
}

/// The key of a chunk in the chunk and vector tables: a [`ChunkId`] as a
/// tuple, which redb orders (and ranges over) by document id, then ordinal.
fn key(id: &ChunkId) -> (&str, u32) {
    (&id.document_id, id.ordinal)
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records serialize to JSON")
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("unreadable {what} record: {e}")))
}

/// Creates every table, so read-only opens never meet a missing one.
pub(crate) fn create_tables(db: &redb::Database) -> Result<(), Error> {
    let txn = db.begin_write()?;
    txn.open_table(DOCUMENTS)?;
    txn.open_table(CHUNKS)?;
    txn.open_table(SOURCES)?;
    txn.open_table(OPLOG)?;
    txn.open_table(META)?;
    txn.open_table(VECTORS)?;
    txn.open_table(REEMBED_VECTORS)?;
    txn.open_table(MODEL)?;
    txn.commit()?;
    Ok(())
}

/// A vector as stored: its f32 values, little-endian.
pub(crate) fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn decode_vector(bytes: &[u8]) -> Result<Vec<f32>, Error> {
    let values = bytes.chunks_exact(4);
    if !values.remainder().is_empty() {
        return Err(Error::Corrupt(format!(
            "a stored vector has {} bytes, not a multiple of 4",
            bytes.len()
        )));
    }
    Ok(values.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// The model pin stored under `key` of the `model` table.
pub(crate) fn model_pin(db: &impl ReadableDatabase, key: &str) -> Result<Option<ModelPin>, Error> {
    let txn = db.begin_read()?;
    let model = txn.open_table(MODEL)?;
    let pin = model.get(key)?;
    pin.map(|v| decode(v.value(), "model pin")).transpose()
}

/// A document's bookkeeping and, in ordinal order, its chunks' ordinals and
/// vectors: what the vector file needs.
pub(crate) type DocumentVectors = (StoredDocument, Vec<u32>, Vec<Vec<f32>>);

pub(crate) fn read_document_vectors(db: &impl ReadableDatabase, id: &str) -> Result<Option<DocumentVectors>, Error> {
    let txn = db.begin_read()?;
    let documents = txn.open_table(DOCUMENTS)?;
    let Some(stored) = documents.get(id)? else {
        return Ok(None);
    };
    let stored = decode(stored.value(), "document")?;
    let (ordinals, vectors) = vectors_of(&txn.open_table(VECTORS)?, id)?;
    Ok(Some((stored, ordinals, vectors)))
}

/// Calls `f` with every document that has vectors, in id order, from one
/// consistent snapshot of the store.
pub(crate) fn for_each_document_vectors(
    db: &impl ReadableDatabase,
    mut f: impl FnMut(DocumentVectors) -> Result<(), Error>,
) -> Result<(), Error> {
    let txn = db.begin_read()?;
    let documents = txn.open_table(DOCUMENTS)?;
    let vectors = txn.open_table(VECTORS)?;
    for entry in documents.iter()? {
        let (id, stored) = entry?;
        let (ordinals, vecs) = vectors_of(&vectors, id.value())?;
        if !ordinals.is_empty() {
            f((decode(stored.value(), "document")?, ordinals, vecs))?;
        }
    }
    Ok(())
}

fn vectors_of(
    table: &impl ReadableTable<(&'static str, u32), &'static [u8]>,
    id: &str,
) -> Result<(Vec<u32>, Vec<Vec<f32>>), Error> {
    let mut ordinals = Vec::new();
    let mut vectors = Vec::new();
    for entry in table.range((id, 0u32)..=(id, u32::MAX))? {
        let (key, value) = entry?;
        ordinals.push(key.value().1);
        vectors.push(decode_vector(value.value())?);
    }
    Ok((ordinals, vectors))
}

/// Every stored vector of a document, by ordinal (for integrity checks).
pub(crate) fn read_vectors(db: &impl ReadableDatabase, id: &str) -> Result<Vec<(u32, Vec<f32>)>, Error> {
    let txn = db.begin_read()?;
    let (ordinals, vectors) = vectors_of(&txn.open_table(VECTORS)?, id)?;
    Ok(ordinals.into_iter().zip(vectors).collect())
}

/// Read access shared by the writer and read-only handles.
pub(crate) fn read_document(
    db: &impl ReadableDatabase,
    id: &str,
) -> Result<Option<(StoredDocument, Vec<Chunk>)>, Error> {
    let txn = db.begin_read()?;
    let documents = txn.open_table(DOCUMENTS)?;
    let Some(stored) = documents.get(id)? else {
        return Ok(None);
    };
    let stored: StoredDocument = decode(stored.value(), "document")?;
    let chunks = txn.open_table(CHUNKS)?;
    let mut out = Vec::with_capacity(stored.chunk_count as usize);
    for entry in chunks.range((id, 0u32)..=(id, u32::MAX))? {
        let (_, value) = entry?;
        out.push(decode(value.value(), "chunk")?);
    }
    Ok(Some((stored, out)))
}

pub(crate) fn stored_document(db: &impl ReadableDatabase, id: &str) -> Result<Option<StoredDocument>, Error> {
    let txn = db.begin_read()?;
    let documents = txn.open_table(DOCUMENTS)?;
    let stored = documents.get(id)?;
    stored.map(|v| decode(v.value(), "document")).transpose()
}

pub(crate) fn list_documents(db: &impl ReadableDatabase) -> Result<Vec<StoredDocument>, Error> {
    let txn = db.begin_read()?;
    let documents = txn.open_table(DOCUMENTS)?;
    let mut out = Vec::with_capacity(documents.len()? as usize);
    for entry in documents.iter()? {
        let (_, value) = entry?;
        out.push(decode(value.value(), "document")?);
    }
    Ok(out)
}

pub(crate) fn list_sources(db: &impl ReadableDatabase) -> Result<Vec<(String, SourceRecord)>, Error> {
    let txn = db.begin_read()?;
    let sources = txn.open_table(SOURCES)?;
    let mut out = Vec::new();
    for entry in sources.iter()? {
        let (key, value) = entry?;
        out.push((key.value().to_string(), decode(value.value(), "source")?));
    }
    Ok(out)
}

/// A write transaction with the operations the collection needs; every
/// change to a document is logged under a new sequence number.
pub(crate) struct Batch {
    txn: redb::WriteTransaction,
    next_seq: u64,
    pub(crate) changed: Vec<String>,
}

impl Batch {
    pub(crate) fn begin(db: &redb::Database) -> Result<Batch, Error> {
        let txn = db.begin_write()?;
        let next_seq = txn.open_table(META)?.get("next_seq")?.map_or(1, |v| v.value());
        Ok(Batch {
            txn,
            next_seq,
            changed: Vec::new(),
        })
    }

    pub(crate) fn document(&self, id: &str) -> Result<Option<StoredDocument>, Error> {
        let documents = self.txn.open_table(DOCUMENTS)?;
        let stored = documents.get(id)?;
        stored.map(|v| decode(v.value(), "document")).transpose()
    }

    pub(crate) fn source(&self, source: &str) -> Result<Option<SourceRecord>, Error> {
        let sources = self.txn.open_table(SOURCES)?;
        let record = sources.get(source)?;
        record.map(|v| decode(v.value(), "source")).transpose()
    }

    pub(crate) fn put_source(&mut self, source: &str, record: &SourceRecord) -> Result<(), Error> {
        self.txn
            .open_table(SOURCES)?
            .insert(source, encode(record).as_slice())?;
        Ok(())
    }

    pub(crate) fn remove_source(&mut self, source: &str) -> Result<(), Error> {
        self.txn.open_table(SOURCES)?.remove(source)?;
        Ok(())
    }

    /// Writes a document, its chunks and their vectors (one per chunk, in
    /// order, already validated), replacing any previous version.
    pub(crate) fn put_document(
        &mut self,
        stored: &StoredDocument,
        chunks: &[Chunk],
        vectors: Option<&[Vec<f32>]>,
    ) -> Result<(), Error> {
        let id = stored.document.id.as_str();
        self.delete_chunks(id)?;
        {
            let mut table = self.txn.open_table(CHUNKS)?;
            for chunk in chunks {
                table.insert((id, chunk.id.ordinal), encode(chunk).as_slice())?;
            }
        }
        if let Some(vectors) = vectors {
            let mut table = self.txn.open_table(VECTORS)?;
            for (chunk, vector) in chunks.iter().zip(vectors) {
                table.insert((id, chunk.id.ordinal), encode_vector(vector).as_slice())?;
            }
        }
        self.txn.open_table(DOCUMENTS)?.insert(id, encode(stored).as_slice())?;
        self.log(id)
    }

    /// Removes a document and its chunks; `false` if there was none.
    pub(crate) fn remove_document(&mut self, id: &str) -> Result<bool, Error> {
        let existed = self.txn.open_table(DOCUMENTS)?.remove(id)?.is_some();
        if existed {
            self.delete_chunks(id)?;
            self.log(id)?;
        }
        Ok(existed)
    }

    /// Deletes a document's chunks, their vectors, and any vectors staged for
    /// them by a re-embedding (they were computed from the old text).
    fn delete_chunks(&mut self, id: &str) -> Result<(), Error> {
        let range = (id, 0u32)..=(id, u32::MAX);
        self.txn.open_table(CHUNKS)?.retain_in(range.clone(), |_, _| false)?;
        self.txn.open_table(VECTORS)?.retain_in(range.clone(), |_, _| false)?;
        self.txn.open_table(REEMBED_VECTORS)?.retain_in(range, |_, _| false)?;
        Ok(())
    }

    pub(crate) fn model_pin(&self, key: &str) -> Result<Option<ModelPin>, Error> {
        let model = self.txn.open_table(MODEL)?;
        let pin = model.get(key)?;
        pin.map(|v| decode(v.value(), "model pin")).transpose()
    }

    pub(crate) fn set_model_pin(&mut self, key: &str, pin: Option<&ModelPin>) -> Result<(), Error> {
        let mut model = self.txn.open_table(MODEL)?;
        match pin {
            Some(pin) => model.insert(key, encode(pin).as_slice())?,
            None => model.remove(key)?,
        };
        Ok(())
    }

    pub(crate) fn document_count(&self) -> Result<u64, Error> {
        Ok(self.txn.open_table(DOCUMENTS)?.len()?)
    }

    /// The stored text of a chunk, if it exists.
    pub(crate) fn chunk_text(&self, id: &ChunkId) -> Result<Option<String>, Error> {
        let chunks = self.txn.open_table(CHUNKS)?;
        let chunk = chunks.get(key(id))?;
        chunk
            .map(|v| decode::<Chunk>(v.value(), "chunk").map(|c| c.text))
            .transpose()
    }

    pub(crate) fn stage_vector(&mut self, id: &ChunkId, vector: &[f32]) -> Result<(), Error> {
        self.txn
            .open_table(REEMBED_VECTORS)?
            .insert(key(id), encode_vector(vector).as_slice())?;
        Ok(())
    }

    pub(crate) fn clear_staged_vectors(&mut self) -> Result<(), Error> {
        self.txn.open_table(REEMBED_VECTORS)?.retain(|_, _| false)?;
        Ok(())
    }

    /// (chunks, staged vectors) counts.
    pub(crate) fn reembed_counts(&self) -> Result<(u64, u64), Error> {
        Ok((
            self.txn.open_table(CHUNKS)?.len()?,
            self.txn.open_table(REEMBED_VECTORS)?.len()?,
        ))
    }

    /// Replaces every vector by its staged one and empties the staging table.
    pub(crate) fn swap_in_staged_vectors(&mut self) -> Result<(), Error> {
        let mut vectors = self.txn.open_table(VECTORS)?;
        vectors.retain(|_, _| false)?;
        let mut staged = self.txn.open_table(REEMBED_VECTORS)?;
        for entry in staged.iter()? {
            let (key, value) = entry?;
            vectors.insert(key.value(), value.value())?;
        }
        staged.retain(|_, _| false)?;
        Ok(())
    }

    fn log(&mut self, id: &str) -> Result<(), Error> {
        self.txn.open_table(OPLOG)?.insert(self.next_seq, id)?;
        self.next_seq += 1;
        self.changed.push(id.to_string());
        Ok(())
    }

    /// Commits durably; returns the last sequence number used.
    pub(crate) fn commit(self) -> Result<u64, Error> {
        self.txn.open_table(META)?.insert("next_seq", self.next_seq)?;
        self.txn.commit()?;
        Ok(self.next_seq - 1)
    }
}

/// Chunks in key order after `after` (from the first when `None`) that have
/// no vector staged by a re-embedding yet, at most `limit`; and whether the
/// scan reached the last chunk.
pub(crate) fn unstaged_chunks(
    db: &impl ReadableDatabase,
    after: Option<&ChunkId>,
    limit: usize,
) -> Result<(Vec<Chunk>, bool), Error> {
    use std::ops::Bound;
    let txn = db.begin_read()?;
    let chunks = txn.open_table(CHUNKS)?;
    let staged = txn.open_table(REEMBED_VECTORS)?;
    let range = match after {
        Some(id) => chunks.range::<(&str, u32)>((Bound::Excluded(key(id)), Bound::Unbounded))?,
        None => chunks.range::<(&str, u32)>(..)?,
    };
    let mut out = Vec::new();
    for entry in range {
        if out.len() == limit {
            return Ok((out, false));
        }
        let (key, value) = entry?;
        if staged.get(key.value())?.is_none() {
            out.push(decode(value.value(), "chunk")?);
        }
    }
    Ok((out, true))
}

/// Document ids changed after `seq`, in log order, without repeats; and the
/// last sequence number in the log.
pub(crate) fn changes_since(db: &redb::Database, seq: u64) -> Result<(Vec<String>, u64), Error> {
    let txn = db.begin_read()?;
    let oplog = txn.open_table(OPLOG)?;
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::new();
    let mut last = seq;
    for entry in oplog.range(seq + 1..)? {
        let (key, id) = entry?;
        last = key.value();
        if seen.insert(id.value().to_string()) {
            ids.push(id.value().to_string());
        }
    }
    Ok((ids, last))
}

/// The last sequence number ever used (0 for a new store).
pub(crate) fn last_seq(db: &impl ReadableDatabase) -> Result<u64, Error> {
    let txn = db.begin_read()?;
    let next = txn.open_table(META)?.get("next_seq")?.map_or(1, |v| v.value());
    Ok(next - 1)
}

/// The sequence number up to which the log has been dropped (0: nothing).
pub(crate) fn log_trimmed(db: &impl ReadableDatabase) -> Result<u64, Error> {
    let txn = db.begin_read()?;
    let trimmed = txn.open_table(META)?.get("log_trimmed")?.map_or(0, |v| v.value());
    Ok(trimmed)
}

/// Drops log entries up to `seq`, once every derived index contains them,
/// and records how far the log now reaches back.
pub(crate) fn truncate_log(db: &redb::Database, seq: u64) -> Result<(), Error> {
    let txn = db.begin_write()?;
    txn.open_table(OPLOG)?.retain_in(..=seq, |_, _| false)?;
    {
        let mut meta = txn.open_table(META)?;
        let trimmed = meta.get("log_trimmed")?.map_or(0, |v| v.value());
        meta.insert("log_trimmed", trimmed.max(seq))?;
    }
    txn.commit()?;
    Ok(())
}
