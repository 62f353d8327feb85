//! The BM25 index: one tantivy document per chunk.
//!
//! Everything a search result shows (title, source, heading, pages, text) is
//! stored here too, so searching never needs the redb store: a search can run
//! while another process holds the store to ingest.
//!
//! Each tantivy commit carries the store's sequence number of the last change
//! it contains (the commit payload); see [`crate::Writer`] for how the two are
//! kept in step.

use std::path::Path;

use knowhow_core::{Chunk, Document};
use tantivy::collector::TopDocs;
use tantivy::query::{Bm25Weight, BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED, STRING,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{DocAddress, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::Error;

/// Name under which the English analyzer is registered with tantivy.
const ANALYZER: &str = "knowhow_en";

/// The analyzer of chunk text and queries, close to Lucene's EnglishAnalyzer
/// (what the published BM25 baselines use): split on non-alphanumerics, drop
/// tokens over 40 bytes, lowercase, drop Lucene's English stop words, Snowball
/// English stemming.
pub fn english_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::new(Language::English).expect("tantivy ships English stop words"))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The terms BM25 sees in `text`, in order: [`english_analyzer`]'s tokens
/// (lowercased, stemmed, stop words dropped). Answer code uses it to match
/// questions against sentences the way the index matches them.
pub fn analyze(text: &str) -> Vec<String> {
    let mut analyzer = english_analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut terms = Vec::new();
    while let Some(token) = stream.next() {
        terms.push(token.text.clone());
    }
    terms
}

#[derive(Clone, Copy)]
struct Fields {
    doc_id: Field,
    ordinal: Field,
    title: Field,
    source: Field,
    heading: Field,
    pages: Field,
    text: Field,
    /// The chunk's byte and character span in its document's text, stored so
    /// that answers can merge overlapping chunks and cite exact positions.
    start: Field,
    end: Field,
    char_start: Field,
    char_end: Field,
}

fn schema() -> (Schema, Fields) {
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

/// A search result: one chunk, with what a user needs to see where it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub document_id: String,
    pub ordinal: u32,
    pub score: f32,
    pub title: String,
    pub source: String,
    pub heading_path: Vec<String>,
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

/// A ranked chunk without its display fields: what evaluation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredChunk {
    pub document_id: String,
    pub ordinal: u32,
    pub score: f32,
}

pub(crate) struct LexicalIndex {
    index: Index,
    fields: Fields,
    reader: IndexReader,
    analyzer: TextAnalyzer,
    /// Per segment of the current searcher, the (document id, ordinal) of
    /// every chunk, built on the first `rank` call: ranking then reads no
    /// stored fields or dictionaries per hit.
    chunk_keys: std::sync::Mutex<Option<std::sync::Arc<ChunkKeys>>>,
}

/// (document id, ordinal) of a chunk.
type ChunkKey = (std::sync::Arc<str>, u32);

/// Chunk identities of one searcher generation, per segment, by doc id.
struct ChunkKeys {
    generation: u64,
    segments: Vec<Vec<ChunkKey>>,
}

impl LexicalIndex {
    /// Opens the index in `dir`, creating an empty one if there is none.
    pub(crate) fn open_or_create(dir: &Path) -> Result<LexicalIndex, Error> {
        std::fs::create_dir_all(dir)?;
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
                    std::fs::remove_dir_all(dir)?;
                    std::fs::create_dir_all(dir)?;
                }
                Index::create_in_dir(dir, schema)?
            }
        };
        Self::from_index(index, fields)
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
        Self::from_index(index, fields)
    }

    fn from_index(index: Index, fields: Fields) -> Result<LexicalIndex, Error> {
        index.tokenizers().register(ANALYZER, english_analyzer());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(LexicalIndex {
            index,
            fields,
            reader,
            analyzer: english_analyzer(),
            chunk_keys: std::sync::Mutex::new(None),
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
            d.add_text(f.doc_id, &doc.id);
            d.add_u64(f.ordinal, u64::from(chunk.ordinal));
            d.add_text(f.title, &doc.title);
            d.add_text(f.source, &doc.source);
            d.add_text(f.heading, chunk.heading_path.join("\u{1f}"));
            if let Some((first, last)) = chunk.pages {
                d.add_text(f.pages, format!("{first}-{last}"));
            }
            d.add_text(f.text, &chunk.text);
            d.add_u64(f.start, chunk.start as u64);
            d.add_u64(f.end, chunk.end as u64);
            d.add_u64(f.char_start, chunk.char_start as u64);
            d.add_u64(f.char_end, chunk.char_end as u64);
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
    pub(crate) fn chunk_counts(&self) -> Result<std::collections::BTreeMap<String, u32>, Error> {
        self.reader.reload()?;
        let searcher = self.reader.searcher();
        let mut counts = std::collections::BTreeMap::new();
        for (segment, keys) in searcher.segment_readers().iter().zip(chunk_keys(&searcher)?) {
            for doc in segment.doc_ids_alive() {
                *counts.entry(keys[doc as usize].0.to_string()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// The distinct query terms after analysis, each with how often the query
    /// repeats it.
    fn query_terms(&self, text: &str) -> Vec<(Term, u32)> {
        let mut analyzer = self.analyzer.clone();
        let mut terms: Vec<(Term, u32)> = Vec::new();
        let mut stream = analyzer.token_stream(text);
        while let Some(token) = stream.next() {
            let term = Term::from_field_text(self.fields.text, &token.text);
            match terms.iter_mut().find(|(t, _)| *t == term) {
                Some((_, count)) => *count += 1,
                None => terms.push((term, 1)),
            }
        }
        terms
    }

    /// The query as tantivy sees it, for snippets and display search.
    fn query(&self, text: &str) -> Option<Box<dyn Query>> {
        let terms = self.query_terms(text);
        if terms.is_empty() {
            return None;
        }
        // Like Anserini's bag-of-words query: each distinct term once, boosted
        // by how often the query repeats it.
        let clauses = terms
            .into_iter()
            .map(|(term, count)| {
                let query: Box<dyn Query> = Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                let query: Box<dyn Query> = if count > 1 {
                    Box::new(BoostQuery::new(query, count as f32))
                } else {
                    query
                };
                (Occur::Should, query)
            })
            .collect();
        Some(Box::new(BooleanQuery::new(clauses)))
    }

    /// Top `k` chunks for `text` by BM25, without display fields.
    ///
    /// Scores term at a time into one dense accumulator per segment, reading
    /// posting lists block by block, then selects the top `k`. The ranking is
    /// the same as tantivy's `BooleanQuery` of the same terms (see the test
    /// `term_at_a_time_ranks_like_tantivy`), but for the long bag-of-words
    /// queries retrieval sends (a claim, a question) and the deep `k` that
    /// document-level evaluation needs, block-max WAND prunes little and pays
    /// for its bookkeeping; a sequential pass over the postings does not.
    pub(crate) fn rank(&self, text: &str, k: usize) -> Result<Vec<ScoredChunk>, Error> {
        let terms = self.query_terms(text);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let weights = terms
            .iter()
            .map(|(term, count)| {
                let weight = Bm25Weight::for_terms(&searcher, std::slice::from_ref(term))?;
                Ok(weight.boost_by(*count as f32))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let mut candidates: Vec<(f32, u32, u32)> = Vec::new();
        for (segment_ord, segment) in searcher.segment_readers().iter().enumerate() {
            let inverted = segment.inverted_index(self.fields.text)?;
            let fieldnorms = segment.get_fieldnorms_reader(self.fields.text)?;
            let mut scores = vec![0f32; segment.max_doc() as usize];
            for ((term, _), weight) in terms.iter().zip(&weights) {
                let Some(mut postings) = inverted.read_block_postings(term, IndexRecordOption::WithFreqs)? else {
                    continue;
                };
                while !postings.docs().is_empty() {
                    for (&doc, &freq) in postings.docs().iter().zip(postings.freqs()) {
                        scores[doc as usize] += weight.score(fieldnorms.fieldnorm_id(doc), freq);
                    }
                    postings.advance();
                }
            }
            let alive = segment.alive_bitset();
            candidates.extend(
                scores
                    .iter()
                    .enumerate()
                    .filter(|&(doc, &score)| score > 0.0 && alive.is_none_or(|a| a.is_alive(doc as u32)))
                    .map(|(doc, &score)| (score, segment_ord as u32, doc as u32)),
            );
        }
        // Highest score first; ties in index order, as tantivy's collector.
        let order = |a: &(f32, u32, u32), b: &(f32, u32, u32)| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2)));
        if candidates.len() > k {
            candidates.select_nth_unstable_by(k - 1, order);
            candidates.truncate(k);
        }
        candidates.sort_unstable_by(order);
        let keys = self.chunk_keys(&searcher)?;
        Ok(candidates
            .into_iter()
            .map(|(score, segment_ord, doc)| {
                let (id, ordinal) = &keys.segments[segment_ord as usize][doc as usize];
                ScoredChunk {
                    document_id: id.to_string(),
                    ordinal: *ordinal,
                    score,
                }
            })
            .collect())
    }

    /// The chunk keys of `searcher`'s generation, read once per generation.
    fn chunk_keys(&self, searcher: &tantivy::Searcher) -> Result<std::sync::Arc<ChunkKeys>, Error> {
        let mut cache = self.chunk_keys.lock().expect("chunk key cache poisoned");
        let generation = searcher.generation().generation_id();
        match cache.as_ref() {
            Some(keys) if keys.generation == generation => Ok(keys.clone()),
            _ => {
                let keys = std::sync::Arc::new(ChunkKeys {
                    generation,
                    segments: chunk_keys(searcher)?,
                });
                *cache = Some(keys.clone());
                Ok(keys)
            }
        }
    }

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
            let Some(address) = self.address(&searcher, &keys, &chunk.document_id, chunk.ordinal)? else {
                continue;
            };
            let doc: TantivyDocument = searcher.doc(address)?;
            let mut hit = self.hit(&doc, chunk.score, snippets.as_ref());
            if hit.snippet.text.is_empty() {
                hit.snippet.text = opening(&self.stored_text(&doc, self.fields.text), 240);
            }
            hits.push(hit);
        }
        Ok(hits)
    }

    /// The text of each chunk, `None` for a chunk not in the index.
    pub(crate) fn chunk_texts(&self, chunks: &[(String, u32)]) -> Result<Vec<Option<String>>, Error> {
        self.read_chunks(chunks, |doc| self.stored_text(doc, self.fields.text))
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
            text: self.stored_text(doc, f.text),
        }
    }

    /// Where chunk (`document_id`, `ordinal`) lives: the document id's
    /// postings list names its chunks, the cached keys give their ordinals.
    fn address(
        &self,
        searcher: &tantivy::Searcher,
        keys: &ChunkKeys,
        document_id: &str,
        ordinal: u32,
    ) -> Result<Option<DocAddress>, Error> {
        let term = Term::from_field_text(self.fields.doc_id, document_id);
        for (segment_ord, segment) in searcher.segment_readers().iter().enumerate() {
            let inverted = segment.inverted_index(self.fields.doc_id)?;
            let Some(mut postings) = inverted.read_postings(&term, IndexRecordOption::Basic)? else {
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

    fn stored_text(&self, doc: &TantivyDocument, field: Field) -> String {
        doc.get_first(field).and_then(|v| v.as_str()).unwrap_or("").to_string()
    }

    /// A hit from a stored chunk.
    fn hit(&self, doc: &TantivyDocument, score: f32, snippets: Option<&SnippetGenerator>) -> Hit {
        let f = self.fields;
        let heading = self.stored_text(doc, f.heading);
        let snippet = snippets.map(|g| g.snippet_from_doc(doc));
        Hit {
            document_id: self.stored_text(doc, f.doc_id),
            ordinal: doc.get_first(f.ordinal).and_then(|v| v.as_u64()).unwrap_or(0) as u32,
            score,
            title: self.stored_text(doc, f.title),
            source: self.stored_text(doc, f.source),
            heading_path: if heading.is_empty() {
                Vec::new()
            } else {
                heading.split('\u{1f}').map(String::from).collect()
            },
            pages: parse_pages(&self.stored_text(doc, f.pages)),
            snippet: Snippet {
                text: snippet.as_ref().map_or_else(String::new, |s| s.fragment().to_string()),
                highlights: snippet
                    .map_or_else(Vec::new, |s| s.highlighted().iter().map(|r| (r.start, r.end)).collect()),
            },
        }
    }

    /// Makes the latest commit visible to searches.
    pub(crate) fn reload(&self) -> Result<(), Error> {
        Ok(self.reader.reload()?)
    }
}

/// (document id, ordinal) of every chunk, per segment, indexed by doc id.
fn chunk_keys(searcher: &tantivy::Searcher) -> Result<Vec<Vec<ChunkKey>>, Error> {
    let mut segments = Vec::with_capacity(searcher.segment_readers().len());
    for segment in searcher.segment_readers() {
        let ids = segment
            .fast_fields()
            .str("doc_id")?
            .ok_or_else(|| Error::Corrupt("lexical index has no doc_id column".into()))?;
        let ordinals = segment.fast_fields().u64("ordinal")?;
        let mut names: Vec<std::sync::Arc<str>> = Vec::with_capacity(ids.num_terms());
        let mut terms = ids.dictionary().stream()?;
        while terms.advance() {
            names.push(String::from_utf8_lossy(terms.key()).into());
        }
        let empty: std::sync::Arc<str> = "".into();
        let keys = (0..segment.max_doc())
            .map(|doc| {
                let id = ids
                    .term_ords(doc)
                    .next()
                    .map_or_else(|| empty.clone(), |ord| names[ord as usize].clone());
                (id, ordinals.first(doc).unwrap_or(0) as u32)
            })
            .collect();
        segments.push(keys);
    }
    Ok(segments)
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

fn parse_pages(pages: &str) -> Option<(u32, u32)> {
    let (first, last) = pages.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyzer_lowercases_stems_and_drops_stop_words() {
        assert_eq!(analyze("The Running of the Mice-cells"), ["run", "mice", "cell"]);
        assert_eq!(analyze("and or but"), Vec::<String>::new());
    }

    #[test]
    fn chunks_come_back_with_their_document_fields_and_spans() {
        let dir = tempfile::tempdir().unwrap();
        let index = LexicalIndex::open_or_create(dir.path()).unwrap();
        let text = "Größe zählt. Second sentence here.";
        let doc = Document::new(
            "d1".into(),
            "/docs/d1.md".into(),
            "Doc one".into(),
            text.into(),
            Vec::new(),
            Vec::new(),
            Default::default(),
        );
        let second_start = text.find("Second").unwrap();
        let chunks = [
            Chunk {
                document_id: "d1".into(),
                ordinal: 0,
                text: text[..second_start - 1].into(),
                heading_path: vec!["Top".into(), "Sub".into()],
                pages: Some((2, 3)),
                start: 0,
                end: second_start - 1,
                char_start: 0,
                char_end: 12,
                tokens: 3,
            },
            Chunk {
                document_id: "d1".into(),
                ordinal: 1,
                text: text[second_start..].into(),
                heading_path: Vec::new(),
                pages: None,
                start: second_start,
                end: text.len(),
                char_start: 13,
                char_end: text.chars().count(),
                tokens: 3,
            },
        ];
        let mut writer = index.writer().unwrap();
        index.add_document(&writer, &doc, &chunks).unwrap();
        index.commit(&mut writer, 1).unwrap();
        index.reload().unwrap();

        assert_eq!(
            index.chunk_ids().unwrap(),
            [("d1".to_string(), 0), ("d1".to_string(), 1)]
        );
        let got = index
            .chunks(&[("d1".into(), 1), ("d1".into(), 7), ("d1".into(), 0)])
            .unwrap();
        let second = got[0].as_ref().unwrap();
        assert_eq!((second.start, second.end), (chunks[1].start, chunks[1].end));
        assert_eq!((second.char_start, second.char_end), (13, 34));
        assert_eq!(second.text, "Second sentence here.");
        assert!(got[1].is_none());
        let first = got[2].as_ref().unwrap();
        assert_eq!(
            (first.title.as_str(), first.source.as_str()),
            ("Doc one", "/docs/d1.md")
        );
        assert_eq!(first.heading_path, ["Top", "Sub"]);
        assert_eq!(first.pages, Some((2, 3)));
        assert_eq!(first.text.chars().count(), first.char_end - first.char_start);
    }

    /// An index written before the span fields existed is rebuilt by a
    /// writer (it opens empty and unstamped) and refused by a reader.
    #[test]
    fn an_index_of_the_older_layout_is_recreated_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = Schema::builder();
        builder.add_text_field("doc_id", STRING | STORED | FAST);
        builder.add_text_field("text", STORED);
        let old = Index::create_in_dir(dir.path(), builder.build()).unwrap();
        let mut writer: IndexWriter = old.writer_with_num_threads(1, 15_000_000).unwrap();
        let mut prepared = writer.prepare_commit().unwrap();
        prepared.set_payload("7");
        prepared.commit().unwrap();
        drop((writer, old));

        assert!(matches!(LexicalIndex::open(dir.path()), Err(Error::Corrupt(_))));
        let index = LexicalIndex::open_or_create(dir.path()).unwrap();
        assert_eq!(index.committed_seq().unwrap(), None);
        assert_eq!(index.index.schema(), schema().0);
    }

    /// Several segments, deleted chunks, repeated query terms, terms absent
    /// from the index: the term-at-a-time ranker must agree with tantivy's
    /// own BM25 `BooleanQuery` + `TopDocs`.
    #[test]
    fn term_at_a_time_ranks_like_tantivy() {
        let dir = tempfile::tempdir().unwrap();
        let index = LexicalIndex::open_or_create(dir.path()).unwrap();
        let words = [
            "cell", "protein", "gene", "mouse", "cancer", "therapy", "blood", "brain", "virus", "immune", "dose",
            "trial", "risk", "heart", "liver",
        ];
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = move |n: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % n
        };
        let mut writer = index.writer().unwrap();
        let f = index.fields;
        for segment in 0..3u64 {
            for i in 0..200u64 {
                let length = 3 + next(40);
                let text: Vec<&str> = (0..length).map(|_| words[next(words.len())]).collect();
                let mut d = TantivyDocument::new();
                d.add_text(f.doc_id, format!("doc{segment}-{i}"));
                d.add_u64(f.ordinal, 0);
                d.add_text(f.text, text.join(" "));
                writer.add_document(d).unwrap();
            }
            writer.commit().unwrap();
        }
        for i in (0..200).step_by(7) {
            writer.delete_term(Term::from_field_text(f.doc_id, &format!("doc1-{i}")));
        }
        writer.commit().unwrap();
        index.reload().unwrap();
        assert!(index.reader.searcher().segment_readers().len() > 1);

        let searcher = index.reader.searcher();
        let keys = chunk_keys(&searcher).unwrap();
        for query in [
            "cell protein",
            "gene gene mouse therapy",
            "virus immune immune risk unseenword",
            "heart",
        ] {
            let ours = index.rank(query, 50).unwrap();
            let tantivy_query = index.query(query).unwrap();
            let theirs = searcher
                .search(&*tantivy_query, &TopDocs::with_limit(50).order_by_score())
                .unwrap();
            assert_eq!(ours.len(), theirs.len(), "{query}");
            for (mine, (score, address)) in ours.iter().zip(&theirs) {
                assert!((mine.score - score).abs() < 1e-4, "{query}: {} vs {score}", mine.score);
                let key = &keys[address.segment_ord as usize][address.doc_id as usize];
                if (mine.score - score).abs() < 1e-6 && *mine.document_id != *key.0 {
                    // Equal scores: both orders are a correct ranking.
                    continue;
                }
                assert_eq!(mine.document_id, *key.0, "{query}");
            }
            assert!(ours.iter().all(|hit| !hit.document_id.starts_with("doc1-0")));
        }
        assert!(index.rank("the of and", 10).unwrap().is_empty());
    }
}
