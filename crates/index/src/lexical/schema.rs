//! The tantivy schema: one document per chunk, with everything a hit shows
//! stored.

use knowhow_core::{ChunkId, ChunkLocation};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED, STRING,
};
use tantivy::TantivyDocument;

use super::analyzer::ANALYZER;

/// Joins a chunk's heading path in the stored `heading` field: a control
/// character (unit separator) that no heading contains.
pub(super) const HEADING_SEPARATOR: &str = "\u{1f}";

/// The fields of a chunk document.
#[derive(Clone, Copy)]
pub(super) struct Fields {
    pub(super) doc_id: Field,
    pub(super) ordinal: Field,
    pub(super) title: Field,
    pub(super) source: Field,
    pub(super) heading: Field,
    pub(super) pages: Field,
    pub(super) text: Field,
    /// The chunk's byte and character span in its document's text, stored so
    /// that answers can merge overlapping chunks and cite exact positions.
    pub(super) start: Field,
    pub(super) end: Field,
    pub(super) char_start: Field,
    pub(super) char_end: Field,
}

/// The schema of the index: changing it makes a writer rebuild older
/// indexes from the store ([`super::LexicalIndex::open_or_create`]).
pub(super) fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text_options = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let fields = Fields {
        doc_id: builder.add_text_field("doc_id", STRING | STORED | FAST),
        ordinal: builder.add_u64_field("ordinal", INDEXED | STORED | FAST),
        title: builder.add_text_field("title", STORED),
        source: builder.add_text_field("source", STORED),
        heading: builder.add_text_field("heading", STORED),
        pages: builder.add_text_field("pages", STORED),
        text: builder.add_text_field("text", text_options),
        start: builder.add_u64_field("start", STORED),
        end: builder.add_u64_field("end", STORED),
        char_start: builder.add_u64_field("char_start", STORED),
        char_end: builder.add_u64_field("char_end", STORED),
    };
    (builder.build(), fields)
}

impl Fields {
    /// The id of a stored chunk.
    pub(super) fn id(&self, doc: &TantivyDocument) -> ChunkId {
        ChunkId::new(stored_text(doc, self.doc_id), stored_number(doc, self.ordinal) as u32)
    }

    /// The heading path of a stored chunk; empty when it has none.
    pub(super) fn heading_path(&self, doc: &TantivyDocument) -> Vec<String> {
        let heading = stored_text(doc, self.heading);
        if heading.is_empty() {
            Vec::new()
        } else {
            heading.split(HEADING_SEPARATOR).map(String::from).collect()
        }
    }

    /// The page range of a stored chunk, stored as `FIRST-LAST`.
    pub(super) fn pages(&self, doc: &TantivyDocument) -> Option<(u32, u32)> {
        let pages = stored_text(doc, self.pages);
        let (first, last) = pages.split_once('-')?;
        Some((first.parse().ok()?, last.parse().ok()?))
    }

    /// Everything the index keeps of where a stored chunk lies.
    pub(super) fn location(&self, doc: &TantivyDocument) -> ChunkLocation {
        ChunkLocation {
            heading_path: self.heading_path(doc),
            pages: self.pages(doc),
            start: stored_number(doc, self.start) as usize,
            end: stored_number(doc, self.end) as usize,
            char_start: stored_number(doc, self.char_start) as usize,
            char_end: stored_number(doc, self.char_end) as usize,
        }
    }
}

/// The value of a number `field` in a stored chunk; 0 when it has none.
fn stored_number(doc: &TantivyDocument, field: Field) -> u64 {
    doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// The text of `field` in a stored chunk; empty when it has none.
pub(super) fn stored_text(doc: &TantivyDocument, field: Field) -> String {
    doc.get_first(field).and_then(|v| v.as_str()).unwrap_or("").to_string()
}
