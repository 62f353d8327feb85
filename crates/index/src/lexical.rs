//! The BM25 index: one tantivy document per chunk.
//!
//! Everything a search result shows (title, source, heading, pages, text) is
//! stored here too, so searching never needs the redb store: a search can run
//! while another process holds the store to ingest.
//!
//! Each tantivy commit carries the store's sequence number of the last change
//! it contains (the commit payload); see [`crate::Writer`] for how the two are
//! kept in step.
//!
//! - `schema`: the fields of a chunk document
//! - `analyzer`: the English analyzer, and queries from its terms
//! - `rank`: BM25 term at a time, ids and scores only
//! - `snippets`: display hits with snippets
//! - `lookups`: chunks by [`ChunkId`](knowhow_core::ChunkId)
//! - `keys`: the per-generation cache of every chunk's key those two use

mod analyzer;
mod keys;
mod lookups;
mod rank;
mod schema;
mod snippets;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use knowhow_core::{Chunk, Document};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::{io_error, Error};

pub use analyzer::{analyze, english_analyzer};
pub use lookups::SourceChunk;
pub use rank::ScoredChunk;
pub use snippets::{Hit, Snippet};

use analyzer::ANALYZER;
use keys::ChunkKeys;
use schema::{schema, Fields, HEADING_SEPARATOR};

/// One collection's tantivy index: written through an [`IndexWriter`] the
/// [`crate::Writer`] holds, read through a manually reloaded reader, so a
/// search sees the commit that was last when the index opened or reloaded.
pub(crate) struct LexicalIndex {
    /// Where the index lives, for errors.
    dir: PathBuf,
    index: Index,
    fields: Fields,
    reader: IndexReader,
    analyzer: TextAnalyzer,
    /// Per segment of the current searcher, the id of every chunk, built on the first `rank` call: ranking then reads no
    /// stored fields or dictionaries per hit.
    chunk_keys: Mutex<Option<Arc<ChunkKeys>>>,
}

impl LexicalIndex {
    /// Opens the index in `dir`, creating an empty one if there is none.
    pub(crate) fn open_or_create(dir: &Path) -> Result<LexicalIndex, Error> {
        std::fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let (schema, fields) = schema();
        let existing = if dir.join("meta.json").exists() {
            Some(Index::open_in_dir(dir)?)
        } else {
            None
        };
        let index = match existing {
            Some(index) if index.schema() == schema => index,
            outdated => {
                // An index of an older layout: start afresh. It has no commit
                // payload then, so the writer rebuilds it from the store.
                if outdated.is_some() {
                    drop(outdated);
                    std::fs::remove_dir_all(dir).map_err(io_error("remove", dir))?;
                    std::fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
                }
                Index::create_in_dir(dir, schema)?
            }
        };
        Self::from_index(dir, index, fields)
    }

    /// Opens an existing index for reading only. An index of an older layout
    /// is an error: a writer rebuilds it (see [`LexicalIndex::open_or_create`]).
    pub(crate) fn open(dir: &Path) -> Result<LexicalIndex, Error> {
        let (schema, fields) = schema();
        let index = Index::open_in_dir(dir)?;
        if index.schema() != schema {
            return Err(Error::Corrupt(format!(
                "the lexical index in {} has an older layout: open the collection once for writing \
                 (any ingest) to rebuild it",
                dir.display()
            )));
        }
        Self::from_index(dir, index, fields)
    }

    fn from_index(dir: &Path, index: Index, fields: Fields) -> Result<LexicalIndex, Error> {
        index.tokenizers().register(ANALYZER, english_analyzer());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(LexicalIndex {
            dir: dir.to_path_buf(),
            index,
            fields,
            reader,
            analyzer: english_analyzer(),
            chunk_keys: Mutex::new(None),
        })
    }

    pub(crate) fn writer(&self) -> Result<IndexWriter, Error> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        Ok(self
            .index
            .writer_with_num_threads(threads, threads * 48 * 1024 * 1024)?)
    }

    /// The store sequence number the last commit contains; `None` for an index
    /// that never committed a change (it must be rebuilt from the store).
    pub(crate) fn committed_seq(&self) -> Result<Option<u64>, Error> {
        let payload = self.index.load_metas()?.payload;
        Ok(payload.and_then(|p| p.parse().ok()))
    }

    pub(crate) fn delete_document(&self, writer: &IndexWriter, doc_id: &str) {
        writer.delete_term(Term::from_field_text(self.fields.doc_id, doc_id));
    }

    pub(crate) fn add_document(&self, writer: &IndexWriter, doc: &Document, chunks: &[Chunk]) -> Result<(), Error> {
        let f = self.fields;
        for chunk in chunks {
            let mut d = TantivyDocument::new();
            let location = &chunk.location;
            d.add_text(f.doc_id, &doc.id);
            d.add_u64(f.ordinal, u64::from(chunk.id.ordinal));
            d.add_text(f.title, &doc.title);
            d.add_text(f.source, &doc.source);
            d.add_text(f.heading, location.heading_path.join(HEADING_SEPARATOR));
            if let Some((first, last)) = location.pages {
                d.add_text(f.pages, format!("{first}-{last}"));
            }
            d.add_text(f.text, &chunk.text);
            d.add_u64(f.start, location.start as u64);
            d.add_u64(f.end, location.end as u64);
            d.add_u64(f.char_start, location.char_start as u64);
            d.add_u64(f.char_end, location.char_end as u64);
            writer.add_document(d)?;
        }
        Ok(())
    }

    /// Commits everything added since the last commit, stamped with `seq`.
    pub(crate) fn commit(&self, writer: &mut IndexWriter, seq: u64) -> Result<(), Error> {
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&seq.to_string());
        prepared.commit()?;
        Ok(())
    }

    /// Number of indexed chunks per document id, for integrity checks.
    pub(crate) fn chunk_counts(&self) -> Result<BTreeMap<String, u32>, Error> {
        self.reader.reload()?;
        let searcher = self.reader.searcher();
        let mut counts = BTreeMap::new();
        for (segment, keys) in searcher.segment_readers().iter().zip(self.read_chunk_keys(&searcher)?) {
            for doc in segment.doc_ids_alive() {
                *counts.entry(keys[doc as usize].document_id.to_string()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// For `map_err`: a failed read of the index's own files, as an error
    /// naming the index.
    fn read_error(&self) -> impl FnOnce(std::io::Error) -> Error + '_ {
        io_error("read the lexical index in", &self.dir)
    }

    /// Makes the latest commit visible to searches.
    pub(crate) fn reload(&self) -> Result<(), Error> {
        Ok(self.reader.reload()?)
    }
}
