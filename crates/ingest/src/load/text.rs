//! Plain text and Markdown. The document text is the file's text, unchanged,
//! so chunk spans point into exactly what the user wrote.

use knowhow_core::Section;

use super::{Extracted, LoadError, Remedy};

/// Decodes text that must be UTF-8 unless the caller names an encoding.
///
/// A UTF-8 or UTF-16 byte-order mark is honoured. Anything else that is not
/// valid UTF-8 is an error naming the offset of the first bad byte and the
/// encoding it most likely is: decoding it by guess could silently mangle it.
pub(crate) fn decode(bytes: &[u8], encoding: Option<&'static encoding_rs::Encoding>) -> Result<String, LoadError> {
    if let Some(encoding) = encoding {
        let (text, _, had_errors) = encoding.decode(bytes);
        if had_errors {
            return Err(LoadError::new(format!(
                "not valid {}: some bytes cannot be decoded",
                encoding.name()
            )));
        }
        return Ok(text.into_owned());
    }
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        if had_errors {
            return Err(LoadError::new(format!(
                "starts with a {} byte-order mark but is not valid {}",
                encoding.name(),
                encoding.name()
            )));
        }
        return Ok(text.into_owned());
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_string()),
        Err(e) => {
            let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Allow);
            detector.feed(bytes, true);
            let guess = detector.guess(None, chardetng::Utf8Detection::Allow);
            Err(LoadError {
                message: format!(
                    "not UTF-8 (invalid byte at offset {}; it looks like {}): convert it, or name its encoding",
                    e.valid_up_to(),
                    guess.name(),
                ),
                remedy: Some(Remedy::Encoding(guess.name().to_string())),
            })
        }
    }
}

pub(crate) fn load_text(
    bytes: &[u8],
    encoding: Option<&'static encoding_rs::Encoding>,
) -> Result<Extracted, LoadError> {
    let text = decode(bytes, encoding)?;
    Ok(Extracted {
        text,
        ..Extracted::default()
    })
}

/// Markdown: the title is the first level-1 heading (or YAML `title:`), and
/// each ATX (`# x`) or setext (`x\n===`) heading opens a section that runs to
/// the next heading of any level. Headings inside fenced code do not count.
pub(crate) fn load_markdown(
    bytes: &[u8],
    encoding: Option<&'static encoding_rs::Encoding>,
) -> Result<Extracted, LoadError> {
    let text = decode(bytes, encoding)?;
    let headings = markdown_headings(&text);
    let mut sections = Vec::with_capacity(headings.len());
    let mut path: Vec<(u8, String)> = Vec::new();
    for (i, heading) in headings.iter().enumerate() {
        path.retain(|(level, _)| *level < heading.level);
        path.push((heading.level, heading.title.clone()));
        let end = headings.get(i + 1).map_or(text.len(), |next| next.start);
        sections.push(Section {
            heading_path: path.iter().map(|(_, t)| t.clone()).collect(),
            level: heading.level,
            start: heading.start,
            end,
        });
    }
    let title = headings
        .iter()
        .find(|h| h.level == 1)
        .map(|h| h.title.clone())
        .or_else(|| front_matter_title(&text))
        .unwrap_or_default();
    Ok(Extracted {
        title,
        text,
        sections,
        ..Extracted::default()
    })
}

struct Heading {
    level: u8,
    title: String,
    /// Byte offset of the heading's first line.
    start: usize,
}

