//! Chunks looked up by key: for results ranked elsewhere (dense, fused,
//! re-ranked) and for answers that cite them.

use knowhow_core::{ChunkId, ChunkLocation};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocSet, Searcher, TantivyDocument, Term};

use super::keys::ChunkKeys;
use super::schema::stored_text;
use super::LexicalIndex;
use crate::Error;

/// A chunk with everything an answer shows or cites: which chunk it is, its
/// document's title and source, where it lies in the document, and its text.
///
/// It is the core [`knowhow_core::Chunk`] as the lexical index keeps it, with
/// the document's title and source added and without the token count (which
/// the index does not store; nothing that shows a chunk needs it). Serialized
/// flat: `document_id`, `ordinal`, `title`, `source`, `heading_path`, `pages`,
/// `start`, `end`, `char_start`, `char_end`, `text`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceChunk {
    #[serde(flatten)]
    pub id: ChunkId,
    pub title: String,
    pub source: String,
    #[serde(flatten)]
    pub location: ChunkLocation,
    pub text: String,
}

impl LexicalIndex {
    /// The text of each chunk, `None` for a chunk not in the index.
    pub(crate) fn chunk_texts(&self, chunks: &[ChunkId]) -> Result<Vec<Option<String>>, Error> {
        self.read_chunks(chunks, |doc| stored_text(doc, self.fields.text))
    }

    /// The full record of each chunk, `None` for a chunk not in the index.
    pub(crate) fn chunks(&self, chunks: &[ChunkId]) -> Result<Vec<Option<SourceChunk>>, Error> {
        self.read_chunks(chunks, |doc| self.source_chunk(doc))
    }

    /// `read` of each chunk's stored document, `None` for a chunk not in the index.
    fn read_chunks<T>(
        &self,
        chunks: &[ChunkId],
        read: impl Fn(&TantivyDocument) -> T,
    ) -> Result<Vec<Option<T>>, Error> {
        let searcher = self.reader.searcher();
        let keys = self.chunk_keys(&searcher)?;
        chunks
            .iter()
            .map(|id| {
                let Some(address) = self.address(&searcher, &keys, id)? else {
                    return Ok(None);
                };
                let doc: TantivyDocument = searcher.doc(address)?;
                Ok(Some(read(&doc)))
            })
            .collect()
    }

    /// The id of every chunk in the index, sorted.
    pub(crate) fn chunk_ids(&self) -> Result<Vec<ChunkId>, Error> {
        let searcher = self.reader.searcher();
        let keys = self.chunk_keys(&searcher)?;
        let mut ids = Vec::new();
        for (segment, keys) in searcher.segment_readers().iter().zip(&keys.segments) {
            ids.extend(segment.doc_ids_alive().map(|doc| keys[doc as usize].id()));
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn source_chunk(&self, doc: &TantivyDocument) -> SourceChunk {
        let f = self.fields;
        SourceChunk {
            id: f.id(doc),
            title: stored_text(doc, f.title),
            source: stored_text(doc, f.source),
            location: f.location(doc),
            text: stored_text(doc, f.text),
        }
    }

    /// Where chunk `id` lives: the document id's postings list names its
    /// chunks, the cached keys give their ordinals.
    pub(super) fn address(
        &self,
        searcher: &Searcher,
        keys: &ChunkKeys,
        id: &ChunkId,
    ) -> Result<Option<DocAddress>, Error> {
        let term = Term::from_field_text(self.fields.doc_id, &id.document_id);
        for (segment_ord, segment) in searcher.segment_readers().iter().enumerate() {
            let inverted = segment.inverted_index(self.fields.doc_id)?;
            let Some(mut postings) = inverted
                .read_postings(&term, IndexRecordOption::Basic)
                .map_err(self.read_error())?
            else {
                continue;
            };
            let alive = segment.alive_bitset();
            let mut doc = postings.doc();
            while doc != tantivy::TERMINATED {
                if keys.segments[segment_ord][doc as usize].ordinal == id.ordinal
                    && alive.is_none_or(|a| a.is_alive(doc))
                {
                    return Ok(Some(DocAddress::new(segment_ord as u32, doc)));
                }
                doc = postings.advance();
            }
        }
        Ok(None)
    }
}
