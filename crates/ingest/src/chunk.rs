//! Token-aware chunking along the document's structure.
//!
//! A document is cut into regions at section starts (a chunk never spans two
//! headings' sections), each region into sentences, and sentences longer than
//! the limit into word runs. Chunks are then grown greedily from those atoms
//! up to `max_tokens`, ending at the strongest boundary available (section,
//! then paragraph, then sentence) once at least half the budget is used, and
//! the next chunk re-starts with up to `overlap_tokens` of trailing atoms.
//!
//! Every chunk is a byte span of the document text, so nothing is rewritten;
//! only whitespace between atoms can fall outside every chunk.
//!
//! Token counts come from a caller-supplied counter: the embedding model's
//! tokenizer when one is configured, otherwise [`estimate_tokens`].

use std::ops::Range;

use knowhow_core::{Chunk, ChunkId, ChunkLocation, Document};
use unicode_segmentation::UnicodeSegmentation;

/// Chunk size limits, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> ChunkOptions {
        ChunkOptions {
            max_tokens: 512,
            overlap_tokens: 64,
        }
    }
}

impl ChunkOptions {
    pub const MIN_TOKENS: usize = 128;
    pub const MAX_TOKENS: usize = 2048;

    /// Checks the limits a user gave: size within 128–2048, overlap under half
    /// the size (more would make every token appear in three chunks).
    pub fn new(max_tokens: usize, overlap_tokens: usize) -> Result<ChunkOptions, String> {
        if !(Self::MIN_TOKENS..=Self::MAX_TOKENS).contains(&max_tokens) {
            return Err(format!(
                "chunk size {max_tokens} is out of range: use {}..={} tokens",
                Self::MIN_TOKENS,
                Self::MAX_TOKENS
            ));
        }
        if overlap_tokens * 2 > max_tokens {
            return Err(format!(
                "chunk overlap {overlap_tokens} is more than half the chunk size {max_tokens}"
            ));
        }
        Ok(ChunkOptions {
            max_tokens,
            overlap_tokens,
        })
    }
}

/// The fallback token counter, used when no model tokenizer is configured.
///
/// It is deliberately conservative, so chunks still fit a model's window once
/// a real tokenizer measures them: a run of ASCII letters and digits counts
/// one token per started 4 characters (WordPiece and BPE give 1–2 for most
/// English words; this gives 1–3), every other non-space character (CJK,
/// punctuation, symbols) counts one token.
pub fn estimate_tokens(text: &str) -> usize {
    let mut tokens = 0;
    let mut run: usize = 0;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run += 1;
            continue;
        }
        tokens += run.div_ceil(4);
        run = 0;
        if !c.is_whitespace() {
            tokens += 1;
        }
    }
    tokens + run.div_ceil(4)
}

/// How strong the boundary before an atom is; chunks prefer to end at strong
/// ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Boundary {
    Word,
    Sentence,
    Paragraph,
}

struct Atom {
    span: Range<usize>,
    tokens: usize,
    before: Boundary,
}

/// Cuts `doc` into chunks no larger than `options.max_tokens` as measured by
/// `count_tokens`.
pub fn chunk_document(doc: &Document, options: ChunkOptions, count_tokens: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut chars = CharOffsets::new(&doc.text);
    for region in regions(doc) {
        // Most regions fit whole: then there is nothing to segment.
        let spans = match trim(&doc.text, region.clone()) {
            None => Vec::new(),
            Some(whole) if count_tokens(&doc.text[whole.clone()]) <= options.max_tokens => vec![whole],
            Some(_) => pack(&atoms(&doc.text, region, options.max_tokens, count_tokens), options),
        };
        for span in spans {
            let text = &doc.text[span.clone()];
            chunks.push(Chunk {
                id: ChunkId::new(doc.id.clone(), chunks.len() as u32),
                text: text.to_string(),
                location: ChunkLocation {
                    heading_path: heading_path_at(doc, span.start),
                    pages: page_range(doc, &span),
                    char_start: chars.at(span.start),
                    char_end: chars.at(span.end),
                    start: span.start,
                    end: span.end,
                },
                tokens: count_tokens(text) as u32,
            });
        }
    }
    chunks
}