fn markdown_headings(text: &str) -> Vec<Heading> {
    let mut headings = Vec::new();
    let mut fence: Option<&str> = None;
    let mut previous: Option<(usize, &str)> = None;
    let mut offset = front_matter_len(text);
    for raw_line in text[offset..].split_inclusive('\n') {
        let line = raw_line.trim_end_matches(['\n', '\r']);
        let start = offset;
        offset += raw_line.len();
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent < 4 {
            let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
            if let Some(marker) = marker {
                fence = match fence {
                    None => Some(marker),
                    Some(open) if open == marker => None,
                    Some(open) => Some(open),
                };
                previous = None;
                continue;
            }
        }
        if fence.is_some() {
            continue;
        }
        if indent < 4 {
            if let Some(heading) = atx_heading(trimmed, start) {
                headings.push(heading);
                previous = None;
                continue;
            }
            if let Some((prev_start, prev_line)) = previous {
                let underline = trimmed.trim_end();
                let level = if !underline.is_empty() && underline.chars().all(|c| c == '=') {
                    Some(1)
                } else if underline.len() >= 2 && underline.chars().all(|c| c == '-') {
                    Some(2)
                } else {
                    None
                };
                if let Some(level) = level {
                    headings.push(Heading {
                        level,
                        title: prev_line.trim().to_string(),
                        start: prev_start,
                    });
                    previous = None;
                    continue;
                }
            }
        }
        previous = if trimmed.is_empty() { None } else { Some((start, line)) };
    }
    headings
}

fn atx_heading(trimmed: &str, start: usize) -> Option<Heading> {
    let hashes = trimmed.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let rest = &trimmed[hashes..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim_end().to_string();
    Some(Heading {
        level: hashes as u8,
        title,
        start,
    })
}

/// Length of a YAML front-matter block (`---` lines around it) at the very
/// start of the text, or 0.
fn front_matter_len(text: &str) -> usize {
    let Some(body) = text.strip_prefix("---\n") else {
        return 0;
    };
    match body.find("\n---") {
        Some(end) => {
            let close = 4 + end + 4;
            close + text[close..].find('\n').map_or(text.len() - close, |i| i + 1)
        }
        None => 0,
    }
}

fn front_matter_title(text: &str) -> Option<String> {
    let len = front_matter_len(text);
    if len == 0 {
        return None;
    }
    text[4..len].lines().find_map(|line| {
        let value = line.strip_prefix("title:")?.trim().trim_matches(['"', '\'']);
        (!value.is_empty()).then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_sections_follow_the_heading_tree_and_skip_code_fences() {
        let md = "intro\n# Guide\ntext\n## Install\n```\n# not a heading\n```\nsteps\nLinux\n-----\nmore\n# API\nend\n";
        let doc = load_markdown(md.as_bytes(), None).unwrap();
        assert_eq!(doc.title, "Guide");
        let paths: Vec<Vec<String>> = doc.sections.iter().map(|s| s.heading_path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                vec!["Guide".to_string()],
                vec!["Guide".to_string(), "Install".to_string()],
                vec!["Guide".to_string(), "Linux".to_string()],
                vec!["API".to_string()],
            ]
        );
        // Sections tile the text from the first heading to the end.
        assert_eq!(&md[doc.sections[0].start..doc.sections[0].start + 7], "# Guide");
        for pair in doc.sections.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert_eq!(doc.sections.last().unwrap().end, md.len());
        assert!(md[doc.sections[2].start..].starts_with("Linux\n---"));
    }

    #[test]
    fn text_that_is_not_utf8_is_reported_with_offset_and_a_guess() {
        let latin1 = b"caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve fa\xe7ade";
        let err = load_text(latin1, None).unwrap_err();
        assert!(err.message.contains("not UTF-8"), "{err}");
        assert!(err.message.contains("offset 3"), "{err}");
        assert!(matches!(err.remedy, Some(Remedy::Encoding(_))), "{err}");
        let decoded = load_text(latin1, Some(encoding_rs::WINDOWS_1252)).unwrap();
        assert!(decoded.text.starts_with("café crème"));
    }

    #[test]
    fn utf16_with_a_byte_order_mark_is_decoded() {
        let mut bytes = vec![0xFF, 0xFE];
        for unit in "héllo".encode_utf16() {
            bytes.extend(unit.to_le_bytes());
        }
        assert_eq!(load_text(&bytes, None).unwrap().text, "héllo");
    }

    #[test]
    fn front_matter_gives_a_title_when_no_h1_exists() {
        let doc = load_markdown(b"---\ntitle: \"Policies\"\n---\n## Leave\nx\n", None).unwrap();
        assert_eq!(doc.title, "Policies");
        assert_eq!(doc.sections[0].heading_path, vec!["Leave".to_string()]);
    }
}
