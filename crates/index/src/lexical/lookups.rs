//! Chunks looked up by key: for results ranked elsewhere (dense, fused,
//! re-ranked) and for answers that cite them.

use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::{DocAddress, DocSet, Searcher, TantivyDocument, Term};

use super::keys::ChunkKeys;
use super::schema::stored_text;
use super::LexicalIndex;
use crate::Error;

/// A chunk with everything an answer shows or cites: where it comes from,
/// where it lies in its document, and its text.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceChunk {
    pub document_id: String,
    pub ordinal: u32,
    pub title: String,
    pub source: String,
    pub heading_path: Vec<String>,
    pub pages: Option<(u32, u32)>,
    /// Byte span of `text` in the document text.
    pub start: usize,
    pub end: usize,
    /// The same span in Unicode scalar values.
    pub char_start: usize,
    pub char_end: usize,
    pub text: String,
}

impl LexicalIndex {
    /// The text of each chunk, `None` for a chunk not in the index.
    pub(crate) fn chunk_texts(&self, chunks: &[(String, u32)]) -> Result<Vec<Option<String>>, Error> {
        self.read_chunks(chunks, |doc| stored_text(doc, self.fields.text))
    }

    /// The full record of each chunk, `None` for a chunk not in the index.
    pub(crate) fn chunks(&self, chunks: &[(String, u32)]) -> Result<Vec<Option<SourceChunk>>, Error> {
        self.read_chunks(chunks, |doc| self.source_chunk(doc))
    }

    /// `read` of each chunk's stored document, `None` for a chunk not in the index.
    fn read_chunks<T>(
        &self,
        chunks: &[(String, u32)],
        read: impl Fn(&TantivyDocument) -> T,
    ) -> Result<Vec<Option<T>>, Error> {
        let searcher = self.reader.searcher();
        let keys = self.chunk_keys(&searcher)?;
        chunks
            .iter()
            .map(|(id, ordinal)| {
                let Some(address) = self.address(&searcher, &keys, id, *ordinal)? else {
                    return Ok(None);
                };
                let doc: TantivyDocument = searcher.doc(address)?;
                Ok(Some(read(&doc)))
            })
            .collect()
    }

    /// (document id, ordinal) of every chunk in the index, sorted.
    pub(crate) fn chunk_ids(&self) -> Result<Vec<(String, u32)>, Error> {
        let searcher = self.reader.searcher();
        let keys = self.chunk_keys(&searcher)?;
        let mut ids = Vec::new();
        for (segment, keys) in searcher.segment_readers().iter().zip(&keys.segments) {
            ids.extend(segment.doc_ids_alive().map(|doc| {
                let (id, ordinal) = &keys[doc as usize];
                (id.to_string(), *ordinal)
            }));
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn source_chunk(&self, doc: &TantivyDocument) -> SourceChunk {
        let f = self.fields;
        let number = |field: Field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let hit = self.hit(doc, 0.0, None);
        SourceChunk {
            document_id: hit.document_id,
            ordinal: hit.ordinal,
            title: hit.title,
            source: hit.source,
            heading_path: hit.heading_path,
            pages: hit.pages,
            start: number(f.start),
            end: number(f.end),
            char_start: number(f.char_start),
            char_end: number(f.char_end),
            text: stored_text(doc, f.text),
        }
    }

    /// Where chunk (`document_id`, `ordinal`) lives: the document id's
    /// postings list names its chunks, the cached keys give their ordinals.
    pub(super) fn address(
        &self,
        searcher: &Searcher,
        keys: &ChunkKeys,
        document_id: &str,
        ordinal: u32,
    ) -> Result<Option<DocAddress>, Error> {
        let term = Term::from_field_text(self.fields.doc_id, document_id);
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
                if keys.segments[segment_ord][doc as usize].1 == ordinal && alive.is_none_or(|a| a.is_alive(doc)) {
                    return Ok(Some(DocAddress::new(segment_ord as u32, doc)));
                }
                doc = postings.advance();
            }
        }
        Ok(None)
    }
}
