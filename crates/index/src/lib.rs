//! The embedded knowledge base of knowhow.
//!
//! A [`Home`] directory holds collections, each in its namespace:
//! `HOME/collections/NAMESPACE/COLLECTION/` with `store.redb` (the source of
//! truth) and `lexical/` (a tantivy BM25 index derived from it).
//!
//! # Invariants
//! - The store is written first, one transaction per batch of whole
//!   documents; once [`Writer::apply`] returns, the batch is durable
//!   (acknowledged).
//! - Every change to a document is logged in the store under a sequence
//!   number; each tantivy commit records the last sequence number it
//!   contains. Opening a writer replays what the index lacks, so a crash at
//!   any point loses nothing acknowledged.
//! - A document's chunks enter and leave the lexical index in the same tantivy
//!   commit, so a search never sees half a document.
//! - One process writes a collection at a time (redb's file lock); searches
//!   read the last tantivy commit and never wait for a writer.

mod lexical;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use knowhow_core::{Chunk, CollectionRef, Document};
use redb::ReadableDatabase;
use tantivy::IndexWriter;

pub use lexical::{english_analyzer, Hit, ScoredChunk, Snippet};
pub use store::{SourceRecord, StoredDocument};

use lexical::LexicalIndex;

/// Errors of the store and index, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("collection {0} does not exist (create it with `knowhow collections create`, or ingest into it)")]
    NoSuchCollection(CollectionRef),
    #[error("collection {0} already exists")]
    CollectionExists(CollectionRef),
    #[error("collection {0} is busy: another knowhow process is writing to it; try again when it finishes")]
    Busy(CollectionRef),
    #[error("store: {0}")]
    Store(#[from] redb::Error),
    #[error("lexical index: {0}")]
    Lexical(#[from] tantivy::TantivyError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt collection data: {0}")]
    Corrupt(String),
}

macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Store(redb::Error::from(e))
            }
        }
    )*};
}
store_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The directory that holds every namespace and collection.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn collection_dir(&self, c: &CollectionRef) -> PathBuf {
        self.root.join("collections").join(&c.namespace).join(&c.collection)
    }

    pub fn exists(&self, c: &CollectionRef) -> bool {
        self.collection_dir(c).join("store.redb").exists()
    }

    /// Every collection, sorted by namespace then name.
    pub fn list(&self) -> Result<Vec<CollectionRef>, Error> {
        let mut out = Vec::new();
        let base = self.root.join("collections");
        let Ok(namespaces) = std::fs::read_dir(&base) else {
            return Ok(out);
        };
        for ns in namespaces {
            let ns = ns?;
            for coll in std::fs::read_dir(ns.path())? {
                let coll = coll?;
                let (ns_name, coll_name) = (ns.file_name(), coll.file_name());
                if let Ok(c) = CollectionRef::new(&ns_name.to_string_lossy(), &coll_name.to_string_lossy()) {
                    if self.exists(&c) {
                        out.push(c);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Creates an empty collection; an error if it exists.
    pub fn create(&self, c: &CollectionRef) -> Result<(), Error> {
        if self.exists(c) {
            return Err(Error::CollectionExists(c.clone()));
        }
        self.open_writer(c, true)?.finish()
    }

    /// Deletes a collection and everything in it. Refused while a writer
    /// holds it.
    pub fn drop_collection(&self, c: &CollectionRef) -> Result<(), Error> {
        if !self.exists(c) {
            return Err(Error::NoSuchCollection(c.clone()));
        }
        let dir = self.collection_dir(c);
        let writer = self.open_writer(c, false)?;
        // Rename first, so a crash mid-delete leaves no half collection behind.
        let doomed = dir.with_file_name(format!(".dropping-{}-{}", c.collection, std::process::id()));
        std::fs::rename(&dir, &doomed)?;
        drop(writer);
        std::fs::remove_dir_all(&doomed)?;
        Ok(())
    }

    /// Opens a collection for writing, bringing its lexical index up to date
    /// with the store first.
    pub fn open_writer(&self, c: &CollectionRef, create: bool) -> Result<Writer, Error> {
        if !create && !self.exists(c) {
            return Err(Error::NoSuchCollection(c.clone()));
        }
        let dir = self.collection_dir(c);
        std::fs::create_dir_all(&dir)?;
        let db = match redb::Database::create(dir.join("store.redb")) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(Error::Busy(c.clone())),
            Err(e) => return Err(e.into()),
        };
        store::create_tables(&db)?;
        let lexical = LexicalIndex::open_or_create(&dir.join("lexical"))?;
        let index_writer = lexical.writer()?;
        let mut writer = Writer {
            collection: c.clone(),
            db,
            lexical,
            index_writer,
            index_seq: 0,
            last_index_commit: Instant::now(),
            commit_every: Duration::from_secs(1),
        };
        writer.catch_up()?;
        Ok(writer)
    }

    /// Opens a collection for searching. If no writer is active and the
    /// lexical index lags the store (after a crash), it is caught up first.
    pub fn open_reader(&self, c: &CollectionRef) -> Result<Reader, Error> {
        if !self.exists(c) {
            return Err(Error::NoSuchCollection(c.clone()));
        }
        let dir = self.collection_dir(c);
        let lexical_dir = dir.join("lexical");
        let behind = match self.open_read_only(c) {
            Ok(db) => {
                let indexed = LexicalIndex::open(&lexical_dir)
                    .ok()
                    .map(|l| l.committed_seq())
                    .transpose()?
                    .flatten();
                indexed != Some(store::last_seq(&db)?)
            }
            Err(Error::Busy(_)) => false,
            Err(e) => return Err(e),
        };
        if behind {
            match self.open_writer(c, false) {
                Ok(writer) => writer.finish()?,
                Err(Error::Busy(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Reader {
            lexical: LexicalIndex::open(&lexical_dir)?,
        })
    }

    /// Opens a collection's store read-only, for listing and showing
    /// documents. Refused while a writer holds it.
    pub fn open_catalog(&self, c: &CollectionRef) -> Result<Catalog, Error> {
        if !self.exists(c) {
            return Err(Error::NoSuchCollection(c.clone()));
        }
        let db = self.open_read_only(c)?;
        Ok(Catalog {
            db,
            dir: self.collection_dir(c),
        })
    }

    /// Opens the store read-only. A store left unclean by a crash needs a
    /// repair only a writer can do: then a writer opens it once first.
    fn open_read_only(&self, c: &CollectionRef) -> Result<redb::ReadOnlyDatabase, Error> {
        let path = self.collection_dir(c).join("store.redb");
        match redb::ReadOnlyDatabase::open(&path) {
            Ok(db) => Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::Busy(c.clone())),
            Err(redb::DatabaseError::RepairAborted) => {
                self.open_writer(c, false)?.finish()?;
                match redb::ReadOnlyDatabase::open(&path) {
                    Ok(db) => Ok(db),
                    Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::Busy(c.clone())),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// One source file's new state, handed to [`Writer::apply`].
#[derive(Debug)]
pub struct SourceUpdate {
    pub source: String,
    pub record: SourceRecord,
    /// `None` when the file's bytes are unchanged and only its record (size,
    /// time) needs refreshing.
    pub documents: Option<Vec<(Document, Vec<Chunk>)>>,
}

/// What [`Writer::apply`] did with one source.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub source: String,
    pub added: u32,
    pub updated: u32,
    pub unchanged: u32,
    pub removed: u32,
    /// Documents refused because their id belongs to another source:
    /// (id, the other source).
    pub conflicts: Vec<(String, String)>,
}

/// Exclusive write access to one collection.
pub struct Writer {
    collection: CollectionRef,
    db: redb::Database,
    lexical: LexicalIndex,
    index_writer: IndexWriter,
    /// The last store sequence number added to the index writer.
    index_seq: u64,
    last_index_commit: Instant,
    commit_every: Duration,
}

impl Writer {
    pub fn collection(&self) -> &CollectionRef {
        &self.collection
    }

    /// What the store knows of a source, to decide whether to re-read it.
    pub fn source(&self, source: &str) -> Result<Option<SourceRecord>, Error> {
        let txn = self.db.begin_read()?;
        let sources = txn.open_table(store::SOURCES)?;
        let record = sources.get(source)?;
        record.map(|v| store::decode(v.value(), "source")).transpose()
    }

    pub fn sources(&self) -> Result<Vec<(String, SourceRecord)>, Error> {
        store::list_sources(&self.db)
    }

    /// Applies updates for several sources in one durable transaction, then
    /// feeds the lexical index. When this returns, the batch is acknowledged.
    pub fn apply(&mut self, updates: Vec<SourceUpdate>) -> Result<Vec<Applied>, Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut batch = store::Batch::begin(&self.db)?;
        let mut results = Vec::with_capacity(updates.len());
        let mut written: HashMap<String, (Document, Vec<Chunk>)> = HashMap::new();
        for update in updates {
            let mut applied = Applied {
                source: update.source.clone(),
                ..Applied::default()
            };
            let previous = batch.source(&update.source)?.unwrap_or_default();
            let mut record = update.record;
            let Some(documents) = update.documents else {
                record.document_ids = previous.document_ids;
                applied.unchanged = record.document_ids.len() as u32;
                batch.put_source(&update.source, &record)?;
                results.push(applied);
                continue;
            };
            record.document_ids.clear();
            for (doc, chunks) in documents {
                match batch.document(&doc.id)? {
                    Some(old) if old.document.source != doc.source => {
                        applied.conflicts.push((doc.id.clone(), old.document.source.clone()));
                        continue;
                    }
                    Some(old) if old.document.hash == doc.hash && old.chunk_count as usize == chunks.len() => {
                        applied.unchanged += 1;
                    }
                    old => {
                        let stored = StoredDocument {
                            document: doc,
                            chunk_count: chunks.len() as u32,
                            ingested_at: now,
                        };
                        batch.put_document(&stored, &chunks)?;
                        if old.is_some() {
                            applied.updated += 1;
                        } else {
                            applied.added += 1;
                        }
                        let doc = stored.document;
                        record.document_ids.push(doc.id.clone());
                        written.insert(doc.id.clone(), (doc, chunks));
                        continue;
                    }
                }
                record.document_ids.push(doc.id.clone());
            }
            for gone in previous
                .document_ids
                .iter()
                .filter(|id| !record.document_ids.contains(id))
            {
                if batch.remove_document(gone)? {
                    applied.removed += 1;
                }
            }
            batch.put_source(&update.source, &record)?;
            results.push(applied);
        }
        let changed = std::mem::take(&mut batch.changed);
        let seq = batch.commit()?;
        for id in &changed {
            self.lexical.delete_document(&self.index_writer, id);
            if let Some((doc, chunks)) = written.get(id) {
                self.lexical.add_document(&self.index_writer, doc, chunks)?;
            }
        }
        self.index_seq = seq;
        if self.last_index_commit.elapsed() >= self.commit_every {
            self.commit_index()?;
        }
        Ok(results)
    }

    /// Removes every document of the given sources, and the sources.
    pub fn remove_sources(&mut self, sources: &[String]) -> Result<u32, Error> {
        let mut batch = store::Batch::begin(&self.db)?;
        let mut removed = 0;
        for source in sources {
            if let Some(record) = batch.source(source)? {
                for id in &record.document_ids {
                    removed += u32::from(batch.remove_document(id)?);
                }
                batch.remove_source(source)?;
            }
        }
        self.commit_removals(batch)?;
        Ok(removed)
    }

    /// Removes one document. Its source is marked for re-reading, so
    /// ingesting the source again brings the document back.
    pub fn remove_document(&mut self, id: &str) -> Result<bool, Error> {
        let mut batch = store::Batch::begin(&self.db)?;
        let Some(stored) = batch.document(id)? else {
            return Ok(false);
        };
        batch.remove_document(id)?;
        let source = &stored.document.source;
        if let Some(mut record) = batch.source(source)? {
            record.document_ids.retain(|d| d != id);
            record.file_hash = None;
            batch.put_source(source, &record)?;
        }
        self.commit_removals(batch)?;
        Ok(true)
    }

    fn commit_removals(&mut self, mut batch: store::Batch) -> Result<(), Error> {
        let changed = std::mem::take(&mut batch.changed);
        let seq = batch.commit()?;
        for id in &changed {
            self.lexical.delete_document(&self.index_writer, id);
        }
        self.index_seq = seq;
        self.commit_index()
    }

    /// Replays store changes the lexical index lacks (after a crash), or
    /// rebuilds the index if it never committed or is ahead of the store.
    fn catch_up(&mut self) -> Result<(), Error> {
        let last = store::last_seq(&self.db)?;
        let indexed = self.lexical.committed_seq()?;
        match indexed {
            Some(seq) if seq == last => {}
            Some(seq) if seq < last => {
                let (ids, _) = store::changes_since(&self.db, seq)?;
                for id in ids {
                    self.lexical.delete_document(&self.index_writer, &id);
                    if let Some((stored, chunks)) = store::read_document(&self.db, &id)? {
                        self.lexical
                            .add_document(&self.index_writer, &stored.document, &chunks)?;
                    }
                }
            }
            _ => {
                self.index_writer.delete_all_documents()?;
                for stored in store::list_documents(&self.db)? {
                    if let Some((stored, chunks)) = store::read_document(&self.db, &stored.document.id)? {
                        self.lexical
                            .add_document(&self.index_writer, &stored.document, &chunks)?;
                    }
                }
            }
        }
        self.index_seq = last;
        if indexed != Some(last) {
            self.commit_index()?;
        }
        Ok(())
    }

    fn commit_index(&mut self) -> Result<(), Error> {
        self.lexical.commit(&mut self.index_writer, self.index_seq)?;
        self.last_index_commit = Instant::now();
        Ok(())
    }

    /// Commits the lexical index, trims the change log it now contains, and
    /// waits for background merges.
    pub fn finish(mut self) -> Result<(), Error> {
        self.commit_index()?;
        store::truncate_log(&self.db, self.index_seq)?;
        self.index_writer.wait_merging_threads()?;
        Ok(())
    }

    /// Makes everything applied so far visible to searches now.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.commit_index()
    }
}

/// Read-only search access to one collection.
pub struct Reader {
    lexical: LexicalIndex,
}

impl Reader {
    /// BM25 top `k` chunks with snippets and display fields.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, Error> {
        self.lexical.search(query, k)
    }

    /// BM25 top `k` chunks, ids and scores only (fast; for evaluation).
    pub fn rank(&self, query: &str, k: usize) -> Result<Vec<ScoredChunk>, Error> {
        self.lexical.rank(query, k)
    }

    /// Picks up commits made since the reader opened.
    pub fn refresh(&self) -> Result<(), Error> {
        self.lexical.reload()
    }
}

/// Read-only access to a collection's store.
pub struct Catalog {
    db: redb::ReadOnlyDatabase,
    dir: PathBuf,
}

/// The result of [`Catalog::check`]: every way the store and the index
/// disagree. Empty means consistent.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub documents: u64,
    pub chunks: u64,
    pub problems: Vec<String>,
}

impl Catalog {
    pub fn documents(&self) -> Result<Vec<StoredDocument>, Error> {
        store::list_documents(&self.db)
    }

    pub fn document(&self, id: &str) -> Result<Option<(StoredDocument, Vec<Chunk>)>, Error> {
        store::read_document(&self.db, id)
    }

    pub fn sources(&self) -> Result<Vec<(String, SourceRecord)>, Error> {
        store::list_sources(&self.db)
    }

    /// Verifies that every document has exactly its chunks, in order, that
    /// chunk text equals the document text at its span, and that the lexical
    /// index holds exactly the stored chunks of every document.
    pub fn check(&self) -> Result<CheckReport, Error> {
        let mut report = CheckReport::default();
        let indexed = LexicalIndex::open(&self.dir.join("lexical"))?.chunk_counts()?;
        let mut stored_ids = std::collections::BTreeSet::new();
        for stored in self.documents()? {
            let doc = &stored.document;
            report.documents += 1;
            stored_ids.insert(doc.id.clone());
            let Some((_, chunks)) = self.document(&doc.id)? else {
                report
                    .problems
                    .push(format!("document {} vanished during the check", doc.id));
                continue;
            };
            report.chunks += chunks.len() as u64;
            if chunks.len() != stored.chunk_count as usize {
                report.problems.push(format!(
                    "document {} has {} of its {} chunks",
                    doc.id,
                    chunks.len(),
                    stored.chunk_count
                ));
            }
            for (i, chunk) in chunks.iter().enumerate() {
                if chunk.ordinal as usize != i || doc.text.get(chunk.start..chunk.end) != Some(chunk.text.as_str()) {
                    report
                        .problems
                        .push(format!("document {} chunk {} does not match its text span", doc.id, i));
                }
            }
            let in_index = indexed.get(&doc.id).copied().unwrap_or(0);
            if in_index != stored.chunk_count {
                report.problems.push(format!(
                    "document {} has {} chunks in the lexical index, {} in the store",
                    doc.id, in_index, stored.chunk_count
                ));
            }
        }
        for (id, count) in &indexed {
            if !stored_ids.contains(id) {
                report
                    .problems
                    .push(format!("lexical index holds {count} chunks of unknown document {id}"));
            }
        }
        Ok(report)
    }
}
