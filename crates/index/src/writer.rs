//! [`Writer`]: the one process writing a collection, and what it is handed.
//!
//! Every change goes to the store first, in one durable transaction per
//! call; the lexical index and the vector file follow it, and catch up from
//! its change log when they lag (see the crate's invariants).

mod reembed;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use knowhow_core::{Chunk, ChunkId, CollectionRef, Document};
use redb::ReadableDatabase;
use tantivy::IndexWriter;

use crate::lexical::LexicalIndex;
use crate::vectors::{self, VectorWriter};
use crate::{store, Error, ModelPin, SourceRecord, StoredDocument};

pub use reembed::{ChunkText, ReembedProgress};

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
///
/// At most one `Writer` holds a collection at a time, across processes: the
/// store's file lock refuses a second one as [`Error::Busy`] rather than
/// making it wait. What a `Writer` acknowledges is durable: when
/// [`Writer::apply`] (or any other call that changes the store) returns
/// `Ok`, its change is in a committed redb transaction with immediate
/// durability, and no crash after that loses it.
///
/// The lexical index and the vector file follow the store and may lag it.
/// They are committed only between batches: at once by [`Writer::flush`],
/// [`Writer::finish`] and the removals, and by `apply` once a second has
/// passed since their last commit. Whatever a crash leaves them lacking, the
/// next writer (or reader, when no writer is active) replays from the store's
/// change log when it opens. Dropping a writer without [`Writer::finish`]
/// loses nothing acknowledged either, but leaves the change log untrimmed.
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
    /// How long `apply` lets changes gather before it commits the indexes:
    /// each index commit writes and fsyncs files of its own.
    commit_every: Duration,
    /// Where [`Writer::reembed_todo`] goes on from.
    reembed_cursor: Option<ChunkId>,
}

/// What [`Writer::write_document`] did with one document.
enum Written {
    /// Refused: the id belongs to a document of this other source.
    Conflict { source: String },
    /// The stored version has the same hash and chunk count: left as it is.
    Unchanged,
    /// Written into the batch as a new document.
    Added,
    /// Written into the batch over an older version.
    Updated,
}

impl Writer {
    /// Takes the store `db` of the collection in `dir`, opened (so locked) by
    /// [`crate::Home::open_writer`], and brings the lexical index and the
    /// vector file up to date with it.
    pub(crate) fn open(collection: CollectionRef, db: redb::Database, dir: &Path) -> Result<Writer, Error> {
        store::create_tables(&db)?;
        let lexical = LexicalIndex::open_or_create(&dir.join("lexical"))?;
        let index_writer = lexical.writer()?;
        // A writer killed mid-commit leaves files its commit never named (a
        // delete file, say); the next commit may want the same name and fail:
        // remove every file the last commit does not use.
        index_writer.garbage_collect_files().wait()?;
        let mut writer = Writer {
            collection,
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
        let now = knowhow_core::time::unix_now();
        let mut batch = store::Batch::begin(&self.db)?;
        let mut written = HashMap::new();
        let mut results = Vec::with_capacity(updates.len());
        for update in updates {
            results.push(self.write_source(&mut batch, update, now, &mut written)?);
        }
        self.commit_batch(batch, &written)?;
        if self.last_index_commit.elapsed() >= self.commit_every {
            self.commit_index()?;
        }
        Ok(results)
    }

    /// Writes one source's new state into `batch`: its documents, the removal
    /// of those it no longer has, and its record. The documents written go
    /// into `written`, to index once the batch commits.
    fn write_source(
        &self,
        batch: &mut store::Batch,
        update: SourceUpdate,
        now: u64,
        written: &mut HashMap<String, DocumentUpdate>,
    ) -> Result<Applied, Error> {
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
            return Ok(applied);
        };
        record.document_ids.clear();
        for document in documents {
            let id = document.document.id.clone();
            match self.write_document(batch, document, now, written)? {
                Written::Conflict { source } => {
                    applied.conflicts.push((id, source));
                    continue;
                }
                Written::Unchanged => applied.unchanged += 1,
                Written::Added => applied.added += 1,
                Written::Updated => applied.updated += 1,
            }
            record.document_ids.push(id);
        }
        applied.removed = remove_dropped(batch, &previous.document_ids, &record.document_ids)?;
        batch.put_source(&update.source, &record)?;
        Ok(applied)
    }

    /// Writes one document into `batch`, unless its id belongs to another
    /// source or the stored version is the same; a document written goes into
    /// `written`.
    fn write_document(
        &self,
        batch: &mut store::Batch,
        update: DocumentUpdate,
        now: u64,
        written: &mut HashMap<String, DocumentUpdate>,
    ) -> Result<Written, Error> {
        let doc = &update.document;
        let replaced = match batch.document(&doc.id)? {
            Some(old) if old.document.source != doc.source => {
                return Ok(Written::Conflict {
                    source: old.document.source,
                })
            }
            Some(old) if old.document.hash == doc.hash && old.chunk_count as usize == update.chunks.len() => {
                return Ok(Written::Unchanged)
            }
            old => old.is_some(),
        };
        // An error drops the uncommitted transaction: nothing of the batch is
        // written.
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
        written.insert(
            stored.document.id.clone(),
            DocumentUpdate {
                document: stored.document,
                ..update
            },
        );
        Ok(if replaced { Written::Updated } else { Written::Added })
    }

    /// Commits `batch` durably, then feeds its changes to the lexical index
    /// and the vector file (uncommitted): every changed document leaves
    /// both, and comes back if `written` has its new version.
    fn commit_batch(
        &mut self,
        mut batch: store::Batch,
        written: &HashMap<String, DocumentUpdate>,
    ) -> Result<(), Error> {
        let changed = std::mem::take(&mut batch.changed);
        let seq = batch.commit()?;
        for id in &changed {
            self.lexical.delete_document(&self.index_writer, id);
            self.vectors.remove(id)?;
            if let Some(update) = written.get(id) {
                self.lexical
                    .add_document(&self.index_writer, &update.document, &update.chunks)?;
                if let Some(vectors) = &update.vectors {
                    let ordinals = update.chunks.iter().map(|c| c.id.ordinal).collect();
                    self.vectors.put(id, &update.document.metadata, ordinals, vectors)?;
                }
            }
        }
        self.index_seq = seq;
        Ok(())
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

    /// Commits a batch of removals, then the indexes at once: searches that
    /// open or refresh after the call no longer find what it removed.
    fn commit_removals(&mut self, batch: store::Batch) -> Result<(), Error> {
        self.commit_batch(batch, &HashMap::new())?;
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

/// Removes from `batch` the documents `previous` lists and `current` no
/// longer does; returns how many of them were stored.
fn remove_dropped(batch: &mut store::Batch, previous: &[String], current: &[String]) -> Result<u32, Error> {
    let mut removed = 0;
    for gone in previous.iter().filter(|id| !current.contains(id)) {
        if batch.remove_document(gone)? {
            removed += 1;
        }
    }
    Ok(removed)
}
