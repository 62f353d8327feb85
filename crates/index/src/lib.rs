//! The embedded knowledge base of knowhow.
//!
//! A [`Home`] directory holds collections, each in its namespace:
//! `HOME/collections/NAMESPACE/COLLECTION/` with `store.redb` (the source of
//! truth), and derived from it `lexical/` (a tantivy BM25 index) and
//! `vectors/` (a flat file of chunk vectors for exact dense search).
//!
//! # Invariants
//! - The store is written first, one transaction per batch of whole
//!   documents with their chunks and vectors; once [`Writer::apply`] returns,
//!   the batch is durable (acknowledged).
//! - Every change to a document is logged in the store under a sequence
//!   number; each tantivy commit and each vector file commit records the last
//!   sequence number it contains. Opening a writer replays what either lacks,
//!   so a crash at any point loses nothing acknowledged. The log is trimmed
//!   only up to a number both have made durable.
//! - A document's chunks enter and leave each derived index in one commit, so
//!   a search never sees half a document.
//! - A collection with vectors pins the model that made them ([`ModelPin`]);
//!   vectors and queries of another model are refused.
//! - One process writes a collection at a time (redb's file lock); searches
//!   read the last commits and never wait for a writer.

mod lexical;
mod store;
mod vectors;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use knowhow_core::{Chunk, CollectionRef, Document};
use redb::ReadableDatabase;
use tantivy::IndexWriter;

pub use lexical::{analyze, english_analyzer, Hit, ScoredChunk, Snippet, SourceChunk};
pub use store::{SourceRecord, StoredDocument};
pub use vectors::{Filter, ModelPin};

use lexical::LexicalIndex;
use vectors::{VectorSnapshot, VectorWriter};

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
    #[error(
        "collection {collection} is embedded with {pinned}, not {given}: use {} with it, \
         or migrate it with `knowhow reembed --model {}`",
        .pinned.id,
        .given.id
    )]
    ModelMismatch {
        collection: CollectionRef,
        pinned: Box<ModelPin>,
        given: Box<ModelPin>,
    },
    #[error(
        "collection {0} has no embedding model, so it has no vectors to search: ingest into it with an \
         embedding model, or embed it with `knowhow reembed --model MODEL`"
    )]
    NoModel(CollectionRef),
    #[error(
        "collection {collection} holds {documents} documents without vectors, so it cannot take model {} \
         by ingesting: embed them all with `knowhow reembed --model {}`",
        .model.id,
        .model.id
    )]
    Unembedded {
        collection: CollectionRef,
        documents: u64,
        model: Box<ModelPin>,
    },
    #[error("invalid model pin: {0}")]
    InvalidModelPin(String),
    #[error("vectors of document {document}: {problem}")]
    InvalidVectors { document: String, problem: String },
    #[error("query vector for collection {collection}: {problem}")]
    InvalidQuery { collection: CollectionRef, problem: String },
    #[error(
        "collection {0} has no vector file yet: it is built when the ingest running now finishes; \
         try again then"
    )]
    NoVectorFile(CollectionRef),
    #[error("re-embedding collection {collection}: {problem}")]
    Reembed { collection: CollectionRef, problem: String },
}

impl Error {
    fn model_mismatch(collection: &CollectionRef, pinned: &ModelPin, given: &ModelPin) -> Error {
        Error::ModelMismatch {
            collection: collection.clone(),
            pinned: Box::new(pinned.clone()),
            given: Box::new(given.clone()),
        }
    }
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

