//! Numbered sources: retrieved chunks as the model and the reader see them.
//!
//! Chunks overlap (the chunker repeats trailing sentences) and neighbouring
//! chunks of one document are often retrieved together; giving them to the
//! model as separate sources wastes tokens on repeated text and splits one
//! passage across two numbers. So the chunks of one document whose character
//! spans overlap or touch, or whose ordinals follow each other, become one
//! source, its text joined without repeating the overlap.

use std::collections::HashMap;

use knowhow_index::SourceChunk;
use serde::Serialize;

/// One numbered source: a chunk, or several overlapping or adjacent chunks of
/// one document merged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Source {
    /// 1-based: the `n` of the citation marker `[n]`.
    pub number: usize,
    pub document_id: String,
    pub title: String,
    /// Where the document came from (file path, URL, row source).
    pub source: String,
    /// Heading path of the section the source starts in.
    pub heading_path: Vec<String>,
    /// First and last page the source touches, for paged documents.
    pub pages: Option<(u32, u32)>,
    /// Character span of the source in the document text (Unicode scalar
    /// values, as Python and JavaScript index strings).
    pub char_start: usize,
    pub char_end: usize,
    /// Ordinals of the chunks merged into this source, in document order.
    pub ordinals: Vec<u32>,
    /// The best retrieval score of those chunks.
    pub score: f32,
    pub text: String,
}

impl Source {
    /// Where in the document the source is, for people: "pp. 3–4", "p. 3",
    /// or the heading path; empty when the document has neither.
    pub fn location(&self) -> String {
        match self.pages {
            Some((first, last)) if first == last => format!("p. {first}"),
            Some((first, last)) => format!("pp. {first}–{last}"),
            None => self.heading_path.join(" › "),
        }
    }

    /// The source as a prompt or a tool result shows it: a numbered header
    /// line, then the text.
    pub fn block(&self) -> String {
        let location = self.location();
        let location = if location.is_empty() {
            String::new()
        } else {
            format!(" ({location})")
        };
        format!(
            "[{}] {}{location} — {}\n{}",
            self.number, self.title, self.source, self.text
        )
    }

    fn from_chunk(chunk: &SourceChunk, score: f32) -> Source {
        let location = &chunk.location;
        Source {
            number: 0,
            document_id: chunk.id.document_id.clone(),
            title: chunk.title.clone(),
            source: chunk.source.clone(),
            heading_path: location.heading_path.clone(),
            pages: location.pages,
            char_start: location.char_start,
            char_end: location.char_end,
            ordinals: vec![chunk.id.ordinal],
            score,
            text: chunk.text.clone(),
        }
    }

    /// Whether `chunk` (of the same document, starting at or after this
    /// source) overlaps this source or follows it directly.
    fn touches(&self, chunk: &SourceChunk) -> bool {
        chunk.location.char_start <= self.char_end || self.ordinals.last().is_some_and(|&o| chunk.id.ordinal == o + 1)
    }

    /// Appends `chunk`, which [`Source::touches`] this source.
    fn absorb(&mut self, chunk: &SourceChunk, score: f32) {
        let location = &chunk.location;
        if location.char_end > self.char_end {
            if location.char_start < self.char_end {
                let overlap = self.char_end - location.char_start;
                self.text.extend(chunk.text.chars().skip(overlap));
            } else {
                // Only whitespace lies between chunks; its exact form is not
                // stored, so keep a paragraph break or a space.
                self.text.push_str(if location.char_start - self.char_end > 1 {
                    "\n\n"
                } else {
                    " "
                });
                self.text.push_str(&chunk.text);
            }
            self.char_end = location.char_end;
        }
        self.pages = match (self.pages, location.pages) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (pages, None) | (None, pages) => pages,
        };
        self.ordinals.push(chunk.id.ordinal);
        self.score = self.score.max(score);
    }
}

