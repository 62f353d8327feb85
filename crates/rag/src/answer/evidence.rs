//! How well the sources cover a question, and whether a model's reply is
//! the abstention phrase: the two tests behind abstaining (module
//! documentation of [`crate::answer`], "Abstention").

use std::collections::BTreeSet;

use super::Source;

/// Words that make a sentence a question but say nothing of its subject;
/// the index's analyzer keeps them (Lucene's stop words are few).
const QUESTION_WORDS: &[&str] = &[
    "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "do", "does", "did", "has", "have", "had",
    "were", "been", "can", "could", "would", "should", "many", "much",
];

/// The distinct terms of `question` that say what it is about: the index's
/// analysis, without question words.
pub fn question_terms(question: &str) -> BTreeSet<String> {
    let content: Vec<&str> = question
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|word| !QUESTION_WORDS.contains(&word.to_lowercase().as_str()))
        .collect();
    knowhow_index::analyze(&content.join(" ")).into_iter().collect()
}

/// The largest fraction of [`question_terms`] that one of `sources`
/// contains; 1 for a question without such terms (nothing to judge by).
pub fn term_coverage(question: &str, sources: &[Source]) -> f32 {
    let terms = question_terms(question);
    if terms.is_empty() {
        return 1.0;
    }
    sources
        .iter()
        .map(|source| {
            let present: BTreeSet<String> = knowhow_index::analyze(&source.text).into_iter().collect();
            terms.intersection(&present).count() as f32 / terms.len() as f32
        })
        .fold(0.0, f32::max)
}

/// Whether the model's `text` is the abstention `phrase` (or empty): compared
/// ignoring case, spacing and a trailing full stop, anywhere in the text.
pub fn is_abstention(text: &str, phrase: &str) -> bool {
    let normalize = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
            .trim_end_matches('.')
            .to_string()
    };
    let (text, phrase) = (normalize(text), normalize(phrase));
    text.is_empty() || (!phrase.is_empty() && text.contains(&phrase))
}