/// Byte ranges that chunks may not cross: the text before the first section,
/// then each section.
fn regions(doc: &Document) -> Vec<Range<usize>> {
    let mut cuts: Vec<usize> = doc
        .sections
        .iter()
        .map(|s| s.start)
        .filter(|&s| s > 0 && s < doc.text.len())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut regions = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        regions.push(start..cut);
        start = cut;
    }
    regions.push(start..doc.text.len());
    regions
}

/// Splits a region into sentence atoms (word runs for over-long sentences),
/// each trimmed of surrounding whitespace and within `max_tokens`.
fn atoms(text: &str, region: Range<usize>, max_tokens: usize, count_tokens: &dyn Fn(&str) -> usize) -> Vec<Atom> {
    let mut atoms = Vec::new();
    for paragraph in paragraphs(text, region) {
        let mut before = Boundary::Paragraph;
        for (offset, sentence) in text[paragraph.clone()].split_sentence_bound_indices() {
            let Some(span) = trim(
                text,
                paragraph.start + offset..paragraph.start + offset + sentence.len(),
            ) else {
                continue;
            };
            let tokens = count_tokens(&text[span.clone()]);
            if tokens <= max_tokens {
                atoms.push(Atom { span, tokens, before });
            } else {
                split_long(text, span, max_tokens, count_tokens, before, &mut atoms);
            }
            before = Boundary::Sentence;
        }
    }
    atoms
}

/// Paragraphs are separated by blank lines; returned trimmed.
fn paragraphs(text: &str, region: Range<usize>) -> Vec<Range<usize>> {
    let body = &text[region.clone()];
    let mut paragraphs = Vec::new();
    let mut start = 0;
    let mut line_start = 0;
    let mut previous_blank = false;
    for line in body.split_inclusive('\n') {
        let blank = line.trim().is_empty();
        if blank && !previous_blank {
            paragraphs.push(region.start + start..region.start + line_start);
        }
        if !blank && previous_blank {
            start = line_start;
        }
        previous_blank = blank;
        line_start += line.len();
    }
    if !previous_blank {
        paragraphs.push(region.start + start..region.end);
    }
    paragraphs.into_iter().filter_map(|p| trim(text, p)).collect()
}

/// Splits an over-long sentence at word boundaries into runs within the
/// limit; a single word still too long is cut between characters.
fn split_long(
    text: &str,
    span: Range<usize>,
    max_tokens: usize,
    count_tokens: &dyn Fn(&str) -> usize,
    first: Boundary,
    atoms: &mut Vec<Atom>,
) {
    let mut before = first;
    let mut run: Option<(Range<usize>, usize)> = None;
    let mut push = |atoms: &mut Vec<Atom>, span: Range<usize>, tokens: usize| {
        atoms.push(Atom { span, tokens, before });
        before = Boundary::Word;
    };
    for (offset, word) in text[span.clone()].split_word_bound_indices() {
        if word.trim().is_empty() {
            continue;
        }
        let word_span = span.start + offset..span.start + offset + word.len();
        let word_tokens = count_tokens(word);
        if word_tokens > max_tokens {
            if let Some((run_span, tokens)) = run.take() {
                push(atoms, run_span, tokens);
            }
            for piece in split_chars(text, word_span, max_tokens, count_tokens) {
                let tokens = count_tokens(&text[piece.clone()]);
                push(atoms, piece, tokens);
            }
            continue;
        }
        run = match run.take() {
            Some((run_span, tokens)) if tokens + word_tokens <= max_tokens => {
                Some((run_span.start..word_span.end, tokens + word_tokens))
            }
            Some((run_span, tokens)) => {
                push(atoms, run_span, tokens);
                Some((word_span, word_tokens))
            }
            None => Some((word_span, word_tokens)),
        };
    }
    if let Some((run_span, tokens)) = run {
        push(atoms, run_span, tokens);
    }
}

