//! The redb store: the transactional source of truth of one collection.
//!
//! Tables:
//! - `documents`: id → [`StoredDocument`] (JSON)
//! - `chunks`: (id, ordinal) → [`Chunk`] (JSON)
//! - `sources`: source path → [`SourceRecord`] (JSON)
//! - `oplog`: sequence number → id of the document changed (added, replaced
//!   or removed) at that step; derived indexes replay it to catch up
//! - `meta`: `next_seq`
//!
//! A document and all its chunks are written in one transaction, so no
//! reader can ever see half a document.

use knowhow_core::{Chunk, Document};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::Error;

pub(crate) const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");
pub(crate) const CHUNKS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("chunks");
pub(crate) const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources");
pub(crate) const OPLOG: TableDefinition<u64, &str> = TableDefinition::new("oplog");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

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
    txn.commit()?;
    Ok(())
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

    /// Writes a document and its chunks, replacing any previous version.
    pub(crate) fn put_document(&mut self, stored: &StoredDocument, chunks: &[Chunk]) -> Result<(), Error> {
        let id = stored.document.id.as_str();
        self.delete_chunks(id)?;
        {
            let mut table = self.txn.open_table(CHUNKS)?;
            for chunk in chunks {
                table.insert((id, chunk.ordinal), encode(chunk).as_slice())?;
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

    fn delete_chunks(&mut self, id: &str) -> Result<(), Error> {
        let mut table = self.txn.open_table(CHUNKS)?;
        table.retain_in((id, 0u32)..=(id, u32::MAX), |_, _| false)?;
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

/// Drops log entries up to `seq`, once every derived index contains them.
pub(crate) fn truncate_log(db: &redb::Database, seq: u64) -> Result<(), Error> {
    let txn = db.begin_write()?;
    txn.open_table(OPLOG)?.retain_in(..=seq, |_, _| false)?;
    txn.commit()?;
    Ok(())
}