    /// Whether the collection exists: its store file has been created.
    ///
    /// A store file that is still empty does not count: a writer is creating
    /// it right now (or was killed doing so, and the next writer finishes the
    /// job), and redb refuses to open an empty file read-only.
    pub fn exists(&self, c: &CollectionRef) -> bool {
        std::fs::metadata(self.collection_dir(c).join("store.redb")).is_ok_and(|m| m.len() > 0)
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

    /// Opens a collection for writing, bringing its lexical index and vector
    /// file up to date with the store first.
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
        // A writer killed mid-commit leaves files its commit never named (a
        // delete file, say); the next commit may want the same name and fail:
        // remove every file the last commit does not use.
        index_writer.garbage_collect_files().wait()?;
        let mut writer = Writer {
            collection: c.clone(),
            pin: store::model_pin(&db, store::PINNED)?,
            db,
            lexical,
            index_writer,
            vectors: VectorWriter::open(&dir.join("vectors"))?,
            index_seq: 0,
            last_index_commit: Instant::now(),
            commit_every: Duration::from_secs(1),
            reembed_cursor: None,
        };
        writer.catch_up()?;
        Ok(writer)
    }

    /// Opens a collection for searching. If no writer is active and the
    /// lexical index or the vector file lags the store (after a crash), it is
    /// caught up first.
    pub fn open_reader(&self, c: &CollectionRef) -> Result<Reader, Error> {
        if !self.exists(c) {
            return Err(Error::NoSuchCollection(c.clone()));
        }
        let dir = self.collection_dir(c);
        let lexical_dir = dir.join("lexical");
        let vectors_dir = dir.join("vectors");
        let behind = match self.open_read_only(c) {
            Ok(db) => {
                let indexed = LexicalIndex::open(&lexical_dir)
                    .ok()
                    .map(|l| l.committed_seq())
                    .transpose()?
                    .flatten();
                let last = store::last_seq(&db)?;
                let pin = store::model_pin(&db, store::PINNED)?;
                indexed != Some(last) || vectors::stamp(&vectors_dir) != Some((last, pin))
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
            collection: c.clone(),
            lexical: LexicalIndex::open(&lexical_dir)?,
            vectors_dir,
            vectors: Mutex::new(None),
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
    pub documents: Option<Vec<DocumentUpdate>>,
}

/// A document to write, with its chunks and their vectors.
#[derive(Debug)]
pub struct DocumentUpdate {
    pub document: Document,
    pub chunks: Vec<Chunk>,
    /// One vector per chunk, in chunk order: required exactly when the
    /// collection pins a model ([`Writer::pin_model`]), of its dimension.
    pub vectors: Option<Vec<Vec<f32>>>,
}

/// A chunk to embed again during a re-embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkText {
    pub document_id: String,
    pub ordinal: u32,
    pub text: String,
}

/// How far a re-embedding is: chunks in the collection, and how many of them
/// already have a vector of the new model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReembedProgress {
    pub chunks: u64,
    pub staged: u64,
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
    /// The model pinned in the store.
    pin: Option<ModelPin>,
    lexical: LexicalIndex,
    index_writer: IndexWriter,
    vectors: VectorWriter,
    /// The last store sequence number added to the index writer and the
    /// vector file.
    index_seq: u64,
    last_index_commit: Instant,
    commit_every: Duration,
    /// Where [`Writer::reembed_todo`] goes on from.
    reembed_cursor: Option<(String, u32)>,
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

    /// A document as stored: when its hash and chunk count equal those of a
    /// new version, [`Writer::apply`] leaves it as it is, so its chunks need
    /// no embedding.
    pub fn stored_document(&self, id: &str) -> Result<Option<StoredDocument>, Error> {
        store::stored_document(&self.db, id)
    }

    /// Applies updates for several sources in one durable transaction, then
    /// feeds the lexical index and the vector file. When this returns, the
    /// batch is acknowledged.
    ///
    /// Every document written must come with vectors exactly when the
    /// collection pins a model, one per chunk, of its dimension, finite:
    /// otherwise nothing of the batch is written and the error names the
    /// document. A document left unchanged (see [`Writer::stored_document`])
    /// needs none: its stored vectors stay.
    pub fn apply(&mut self, updates: Vec<SourceUpdate>) -> Result<Vec<Applied>, Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut batch = store::Batch::begin(&self.db)?;
        let mut results = Vec::with_capacity(updates.len());
        let mut written: HashMap<String, DocumentUpdate> = HashMap::new();
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
            for update in documents {
                let doc = &update.document;
                match batch.document(&doc.id)? {
                    Some(old) if old.document.source != doc.source => {
                        applied.conflicts.push((doc.id.clone(), old.document.source.clone()));
                        continue;
                    }
                    Some(old) if old.document.hash == doc.hash && old.chunk_count as usize == update.chunks.len() => {
                        applied.unchanged += 1;
                    }
                    old => {
                        // An error drops the uncommitted transaction: nothing
                        // of the batch is written.
                        vectors::validate(
                            self.pin.as_ref(),
                            &doc.id,
                            update.chunks.len(),
                            update.vectors.as_deref(),
                        )?;
                        let stored = StoredDocument {
                            document: update.document,
                            chunk_count: update.chunks.len() as u32,
                            ingested_at: now,
                        };
                        batch.put_document(&stored, &update.chunks, update.vectors.as_deref())?;
                        if old.is_some() {
                            applied.updated += 1;
                        } else {
                            applied.added += 1;
                        }
                        let id = stored.document.id.clone();
                        record.document_ids.push(id.clone());
                        written.insert(
                            id,
                            DocumentUpdate {
                                document: stored.document,
                                ..update
                            },
                        );
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
            self.vectors.remove(id)?;
            if let Some(update) = written.get(id) {
                self.lexical
                    .add_document(&self.index_writer, &update.document, &update.chunks)?;
                if let Some(vectors) = &update.vectors {
                    let ordinals = update.chunks.iter().map(|c| c.ordinal).collect();
                    self.vectors.put(id, &update.document.metadata, ordinals, vectors)?;
                }
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
            self.vectors.remove(id)?;
        }
        self.index_seq = seq;
        self.commit_index()
    }

    /// Replays store changes the lexical index and the vector file lack
    /// (after a crash), or rebuilds either if it never committed, is ahead of
    /// the store, predates the trimmed part of the change log, or (vectors)
    /// was made with another model pin.
    fn catch_up(&mut self) -> Result<(), Error> {
        let last = store::last_seq(&self.db)?;
        let trimmed = store::log_trimmed(&self.db)?;
        let indexed = self.lexical.committed_seq()?;
        match indexed {
            Some(seq) if seq == last => {}
            Some(seq) if seq < last && seq >= trimmed => {
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
        self.catch_up_vectors(last, trimmed)?;
        self.index_seq = last;
        if indexed != Some(last) {
            self.commit_index()?;
        }
        self.vectors.commit(last)
    }

    fn catch_up_vectors(&mut self, last: u64, trimmed: u64) -> Result<(), Error> {
        match self.vectors.stamp() {
            Some((seq, pin)) if pin == self.pin.as_ref() && seq == last => Ok(()),
            Some((seq, pin)) if pin == self.pin.as_ref() && seq < last && seq >= trimmed => {
                let (ids, _) = store::changes_since(&self.db, seq)?;
                for id in ids {
                    self.vectors.remove(&id)?;
                    if let Some((stored, ordinals, vectors)) = store::read_document_vectors(&self.db, &id)? {
                        if !ordinals.is_empty() {
                            self.vectors.put(&id, &stored.document.metadata, ordinals, &vectors)?;
                        }
                    }
                }
                Ok(())
            }
            _ => self.rebuild_vectors(),
        }
    }

    /// Writes the vector file anew from the store (committed by the caller).
    fn rebuild_vectors(&mut self) -> Result<(), Error> {
        self.vectors.reset(self.pin.clone())?;
        if self.pin.is_some() {
            store::for_each_document_vectors(&self.db, |(stored, ordinals, vectors)| {
                let doc = &stored.document;
                self.vectors.put(&doc.id, &doc.metadata, ordinals, &vectors)
            })?;
        }
        Ok(())
    }

    /// Commits the lexical index and the vector file: both then contain
    /// every change up to `index_seq`.
    fn commit_index(&mut self) -> Result<(), Error> {
        self.lexical.commit(&mut self.index_writer, self.index_seq)?;
        self.vectors.commit(self.index_seq)?;
        self.last_index_commit = Instant::now();
        Ok(())
    }

    /// The model this collection's vectors come from, if it pins one.
    pub fn model_pin(&self) -> Option<&ModelPin> {
        self.pin.as_ref()
    }

    /// Pins the collection to `model`, so that [`Writer::apply`] takes (and
    /// requires) its vectors. Nothing to do when it is pinned to `model`
    /// already. Refused when it is pinned to another model, or holds
    /// documents without vectors: both need a re-embedding
    /// ([`Writer::start_reembed`]).
    pub fn pin_model(&mut self, model: &ModelPin) -> Result<(), Error> {
        model.validate()?;
        match &self.pin {
            Some(pinned) if pinned == model => return Ok(()),
            Some(pinned) => return Err(Error::model_mismatch(&self.collection, pinned, model)),
            None => {}
        }
        let mut batch = store::Batch::begin(&self.db)?;
        let documents = batch.document_count()?;
        if documents > 0 {
            return Err(Error::Unembedded {
                collection: self.collection.clone(),
                documents,
                model: Box::new(model.clone()),
            });
        }
        batch.set_model_pin(store::PINNED, Some(model))?;
        batch.commit()?;
        self.pin = Some(model.clone());
        self.rebuild_vectors()?;
        self.vectors.commit(self.index_seq)
    }

    /// The model a re-embedding started and not yet finished moves to.
    pub fn reembed_target(&self) -> Result<Option<ModelPin>, Error> {
        store::model_pin(&self.db, store::REEMBED)
    }

    /// Starts re-embedding every chunk with `model`, or resumes the one
    /// already started with it (after a crash or kill). Until
    /// [`Writer::finish_reembed`] commits, the old pin and vectors stay in
    /// force: ingests and searches go on with the old model.
    ///
    /// The loop: [`Writer::reembed_todo`] gives chunks still lacking a new
    /// vector; embed them; [`Writer::stage_vectors`]; repeat until it gives
    /// none; then [`Writer::finish_reembed`]. Each stage is one durable
    /// transaction, so a re-run redoes none of the staged work.
    pub fn start_reembed(&mut self, model: &ModelPin) -> Result<ReembedProgress, Error> {
        model.validate()?;
        let mut batch = store::Batch::begin(&self.db)?;
        if batch.model_pin(store::REEMBED)?.as_ref() != Some(model) {
            batch.clear_staged_vectors()?;
            batch.set_model_pin(store::REEMBED, Some(model))?;
        }
        let (chunks, staged) = batch.reembed_counts()?;
        batch.commit()?;
        self.reembed_cursor = None;
        Ok(ReembedProgress { chunks, staged })
    }

    fn reembed_target_or_error(&self) -> Result<ModelPin, Error> {
        self.reembed_target()?.ok_or_else(|| Error::Reembed {
            collection: self.collection.clone(),
            problem: "none is in progress: start one with start_reembed".into(),
        })
    }

    /// Up to `limit` chunks that have no vector of the new model yet; empty
    /// when every chunk has one. Chunks changed by an ingest since they were
    /// staged come back again.
    pub fn reembed_todo(&mut self, limit: usize) -> Result<Vec<ChunkText>, Error> {
        self.reembed_target_or_error()?;
        let after = self.reembed_cursor.take();
        let (chunks, at_end) = store::unstaged_chunks(
            &self.db,
            after.as_ref().map(|(id, ordinal)| (id.as_str(), *ordinal)),
            limit.max(1),
        )?;
        if chunks.is_empty() && after.is_some() {
            // One more pass from the start: an ingest may have replaced a
            // chunk behind the cursor (dropping its staged vector).
            return self.reembed_todo(limit);
        }
        if !at_end {
            self.reembed_cursor = chunks.last().map(|c| (c.document_id.clone(), c.ordinal));
        }
        Ok(chunks
            .into_iter()
            .map(|c| ChunkText {
                document_id: c.document_id,
                ordinal: c.ordinal,
                text: c.text,
            })
            .collect())
    }

    /// Stores the new model's vectors of `chunks` (as [`Writer::reembed_todo`]
    /// gave them), in one durable transaction. A chunk whose text has changed
    /// since is skipped: it comes back from `reembed_todo`. Returns how many
    /// were staged.
    pub fn stage_vectors(&mut self, chunks: &[ChunkText], vectors: &[Vec<f32>]) -> Result<usize, Error> {
        let target = self.reembed_target_or_error()?;
        if chunks.len() != vectors.len() {
            return Err(Error::Reembed {
                collection: self.collection.clone(),
                problem: format!("{} vectors for {} chunks", vectors.len(), chunks.len()),
            });
        }
        for (chunk, vector) in chunks.iter().zip(vectors) {
            vectors::check_vector(&target, vector).map_err(|problem| Error::InvalidVectors {
                document: chunk.document_id.clone(),
                problem: format!("chunk {}: {problem}", chunk.ordinal),
            })?;
        }
        let mut batch = store::Batch::begin(&self.db)?;
        let mut staged = 0;
        for (chunk, vector) in chunks.iter().zip(vectors) {
            if batch.chunk_text(&chunk.document_id, chunk.ordinal)?.as_deref() == Some(chunk.text.as_str()) {
                batch.stage_vector(&chunk.document_id, chunk.ordinal, vector)?;
                staged += 1;
            }
        }
        batch.commit()?;
        Ok(staged)
    }

    /// Switches the collection to the new model in one transaction: its
    /// vectors replace the old ones and it becomes the pin. Refused while any
    /// chunk lacks a new vector. The vector file is then rebuilt.
    pub fn finish_reembed(&mut self) -> Result<(), Error> {
        let target = self.reembed_target_or_error()?;
        let mut batch = store::Batch::begin(&self.db)?;
        let (chunks, staged) = batch.reembed_counts()?;
        if staged != chunks {
            return Err(Error::Reembed {
                collection: self.collection.clone(),
                problem: format!(
                    "{} of {chunks} chunks have no vector from {} yet: stage what reembed_todo gives, then finish",
                    chunks - staged,
                    target.id
                ),
            });
        }
        batch.swap_in_staged_vectors()?;
        batch.set_model_pin(store::PINNED, Some(&target))?;
        batch.set_model_pin(store::REEMBED, None)?;
        batch.commit()?;
        self.pin = Some(target);
        self.reembed_cursor = None;
        self.rebuild_vectors()?;
        self.vectors.commit(self.index_seq)
    }

    /// Commits the lexical index and the vector file, trims the change log
    /// they now contain, and waits for background merges.
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
    collection: CollectionRef,
    lexical: LexicalIndex,
    vectors_dir: PathBuf,
    /// The vector file state dense searches use, mapped on the first one.
    vectors: Mutex<Option<Arc<VectorSnapshot>>>,
}

impl Reader {
    /// BM25 top `k` chunks with snippets and display fields.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, Error> {
        self.lexical.search(query, k)
    }

    /// Display hits (source, heading, pages, snippet) for chunks ranked by
    /// another retriever, in the given order; `query` picks the snippet.
    pub fn hits(&self, query: &str, chunks: &[ScoredChunk]) -> Result<Vec<Hit>, Error> {
        self.lexical.hits(query, chunks)
    }

    /// The text of each (document id, ordinal) chunk; `None` where the
    /// chunk is not in the collection (removed since it was ranked).
    pub fn chunk_texts(&self, chunks: &[(String, u32)]) -> Result<Vec<Option<String>>, Error> {
        self.lexical.chunk_texts(chunks)
    }

    /// The full record of each (document id, ordinal) chunk: document title
    /// and source, heading path, pages, byte and character span, text. `None`
    /// where the chunk is not in the collection. Reads only the lexical
    /// index, so it works while an ingest holds the store.
    pub fn chunks(&self, chunks: &[(String, u32)]) -> Result<Vec<Option<SourceChunk>>, Error> {
        self.lexical.chunks(chunks)
    }

    /// (document id, ordinal) of every chunk in the collection, sorted: a
    /// document's chunks in order.
    pub fn chunk_ids(&self) -> Result<Vec<(String, u32)>, Error> {
        self.lexical.chunk_ids()
    }

    /// BM25 top `k` chunks, ids and scores only (fast; for evaluation).
    pub fn rank(&self, query: &str, k: usize) -> Result<Vec<ScoredChunk>, Error> {
        self.lexical.rank(query, k)
    }

    /// The top `k` chunks by the inner product of their vector with `query`
    /// (the cosine similarity, for a normalized model), best first, among the
    /// documents `filter` lets through. An exact scan of every vector. The
    /// query must come from the collection's model: check that with
    /// [`Reader::check_model`].
    pub fn dense(&self, query: &[f32], k: usize, filter: Option<&Filter>) -> Result<Vec<ScoredChunk>, Error> {
        let snapshot = self.vectors()?;
        let pin = snapshot
            .pin
            .as_ref()
            .ok_or_else(|| Error::NoModel(self.collection.clone()))?;
        vectors::check_vector(pin, query).map_err(|problem| Error::InvalidQuery {
            collection: self.collection.clone(),
            problem,
        })?;
        Ok(vectors::search(&snapshot, query, k, filter))
    }

    /// The model the collection's vectors come from, if it pins one.
    pub fn model_pin(&self) -> Result<Option<ModelPin>, Error> {
        Ok(self.vectors()?.pin.clone())
    }

    /// `Ok` when queries embedded with `model` can search this collection.
    pub fn check_model(&self, model: &ModelPin) -> Result<(), Error> {
        match self.model_pin()? {
            Some(pinned) if pinned == *model => Ok(()),
            Some(pinned) => Err(Error::model_mismatch(&self.collection, &pinned, model)),
            None => Err(Error::NoModel(self.collection.clone())),
        }
    }

    fn vectors(&self) -> Result<Arc<VectorSnapshot>, Error> {
        let mut cached = self.vectors.lock().expect("vector snapshot lock poisoned");
        if let Some(snapshot) = &*cached {
            return Ok(snapshot.clone());
        }
        let snapshot =
            VectorSnapshot::load(&self.vectors_dir)?.ok_or_else(|| Error::NoVectorFile(self.collection.clone()))?;
        let snapshot = Arc::new(snapshot);
        *cached = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// Picks up commits made since the reader opened.
    pub fn refresh(&self) -> Result<(), Error> {
        *self.vectors.lock().expect("vector snapshot lock poisoned") = None;
        self.lexical.reload()
    }
}

/// Read-only access to a collection's store.
pub struct Catalog {
    db: redb::ReadOnlyDatabase,
    dir: PathBuf,
}

/// The result of [`Catalog::check`]: every way the store and the derived
/// indexes disagree. Empty means consistent.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub documents: u64,
    pub chunks: u64,
    pub vectors: u64,
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

    /// The model the collection's vectors come from, if it pins one.
    pub fn model_pin(&self) -> Result<Option<ModelPin>, Error> {
        store::model_pin(&self.db, store::PINNED)
    }

    /// The model a re-embedding started and not yet finished moves to.
    pub fn reembed_target(&self) -> Result<Option<ModelPin>, Error> {
        store::model_pin(&self.db, store::REEMBED)
    }

    /// A document's vectors as stored, by chunk ordinal.
    pub fn vectors(&self, document_id: &str) -> Result<Vec<(u32, Vec<f32>)>, Error> {
        store::read_vectors(&self.db, document_id)
    }

    /// Verifies that every document has exactly its chunks, in order, that
    /// chunk text equals the document text at its span, that the lexical
    /// index holds exactly the stored chunks of every document, that every
    /// chunk has a vector of the pinned model (none without a pin), and that
    /// the vector file holds exactly the stored vectors.
    pub fn check(&self) -> Result<CheckReport, Error> {
        let mut report = CheckReport::default();
        let indexed = LexicalIndex::open(&self.dir.join("lexical"))?.chunk_counts()?;
        let pin = self.model_pin()?;
        let vector_file = VectorSnapshot::load(&self.dir.join("vectors"))?;
        let mut in_file: HashMap<&str, &vectors::DocRecord> = HashMap::new();
        match &vector_file {
            None => report.problems.push("the vector file is missing".into()),
            Some(snapshot) => {
                if snapshot.pin != pin {
                    report.problems.push(format!(
                        "the vector file holds vectors of {}, the store of {}",
                        describe_pin(snapshot.pin.as_ref()),
                        describe_pin(pin.as_ref())
                    ));
                }
                in_file = snapshot.docs.iter().map(|d| (d.id.as_str(), d)).collect();
            }
        }
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
            let stored_vectors = self.vectors(&doc.id)?;
            report.vectors += stored_vectors.len() as u64;
            report
                .problems
                .extend(check_vectors(&doc.id, &chunks, &stored_vectors, pin.as_ref()));
            if let Some(snapshot) = &vector_file {
                report.problems.extend(check_vector_file(
                    &doc.id,
                    &stored_vectors,
                    in_file.remove(doc.id.as_str()),
                    snapshot.matrix(),
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
        for id in in_file.keys() {
            report
                .problems
                .push(format!("the vector file holds vectors of unknown document {id}"));
        }
        Ok(report)
    }
}

fn describe_pin(pin: Option<&ModelPin>) -> String {
    pin.map_or_else(|| "no model".to_string(), ModelPin::to_string)
}

/// A document's stored vectors against its chunks and the pinned model.
fn check_vectors(id: &str, chunks: &[Chunk], stored: &[(u32, Vec<f32>)], pin: Option<&ModelPin>) -> Vec<String> {
    let Some(pin) = pin else {
        return if stored.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "document {id} has {} vectors but the collection pins no model",
                stored.len()
            )]
        };
    };
    let ordinals: Vec<u32> = chunks.iter().map(|c| c.ordinal).collect();
    let vector_ordinals: Vec<u32> = stored.iter().map(|(o, _)| *o).collect();
    let mut problems = Vec::new();
    if ordinals != vector_ordinals {
        problems.push(format!(
            "document {id} has vectors for chunks {vector_ordinals:?}, but chunks {ordinals:?}"
        ));
    }
    for (ordinal, vector) in stored {
        if let Err(problem) = vectors::check_vector(pin, vector) {
            problems.push(format!("document {id} chunk {ordinal} vector: {problem}"));
        }
    }
    problems
}

/// A document's stored vectors against its rows in the vector file.
fn check_vector_file(
    id: &str,
    stored: &[(u32, Vec<f32>)],
    record: Option<&vectors::DocRecord>,
    matrix: &[f32],
) -> Option<String> {
    let Some(record) = record else {
        return (!stored.is_empty()).then(|| format!("document {id} has no rows in the vector file"));
    };
    let ordinals: Vec<u32> = stored.iter().map(|(o, _)| *o).collect();
    if record.ordinals != ordinals {
        return Some(format!(
            "document {id} has rows for chunks {:?} in the vector file, vectors for {ordinals:?} in the store",
            record.ordinals
        ));
    }
    let first = record.first_row as usize;
    for (i, (ordinal, vector)) in stored.iter().enumerate() {
        let dimension = vector.len();
        let row = matrix.get((first + i) * dimension..(first + i + 1) * dimension);
        if row != Some(vector.as_slice()) {
            return Some(format!(
                "document {id} chunk {ordinal} differs between the vector file and the store"
            ));
        }
    }
    None
}