fn split_chars(
    text: &str,
    span: Range<usize>,
    max_tokens: usize,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = span.start;
    while start < span.end {
        let mut chars = max_tokens;
        loop {
            let end = text[start..span.end]
                .char_indices()
                .nth(chars)
                .map_or(span.end, |(i, _)| start + i);
            if chars == 1 || count_tokens(&text[start..end]) <= max_tokens {
                pieces.push(start..end);
                start = end;
                break;
            }
            chars /= 2;
        }
    }
    pieces
}

fn trim(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let slice = &text[span.clone()];
    let start = span.start + (slice.len() - slice.trim_start().len());
    let end = span.end - (slice.len() - slice.trim_end().len());
    (start < end).then_some(start..end)
}

/// Greedy packing of atoms into chunk spans with overlap.
fn pack(atoms: &[Atom], options: ChunkOptions) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    while start < atoms.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < atoms.len() && tokens + atoms[end].tokens <= options.max_tokens {
            tokens += atoms[end].tokens;
            end += 1;
        }
        if end < atoms.len() {
            end = best_end(atoms, start, end, options.max_tokens);
        }
        spans.push(atoms[start].span.start..atoms[end - 1].span.end);
        if end == atoms.len() {
            break;
        }
        start = overlap_start(atoms, start, end, options);
    }
    spans
}

/// Among the ends that use at least half the budget, the one before the
/// strongest boundary, the latest on ties. `limit` is the first atom that no
/// longer fits.
fn best_end(atoms: &[Atom], start: usize, limit: usize, max_tokens: usize) -> usize {
    let mut best = limit;
    let mut best_boundary = atoms[limit].before;
    let mut tokens: usize = atoms[start..limit].iter().map(|a| a.tokens).sum();
    for end in (start + 1..limit).rev() {
        tokens -= atoms[end].tokens;
        if tokens * 2 < max_tokens {
            break;
        }
        if atoms[end].before > best_boundary {
            best = end;
            best_boundary = atoms[end].before;
        }
    }
    best
}

/// Where the next chunk starts: far enough back to repeat at most
/// `overlap_tokens` of this chunk's tail, but never so far that the next chunk
/// could not take at least one new atom, and never at or before `start`.
fn overlap_start(atoms: &[Atom], start: usize, end: usize, options: ChunkOptions) -> usize {
    let mut next = end;
    let mut tokens = 0;
    while next > start + 1 {
        let candidate = tokens + atoms[next - 1].tokens;
        if candidate > options.overlap_tokens || candidate + atoms[end].tokens > options.max_tokens {
            break;
        }
        tokens = candidate;
        next -= 1;
    }
    next
}

fn heading_path_at(doc: &Document, offset: usize) -> Vec<String> {
    doc.sections
        .iter()
        .rfind(|s| s.start <= offset && offset < s.end.max(s.start + 1))
        .map(|s| s.heading_path.clone())
        .unwrap_or_default()
}

fn page_range(doc: &Document, span: &Range<usize>) -> Option<(u32, u32)> {
    let mut touched = doc
        .pages
        .iter()
        .filter(|p| p.start < span.end && span.start < p.end.max(p.start + 1));
    let first = touched.next()?.number;
    let last = touched.next_back().map_or(first, |p| p.number);
    Some((first, last))
}

/// Converts byte offsets to character offsets for offsets asked in increasing
/// order (chunks come in text order), in one pass over the text overall.
struct CharOffsets<'a> {
    text: &'a str,
    byte: usize,
    char: usize,
}