/// Merges chunks given in rank order (best first, each with its retrieval
/// score) into sources numbered 1.. in rank order: a merged source ranks where
/// its best chunk ranked.
pub fn merge(chunks: &[(SourceChunk, f32)]) -> Vec<Source> {
    let mut by_document: HashMap<&str, Vec<usize>> = HashMap::new();
    for (rank, (chunk, _)) in chunks.iter().enumerate() {
        by_document.entry(chunk.id.document_id.as_str()).or_default().push(rank);
    }
    // (best rank, source)
    let mut merged: Vec<(usize, Source)> = Vec::new();
    for mut ranks in by_document.into_values() {
        ranks.sort_by_key(|&r| (chunks[r].0.location.char_start, chunks[r].0.id.ordinal));
        let mut current: Option<(usize, Source)> = None;
        for rank in ranks {
            let (chunk, score) = &chunks[rank];
            match &mut current {
                Some((best, source)) if source.touches(chunk) => {
                    *best = (*best).min(rank);
                    source.absorb(chunk, *score);
                }
                _ => {
                    merged.extend(current.take());
                    current = Some((rank, Source::from_chunk(chunk, *score)));
                }
            }
        }
        merged.extend(current);
    }
    merged.sort_by_key(|(rank, _)| *rank);
    merged
        .into_iter()
        .zip(1..)
        .map(|((_, source), number)| Source { number, ..source })
        .collect()
}

/// Merges every chunk of each document into sources in document order (for
/// long-context answers), documents ordered by source path then id.
pub fn whole_documents(chunks: &[SourceChunk]) -> Vec<Source> {
    let mut order: Vec<usize> = (0..chunks.len()).collect();
    order.sort_by_key(|&i| {
        let c = &chunks[i];
        (&c.source, &c.id.document_id, c.location.char_start, c.id.ordinal)
    });
    let ranked: Vec<(SourceChunk, f32)> = order.into_iter().map(|i| (chunks[i].clone(), 0.0)).collect();
    merge(&ranked)
}

#[cfg(test)]
pub(crate) mod tests {
    use knowhow_core::{ChunkId, ChunkLocation};

    use super::*;

    /// A chunk of `document` covering characters `start..end` of `text`.
    pub(crate) fn chunk(document: &str, ordinal: u32, text: &str, start: usize, end: usize) -> SourceChunk {
        let piece: String = text.chars().skip(start).take(end - start).collect();
        SourceChunk {
            id: ChunkId::new(document, ordinal),
            title: format!("Title of {document}"),
            source: format!("/docs/{document}.md"),
            location: ChunkLocation {
                heading_path: vec!["Intro".into()],
                pages: None,
                start,
                end,
                char_start: start,
                char_end: end,
            },
            text: piece,
        }
    }

    const TEXT: &str = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu.";

    #[test]
    fn overlapping_chunks_merge_without_repeating_the_overlap() {
        // "Alpha beta gamma. Delta epsilon zeta." and "Delta epsilon zeta. Eta theta iota."
        let first = chunk("a", 0, TEXT, 0, 37);
        let second = chunk("a", 1, TEXT, 18, 53);
        let other = chunk("b", 0, "Something else entirely.", 0, 24);
        // The second chunk ranks best, the other document between them.
        let merged = merge(&[(second, 3.0), (other, 2.0), (first, 1.0)]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].number, 1);
        assert_eq!(merged[0].document_id, "a");
        assert_eq!(merged[0].text, "Alpha beta gamma. Delta epsilon zeta. Eta theta iota.");
        assert_eq!(merged[0].text, TEXT.chars().take(53).collect::<String>());
        assert_eq!((merged[0].char_start, merged[0].char_end), (0, 53));
        assert_eq!(merged[0].ordinals, [0, 1]);
        assert_eq!(merged[0].score, 3.0);
        assert_eq!((merged[1].number, merged[1].document_id.as_str()), (2, "b"));
    }

    #[test]
    fn adjacent_chunks_merge_and_distant_ones_stay_apart() {
        let first = chunk("a", 0, TEXT, 0, 17);
        let next = chunk("a", 1, TEXT, 18, 37);
        let far = chunk("a", 3, TEXT, 54, 71);
        let merged = merge(&[(far.clone(), 5.0), (first, 4.0), (next, 3.0)]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].text, far.text);
        assert_eq!(merged[1].text, "Alpha beta gamma. Delta epsilon zeta.");
        assert_eq!(merged[1].ordinals, [0, 1]);
    }

    #[test]
    fn a_chunk_inside_another_adds_no_text() {
        let outer = chunk("a", 0, TEXT, 0, 53);
        let inner = chunk("a", 1, TEXT, 18, 37);
        let merged = merge(&[(inner, 1.0), (outer.clone(), 0.5)]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].text, outer.text);
    }

    #[test]
    fn non_ascii_overlap_is_cut_by_characters() {
        let text = "Größe über alles. Öl fließt schön. Ende gut.";
        let first = chunk("a", 0, text, 0, 34);
        let second = chunk("a", 1, text, 18, 44);
        let merged = merge(&[(first, 1.0), (second, 1.0)]);
        assert_eq!(merged[0].text, text);
    }
}
