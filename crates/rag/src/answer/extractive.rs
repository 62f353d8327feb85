//! The extractive answerer: no language model, the sources' own sentences.
//!
//! The sources are split into sentences (Unicode sentence boundaries), and
//! each sentence is scored against the question by BM25 over the sentences of
//! the sources (IDF from those sentences, so a term every sentence has counts
//! for little), with the index's analyzer (stemming, stop words), times a
//! prior that favours better-ranked sources. The best sentence is the answer,
//! with up to `max_sentences − 1` more whose score comes close to it, each
//! followed by its citation marker, in source order.

use std::collections::HashMap;

use serde::Serialize;
use unicode_segmentation::UnicodeSegmentation;

use super::sources::Source;

/// How many sentences to quote and how close to the best they must score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExtractOptions {
    /// At most this many sentences (1–3 reads as an answer, more as a search
    /// result).
    pub max_sentences: usize,
    /// A sentence after the best is quoted only if it scores at least this
    /// fraction of the best.
    pub keep_ratio: f32,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            max_sentences: 3,
            keep_ratio: 0.75,
        }
    }
}

/// A quoted sentence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sentence {
    /// Number of the source it comes from.
    pub source: usize,
    pub text: String,
    pub score: f32,
}

/// An extractive answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Extract {
    /// The sentences, each followed by its marker: `Sentence one. [2] Two. [1]`.
    pub text: String,
    pub sentences: Vec<Sentence>,
}

const K1: f32 = 1.2;
const B: f32 = 0.75;
/// Each rank down the source list costs this fraction of a sentence's score,
/// so that among equal matches the better-retrieved source wins.
const RANK_DECAY: f32 = 0.1;