impl<'a> CharOffsets<'a> {
    fn new(text: &'a str) -> CharOffsets<'a> {
        CharOffsets { text, byte: 0, char: 0 }
    }

    fn at(&mut self, byte: usize) -> usize {
        if byte < self.byte {
            self.byte = 0;
            self.char = 0;
        }
        self.char += self.text[self.byte..byte].chars().count();
        self.byte = byte;
        self.char
    }
}

#[cfg(test)]
mod tests {
    use knowhow_core::{Metadata, Page, Section};
    use proptest::prelude::*;

    use super::*;
    use crate::load::{Format, LoadOptions};

    fn doc(text: &str, sections: Vec<Section>, pages: Vec<Page>) -> Document {
        Document::new(
            "d".into(),
            "s".into(),
            "t".into(),
            text.into(),
            sections,
            pages,
            Metadata::new(),
        )
    }

    fn words(n: usize, word: &str) -> String {
        vec![word; n].join(" ")
    }

    #[test]
    fn estimate_counts_ascii_runs_by_four_and_other_characters_by_one() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a bcde fghij"), 1 + 1 + 2);
        assert_eq!(estimate_tokens("Hello, world!"), 2 + 1 + 2 + 1);
        assert_eq!(estimate_tokens("日本語"), 3);
    }

    #[test]
    fn options_outside_the_supported_range_are_refused() {
        assert!(ChunkOptions::new(127, 0).is_err());
        assert!(ChunkOptions::new(2049, 0).is_err());
        assert!(ChunkOptions::new(256, 129).is_err());
        assert_eq!(ChunkOptions::new(256, 128).unwrap().overlap_tokens, 128);
    }

