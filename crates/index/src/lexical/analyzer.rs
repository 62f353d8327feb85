//! How text becomes terms: the English analyzer of chunk text and queries,
//! and the queries built from its terms.

use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::Term;

use super::LexicalIndex;

/// Name under which the English analyzer is registered with tantivy.
pub(super) const ANALYZER: &str = "knowhow_en";

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

impl LexicalIndex {
    /// The distinct query terms after analysis, each with how often the query
    /// repeats it.
    pub(super) fn query_terms(&self, text: &str) -> Vec<(Term, u32)> {
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
    pub(super) fn query(&self, text: &str) -> Option<Box<dyn Query>> {
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
}