/// The best sentences of `sources` for `question`; `None` when no sentence
/// shares a term with the question.
pub fn extract(question: &str, sources: &[Source], options: ExtractOptions) -> Option<Extract> {
    let query: Vec<String> = super::question_terms(question).into_iter().collect();
    // (source number, rank index, position, text, term counts, length)
    let mut sentences = Vec::new();
    for (rank, source) in sources.iter().enumerate() {
        for (position, text) in prose_sentences(&source.text).into_iter().enumerate() {
            let terms = knowhow_index::analyze(&text);
            let mut counts: HashMap<String, u32> = HashMap::new();
            for term in &terms {
                *counts.entry(term.clone()).or_insert(0) += 1;
            }
            sentences.push((source.number, rank, position, text, counts, terms.len()));
        }
    }
    if sentences.is_empty() || query.is_empty() {
        return None;
    }
    let n = sentences.len() as f32;
    let average_length = sentences.iter().map(|s| s.5).sum::<usize>() as f32 / n;
    let idf: Vec<f32> = query
        .iter()
        .map(|term| {
            let df = sentences.iter().filter(|s| s.4.contains_key(term)).count() as f32;
            (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
        })
        .collect();
    let mut scored: Vec<(f32, usize)> = sentences
        .iter()
        .enumerate()
        .map(|(i, (_, rank, _, _, counts, length))| {
            let norm = K1 * (1.0 - B + B * *length as f32 / average_length.max(1.0));
            let bm25: f32 = query
                .iter()
                .zip(&idf)
                .map(|(term, idf)| {
                    let tf = counts.get(term).copied().unwrap_or(0) as f32;
                    idf * tf * (K1 + 1.0) / (tf + norm)
                })
                .sum();
            (bm25 / (1.0 + RANK_DECAY * *rank as f32), i)
        })
        .collect();
    // Best first; ties to the earlier sentence.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let best = scored.first().map(|s| s.0).filter(|&s| s > 0.0)?;
    let mut chosen: Vec<(f32, usize)> = scored
        .into_iter()
        .take(options.max_sentences.max(1))
        .filter(|&(score, _)| score > 0.0 && score >= best * options.keep_ratio)
        .collect();
    // Read in source order, as the sources tell it.
    chosen.sort_by_key(|&(_, i)| (sentences[i].1, sentences[i].2));
    let sentences: Vec<Sentence> = chosen
        .into_iter()
        .map(|(score, i)| Sentence {
            source: sentences[i].0,
            text: sentences[i].3.to_string(),
            score,
        })
        .collect();
    let text = sentences
        .iter()
        .map(|s| format!("{} [{}]", s.text, s.source))
        .collect::<Vec<_>>()
        .join(" ");
    Some(Extract { text, sentences })
}

/// The sentences of `text`, without Markdown headings: a heading names a
/// section, it does not answer anything, and being short it would otherwise
/// win on length normalisation alone.
/// The lines of a paragraph are joined by spaces, so a sentence wrapped over
/// lines (as PDFs and plain text wrap them) stays whole; blank lines end
/// paragraphs.
fn prose_sentences(text: &str) -> Vec<String> {
    let mut paragraphs = vec![String::new()];
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            paragraphs.push(String::new());
            continue;
        }
        let paragraph = paragraphs.last_mut().expect("never empty");
        if !paragraph.is_empty() {
            paragraph.push(' ');
        }
        paragraph.push_str(line);
    }
    paragraphs
        .iter()
        .flat_map(|paragraph| paragraph.unicode_sentences())
        .map(str::trim)
        .filter(|sentence| !sentence.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::sources::merge;
    use crate::answer::sources::tests::chunk;

    fn source(document: &str, text: &str) -> knowhow_index::SourceChunk {
        chunk(document, 0, text, 0, text.chars().count())
    }

    #[test]
    fn markdown_headings_are_not_sentences() {
        let text = "# Super Bowl 50\n\n## The game\n\nThe Broncos won Super Bowl 50. Fans cheered.\nIt rained.";
        assert_eq!(
            prose_sentences(text),
            ["The Broncos won Super Bowl 50.", "Fans cheered.", "It rained."]
        );
        assert_eq!(
            prose_sentences("A sentence wrapped\nover two lines."),
            ["A sentence wrapped over two lines."]
        );
    }

    #[test]
    fn picks_the_sentence_that_answers_and_cites_its_source() {
        let sources = merge(&[
            (
                source(
                    "a",
                    "The stadium opened in 2014. It holds 68,500 people. The Broncos won the game 24 to 10.",
                ),
                2.0,
            ),
            (
                source("b", "Levi's Stadium is in Santa Clara, California. Parking is scarce."),
                1.0,
            ),
        ]);
        let one = ExtractOptions {
            max_sentences: 1,
            ..ExtractOptions::default()
        };
        let answer = extract("Where is Levi's Stadium located?", &sources, one).unwrap();
        assert_eq!(answer.text, "Levi's Stadium is in Santa Clara, California. [2]");
        let answer = extract("Which team won the game?", &sources, one).unwrap();
        assert_eq!(answer.text, "The Broncos won the game 24 to 10. [1]");
        assert!(extract("What about quantum chromodynamics?", &sources, one).is_none());
    }

    #[test]
    fn quotes_further_sentences_only_when_they_score_close_to_the_best() {
        let sources = merge(&[(
            source(
                "a",
                "Halley's comet returns every 76 years. Halley's comet was seen in 1986. Ice is cold.",
            ),
            1.0,
        )]);
        let answer = extract("When was Halley's comet seen?", &sources, ExtractOptions::default()).unwrap();
        assert_eq!(answer.sentences[0].text, "Halley's comet was seen in 1986.");
        let all = ExtractOptions {
            max_sentences: 3,
            keep_ratio: 0.0,
        };
        let answer = extract("When was Halley's comet seen?", &sources, all).unwrap();
        // Three sentences, in the order the source tells them.
        let texts: Vec<&str> = answer.sentences.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts[0], "Halley's comet returns every 76 years.");
        assert_eq!(
            texts.len(),
            2,
            "the sentence sharing no term is never quoted: {texts:?}"
        );
    }
}
