//! [`Reader`]: searching one collection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use knowhow_core::{ChunkId, CollectionRef};

use crate::lexical::LexicalIndex;
use crate::vectors::{self, VectorSnapshot};
use crate::{Error, Filter, Hit, ModelPin, ScoredChunk, SourceChunk};

/// Read-only search access to one collection.
///
/// A `Reader` never waits for a [`crate::Writer`]: once open, it takes no
/// lock and reads only the derived indexes (the lexical index and the vector
/// file), never the store, so searches go on while an ingest runs (opening
/// one looks at the store only when no writer holds it: see
/// [`crate::Home::open_reader`]). It sees whole committed batches only:
/// each view is one commit of its index, and a writer commits an index only
/// between batches, so a document is there with all its chunks or not at all.
///
/// What it sees is fixed until [`Reader::refresh`]: the lexical index as
/// committed when the reader opened, and the vector file as committed at the
/// first dense search. The two are separate commits, so a chunk a dense search
/// returns may be missing from the lexical view ([`Reader::hits`] leaves it
/// out). A batch [`crate::Writer::apply`] has acknowledged may not be visible
/// yet: `apply` commits the indexes only once a second has passed since their
/// last commit; [`crate::Writer::flush`] and [`crate::Writer::finish`] always
/// do.
pub struct Reader {
    collection: CollectionRef,
    lexical: LexicalIndex,
    vectors_dir: PathBuf,
    /// The vector file state dense searches use, mapped on the first one.
    vectors: Mutex<Option<Arc<VectorSnapshot>>>,
    /// The lexical commit the searcher was last loaded at (see [`Reader::catch_up`]).
    lexical_seq: Mutex<Option<u64>>,
}

impl Reader {
    /// A reader of the lexical index in `lexical_dir` and the vector file in
    /// `vectors_dir` (mapped on the first dense search).
    pub(crate) fn open(collection: CollectionRef, lexical_dir: &Path, vectors_dir: PathBuf) -> Result<Reader, Error> {
        let lexical = LexicalIndex::open(lexical_dir)?;
        let lexical_seq = Mutex::new(lexical.committed_seq()?);
        Ok(Reader {
            collection,
            lexical,
            vectors_dir,
            vectors: Mutex::new(None),
            lexical_seq,
        })
    }

    /// BM25 top `k` chunks with snippets and display fields.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, Error> {
        self.lexical.search(query, k)
    }

    /// Display hits (source, heading, pages, snippet) for chunks ranked by
    /// another retriever, in the given order; `query` picks the snippet.
    pub fn hits(&self, query: &str, chunks: &[ScoredChunk]) -> Result<Vec<Hit>, Error> {
        self.lexical.hits(query, chunks)
    }

    /// The text of each chunk; `None` where the chunk is not in the
    /// collection (removed since it was ranked).
    pub fn chunk_texts(&self, chunks: &[ChunkId]) -> Result<Vec<Option<String>>, Error> {
        self.lexical.chunk_texts(chunks)
    }

    /// The full record of each chunk: document title and source, heading
    /// path, pages, byte and character span, text. `None` where the chunk is
    /// not in the collection. Reads only the lexical index, so it works while
    /// an ingest holds the store.
    pub fn chunks(&self, chunks: &[ChunkId]) -> Result<Vec<Option<SourceChunk>>, Error> {
        self.lexical.chunks(chunks)
    }

    /// The id of every chunk in the collection, sorted: a document's chunks
    /// in order.
    pub fn chunk_ids(&self) -> Result<Vec<ChunkId>, Error> {
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
        *self.lexical_seq.lock().expect("lexical seq lock poisoned") = self.lexical.committed_seq()?;
        self.lexical.reload()
    }

    /// Picks up the commits made since this reader's view, and only when there are some: when nothing changed it
    /// costs two small file reads (the lexical index's meta and the vector manifest), so a long-lived reader (the
    /// server's) can call it before every query. Returns whether the view moved.
    pub fn catch_up(&self) -> Result<bool, Error> {
        let on_disk = self.lexical.committed_seq()?;
        let mut changed = false;
        {
            let mut seen = self.lexical_seq.lock().expect("lexical seq lock poisoned");
            if *seen != on_disk {
                // A commit landing between the two reads only makes the next call reload once more.
                self.lexical.reload()?;
                *seen = on_disk;
                changed = true;
            }
        }
        let mut vectors = self.vectors.lock().expect("vector snapshot lock poisoned");
        if let Some(snapshot) = &*vectors {
            if vectors::stamp(&self.vectors_dir).map(|(seq, _)| seq) != Some(snapshot.seq) {
                *vectors = None;
                changed = true;
            }
        }
        Ok(changed)
    }
}
