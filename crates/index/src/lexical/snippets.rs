//! Display hits: a chunk's stored fields and a snippet around the query's
//! terms.

use knowhow_core::ChunkId;
use tantivy::collector::TopDocs;
use tantivy::snippet::SnippetGenerator;
use tantivy::TantivyDocument;

use super::schema::stored_text;
use super::LexicalIndex;
use crate::{Error, ScoredChunk};

/// A search result: one chunk, with what a user needs to see where it is.
///
/// It shows a [`Snippet`] rather than the chunk's text, and of the chunk's
/// [`ChunkLocation`](knowhow_core::ChunkLocation) only what a reader
/// navigates by (heading path and pages), not its byte and character spans;
/// [`crate::SourceChunk`] has the whole chunk. Serialized flat:
/// `document_id`, `ordinal`, `score`, ...
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    #[serde(flatten)]
    pub id: ChunkId,
    pub score: f32,
    pub title: String,
    pub source: String,
    /// Heading path of the section the chunk starts in; empty when none.
    pub heading_path: Vec<String>,
    /// First and last page the chunk touches, for paged documents.
    pub pages: Option<(u32, u32)>,
    pub snippet: Snippet,
}

/// A fragment of the chunk around the best-matching terms; `highlights` are
/// byte ranges of matched terms inside `text`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Snippet {
    pub text: String,
    pub highlights: Vec<(usize, usize)>,
}

impl LexicalIndex {
    /// Top `k` chunks for `text`, with snippets and display fields.
    pub(crate) fn search(&self, text: &str, k: usize) -> Result<Vec<Hit>, Error> {
        let Some(query) = self.query(text) else {
            return Ok(Vec::new());
        };
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(k.max(1)).order_by_score())?;
        let mut snippets = SnippetGenerator::create(&searcher, &*query, self.fields.text)?;
        snippets.set_max_num_chars(240);
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            hits.push(self.hit(&doc, score, Some(&snippets)));
        }
        Ok(hits)
    }

    /// Display hits for chunks ranked elsewhere (dense or fused retrieval),
    /// in the given order, with snippets around `query`'s terms where the
    /// chunk has them (else the chunk's opening). Chunks no longer in the
    /// index are left out.
    pub(crate) fn hits(&self, query: &str, chunks: &[ScoredChunk]) -> Result<Vec<Hit>, Error> {
        let searcher = self.reader.searcher();
        let keys = self.chunk_keys(&searcher)?;
        let snippets = match self.query(query) {
            Some(query) => {
                let mut generator = SnippetGenerator::create(&searcher, &*query, self.fields.text)?;
                generator.set_max_num_chars(240);
                Some(generator)
            }
            None => None,
        };
        let mut hits = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let Some(address) = self.address(&searcher, &keys, &chunk.id)? else {
                continue;
            };
            let doc: TantivyDocument = searcher.doc(address)?;
            let mut hit = self.hit(&doc, chunk.score, snippets.as_ref());
            if hit.snippet.text.is_empty() {
                hit.snippet.text = opening(&stored_text(&doc, self.fields.text), 240);
            }
            hits.push(hit);
        }
        Ok(hits)
    }

    /// A hit from a stored chunk.
    pub(super) fn hit(&self, doc: &TantivyDocument, score: f32, snippets: Option<&SnippetGenerator>) -> Hit {
        let f = self.fields;
        let snippet = snippets.map(|g| g.snippet_from_doc(doc));
        Hit {
            id: f.id(doc),
            score,
            title: stored_text(doc, f.title),
            source: stored_text(doc, f.source),
            heading_path: f.heading_path(doc),
            pages: f.pages(doc),
            snippet: Snippet {
                text: snippet.as_ref().map_or_else(String::new, |s| s.fragment().to_string()),
                highlights: snippet
                    .map_or_else(Vec::new, |s| s.highlighted().iter().map(|r| (r.start, r.end)).collect()),
            },
        }
    }
}

/// The first `max_chars` characters of `text`, cut at a word boundary.
fn opening(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((end, _)) => {
            let cut = text[..end].rfind(char::is_whitespace).unwrap_or(end);
            format!("{}…", text[..cut].trim_end())
        }
    }
}
