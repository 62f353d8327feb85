//! Citation markers in an answer: `[1]`, `[2, 3]`, `[1][2]`, `[1-3]`, and the
//! `[Source 2]` some models write.
//!
//! Markers that name no given source are the model's inventions: they are
//! removed from the text (a marker keeps its valid numbers) and reported, so
//! a reader never follows a citation to nothing.

use std::ops::Range;

use serde::Serialize;

/// A citation marker found in a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Byte range of the whole marker, brackets included.
    pub span: Range<usize>,
    /// The numbers it names, in order, ranges expanded.
    pub numbers: Vec<usize>,
}

/// One citation of the checked answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Citation {
    /// The source number.
    pub number: usize,
    /// Byte range of its marker in the checked answer text.
    pub start: usize,
    pub end: usize,
}

/// An answer with its citations checked against the sources given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The answer, markers naming no source removed.
    pub text: String,
    pub citations: Vec<Citation>,
    /// Numbers cited that name no source, in order of appearance.
    pub invalid: Vec<usize>,
    /// The valid source numbers cited, ascending, each once.
    pub cited: Vec<usize>,
}

/// The widest range a marker may name (`[1-40]` is not a citation).
const MAX_RANGE: usize = 20;

/// Every citation marker in `text`, in order.
pub fn parse_markers(text: &str) -> Vec<Marker> {
    let mut markers = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find('[').map(|i| from + i) {
        let Some(close) = text[open..].find(']').map(|i| open + i) else {
            break;
        };
        match parse_inside(&text[open + 1..close]) {
            Some(numbers) => {
                markers.push(Marker {
                    span: open..close + 1,
                    numbers,
                });
                from = close + 1;
            }
            // A bracket that is not a marker may contain one: `[see [2]]`.
            None => from = open + 1,
        }
    }
    markers
}

/// The numbers of a marker's inside (`2, 3`, `1-3`, `Source 2`), `None` when
/// it is not a marker.
fn parse_inside(inside: &str) -> Option<Vec<usize>> {
    let trimmed = inside.trim();
    let lower = trimmed.to_ascii_lowercase();
    let list = ["sources", "source"]
        .iter()
        .find_map(|prefix| lower.strip_prefix(prefix))
        .map_or(trimmed, |rest| &trimmed[trimmed.len() - rest.len()..]);
    let mut numbers = Vec::new();
    for part in list.split([',', ';']) {
        let part = part.trim();
        match part.split_once(['-', '–']) {
            Some((low, high)) => {
                let (low, high) = (number(low)?, number(high)?);
                if high < low || high - low > MAX_RANGE {
                    return None;
                }
                numbers.extend(low..=high);
            }
            None => numbers.push(number(part)?),
        }
    }
    Some(numbers)
}

fn number(text: &str) -> Option<usize> {
    let text = text.trim();
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Checks `text`'s markers against sources numbered `1..=sources`: markers
/// keep their valid numbers (rewritten as `[1, 2]` when some were dropped),
/// markers with none are removed with the space before them.
pub fn check(text: &str, sources: usize) -> Checked {
    let mut out = String::with_capacity(text.len());
    let mut citations = Vec::new();
    let mut invalid = Vec::new();
    let mut last = 0;
    for marker in parse_markers(text) {
        out.push_str(&text[last..marker.span.start]);
        last = marker.span.end;
        let (valid, wrong): (Vec<usize>, Vec<usize>) =
            marker.numbers.iter().partition(|&&n| (1..=sources).contains(&n));
        invalid.extend(wrong.iter().copied());
        if valid.is_empty() {
            let kept = out.trim_end_matches([' ', '\t']).len();
            out.truncate(kept);
            continue;
        }
        let start = out.len();
        if wrong.is_empty() {
            out.push_str(&text[marker.span.clone()]);
        } else {
            let list: Vec<String> = valid.iter().map(usize::to_string).collect();
            out.push_str(&format!("[{}]", list.join(", ")));
        }
        let end = out.len();
        citations.extend(valid.into_iter().map(|number| Citation { number, start, end }));
    }
    out.push_str(&text[last..]);
    let mut cited: Vec<usize> = citations.iter().map(|c| c.number).collect();
    cited.sort_unstable();
    cited.dedup();
    Checked {
        text: out,
        citations,
        invalid,
        cited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(text: &str) -> Vec<Vec<usize>> {
        parse_markers(text).into_iter().map(|m| m.numbers).collect()
    }

    #[test]
    fn parses_single_lists_runs_ranges_and_source_words() {
        assert_eq!(numbers("Paris [1]."), [vec![1]]);
        assert_eq!(numbers("Paris [2, 3] and [4,5]"), [vec![2, 3], vec![4, 5]]);
        assert_eq!(numbers("Paris [1][2]."), [vec![1], vec![2]]);
        assert_eq!(numbers("Paris [1-3]"), [vec![1, 2, 3]]);
        assert_eq!(numbers("Paris [Source 2] [sources 1; 4]"), [vec![2], vec![1, 4]]);
        let text = "x [12] y";
        assert_eq!(parse_markers(text)[0].span, 2..6);
    }

    #[test]
    fn ignores_brackets_that_are_not_markers() {
        assert!(numbers("a [link](http://x) [b] [1a] [] [1-99] [12345]").is_empty());
        assert_eq!(numbers("see [note [2]]"), [vec![2]]);
        assert!(numbers("unclosed [1").is_empty());
    }

    #[test]
    fn invalid_markers_are_removed_and_reported() {
        let checked = check(
            "Paris is the capital [1]. It has 2M people [7]. Lyon is big [2, 9][3].",
            3,
        );
        assert_eq!(
            checked.text,
            "Paris is the capital [1]. It has 2M people. Lyon is big [2][3]."
        );
        assert_eq!(checked.invalid, [7, 9]);
        assert_eq!(checked.cited, [1, 2, 3]);
        let numbers: Vec<usize> = checked.citations.iter().map(|c| c.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        for citation in &checked.citations {
            let marker = &checked.text[citation.start..citation.end];
            assert!(marker.contains(&citation.number.to_string()), "{marker}");
        }
    }

    #[test]
    fn an_answer_without_markers_cites_nothing() {
        let checked = check("No markers here.", 2);
        assert_eq!(checked.text, "No markers here.");
        assert!(checked.cited.is_empty() && checked.invalid.is_empty());
    }
}