    #[test]
    fn a_short_document_is_one_chunk_with_exact_spans() {
        let text = "  Déjà vu. Second sentence.\n";
        let chunks = chunk_document(&doc(text, vec![], vec![]), ChunkOptions::default(), &estimate_tokens);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "Déjà vu. Second sentence.");
        assert_eq!((chunks[0].location.start, chunks[0].location.char_start), (2, 2));
        assert_eq!(
            chunks[0].location.char_end,
            chunks[0].location.char_start + chunks[0].text.chars().count()
        );
    }

    #[test]
    fn chunks_never_span_sections_and_carry_their_heading_path() {
        let text = "# A\nalpha text.\n# B\nbeta text.\n";
        let sections = vec![
            Section {
                heading_path: vec!["A".into()],
                level: 1,
                start: 0,
                end: 16,
            },
            Section {
                heading_path: vec!["B".into()],
                level: 1,
                start: 16,
                end: text.len(),
            },
        ];
        let chunks = chunk_document(&doc(text, sections, vec![]), ChunkOptions::default(), &estimate_tokens);
        let got: Vec<(&str, Vec<String>)> = chunks
            .iter()
            .map(|c| (c.text.as_str(), c.location.heading_path.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("# A\nalpha text.", vec!["A".to_string()]),
                ("# B\nbeta text.", vec!["B".to_string()])
            ]
        );
    }

    #[test]
    fn chunks_end_at_paragraph_breaks_when_one_is_close() {
        // Two paragraphs of ~100 tokens each and a limit of 150: the first chunk
        // must end at the paragraph break, not mid-paragraph.
        let para = |w: &str| {
            (0..10)
                .map(|_| format!("{}.", words(10, w)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let text = format!("{}\n\n{}", para("aaaa"), para("bbbb"));
        let options = ChunkOptions {
            max_tokens: 150,
            overlap_tokens: 0,
        };
        let chunks = chunk_document(&doc(&text, vec![], vec![]), options, &estimate_tokens);
        assert_eq!(chunks.len(), 2);
        assert!(!chunks[0].text.contains("bbbb"));
        assert!(!chunks[1].text.contains("aaaa"));
    }

    #[test]
    fn consecutive_chunks_overlap_by_whole_sentences_within_the_budget() {
        let text = (0..60)
            .map(|i| format!("Sentence number{i} here."))
            .collect::<Vec<_>>()
            .join(" ");
        let options = ChunkOptions {
            max_tokens: 128,
            overlap_tokens: 32,
        };
        let chunks = chunk_document(&doc(&text, vec![], vec![]), options, &estimate_tokens);
        assert!(chunks.len() > 2);
        for pair in chunks.windows(2) {
            assert!(
                pair[1].location.start < pair[0].location.end,
                "no overlap between {pair:?}"
            );
            let shared = estimate_tokens(&text[pair[1].location.start..pair[0].location.end]);
            assert!(shared <= 32, "overlap of {shared} tokens");
            assert!(pair[1].location.end > pair[0].location.end, "no progress");
        }
    }

    #[test]
    fn page_ranges_follow_the_pages_a_chunk_touches() {
        let page1 = words(100, "first.");
        let page2 = words(100, "second.");
        let text = format!("{page1}\n\n{page2}");
        let pages = vec![
            Page {
                number: 1,
                start: 0,
                end: page1.len(),
            },
            Page {
                number: 2,
                start: page1.len() + 2,
                end: text.len(),
            },
        ];
        let options = ChunkOptions {
            max_tokens: 600,
            overlap_tokens: 0,
        };
        let one = chunk_document(&doc(&text, vec![], pages.clone()), options, &estimate_tokens);
        assert_eq!(one[0].location.pages, Some((1, 2)));
        let options = ChunkOptions {
            max_tokens: 200,
            overlap_tokens: 0,
        };
        let two = chunk_document(&doc(&text, vec![], pages), options, &estimate_tokens);
        assert_eq!(two.first().unwrap().location.pages, Some((1, 1)));
        assert_eq!(two.last().unwrap().location.pages, Some((2, 2)));
    }

    fn arbitrary_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z]{1,12}",
            "[A-Z][a-z]{0,8}\\.",
            Just("\n\n".to_string()),
            Just("\n".to_string()),
            Just(" ".to_string()),
            "[日本語テキスト]{1,5}",
            "[a-zA-Z0-9]{50,900}",
            "[,;:!?()-]",
            Just("# Heading\n".to_string()),
        ];
        proptest::collection::vec(piece, 0..400).prop_map(|parts| parts.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn no_text_is_lost_and_no_chunk_exceeds_its_limit(
            text in arbitrary_text(),
            max_tokens in 128usize..600,
            overlap_percent in 0usize..50,
        ) {
            // A blank file is refused before chunking (load's own test covers it).
            prop_assume!(!text.trim().is_empty());
            let options = ChunkOptions { max_tokens, overlap_tokens: max_tokens * overlap_percent / 100 };
            let loaded = crate::load::load_bytes(Format::Markdown, text.as_bytes(), "/t.md", &LoadOptions::default());
            let document = loaded.unwrap().documents.remove(0);
            let chunks = chunk_document(&document, options, &estimate_tokens);
            let mut covered = vec![false; text.len()];
            for (i, chunk) in chunks.iter().enumerate() {
                prop_assert_eq!(chunk.id.ordinal as usize, i);
                prop_assert_eq!(&text[chunk.location.start..chunk.location.end], chunk.text.as_str());
                prop_assert!(estimate_tokens(&chunk.text) <= max_tokens, "chunk {} has {} tokens", i, estimate_tokens(&chunk.text));
                prop_assert_eq!(chunk.location.char_start, text[..chunk.location.start].chars().count());
                prop_assert_eq!(chunk.location.char_end, text[..chunk.location.end].chars().count());
                covered[chunk.location.start..chunk.location.end].iter_mut().for_each(|c| *c = true);
            }
            for (offset, c) in text.char_indices() {
                prop_assert!(c.is_whitespace() || covered[offset], "lost {:?} at byte {}", c, offset);
            }
        }
    }
}
