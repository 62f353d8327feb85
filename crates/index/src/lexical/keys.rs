//! Chunk keys: the [`ChunkId`] of every chunk, read from the fast fields
//! once per searcher generation.

use std::sync::Arc;

use knowhow_core::ChunkId;
use tantivy::Searcher;

use super::LexicalIndex;
use crate::Error;

/// A chunk's [`ChunkId`] as the cache holds it: the document id is shared by
/// all of the document's chunks, so the cache costs one string per document,
/// not one per chunk.
pub(super) struct ChunkKey {
    pub(super) document_id: Arc<str>,
    pub(super) ordinal: u32,
}

impl ChunkKey {
    pub(super) fn id(&self) -> ChunkId {
        ChunkId::new(&*self.document_id, self.ordinal)
    }
}

/// Chunk identities of one searcher generation, per segment, by doc id.
pub(super) struct ChunkKeys {
    generation: u64,
    pub(super) segments: Vec<Vec<ChunkKey>>,
}

impl LexicalIndex {
    /// The chunk keys of `searcher`'s generation, read once per generation.
    pub(super) fn chunk_keys(&self, searcher: &Searcher) -> Result<Arc<ChunkKeys>, Error> {
        let mut cache = self.chunk_keys.lock().expect("chunk key cache poisoned");
        let generation = searcher.generation().generation_id();
        match cache.as_ref() {
            Some(keys) if keys.generation == generation => Ok(keys.clone()),
            _ => {
                let keys = Arc::new(ChunkKeys {
                    generation,
                    segments: self.read_chunk_keys(searcher)?,
                });
                *cache = Some(keys.clone());
                Ok(keys)
            }
        }
    }

    /// The key of every chunk, per segment, indexed by doc id.
    pub(super) fn read_chunk_keys(&self, searcher: &Searcher) -> Result<Vec<Vec<ChunkKey>>, Error> {
        let mut segments = Vec::with_capacity(searcher.segment_readers().len());
        for segment in searcher.segment_readers() {
            let ids = segment
                .fast_fields()
                .str("doc_id")?
                .ok_or_else(|| Error::Corrupt("lexical index has no doc_id column".into()))?;
            let ordinals = segment.fast_fields().u64("ordinal")?;
            let mut names: Vec<Arc<str>> = Vec::with_capacity(ids.num_terms());
            let mut terms = ids.dictionary().stream().map_err(self.read_error())?;
            while terms.advance() {
                names.push(String::from_utf8_lossy(terms.key()).into());
            }
            let empty: Arc<str> = "".into();
            let keys = (0..segment.max_doc())
                .map(|doc| {
                    let document_id = ids
                        .term_ords(doc)
                        .next()
                        .map_or_else(|| empty.clone(), |ord| names[ord as usize].clone());
                    ChunkKey {
                        document_id,
                        ordinal: ordinals.first(doc).unwrap_or(0) as u32,
                    }
                })
                .collect();
            segments.push(keys);
        }
        Ok(segments)
    }
}
