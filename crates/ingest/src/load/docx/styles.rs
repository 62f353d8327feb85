//! Which paragraph styles are headings (`word/styles.xml`).

use std::collections::HashMap;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::{attr, local};

/// How a paragraph style reads: its heading level, and whether it is Title.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct StyleKind {
    pub(super) level: Option<u8>,
    pub(super) title: bool,
}

/// Paragraph styles that are headings, by style id. A style is a heading by
/// its name ("heading 1".."heading 9", "Title": names are the same in every
/// language of Word, ids are not), by its outline level, or by inheriting
/// either from the style it is based on.
pub(super) fn heading_styles(xml: &str) -> HashMap<String, StyleKind> {
    struct Style {
        name: String,
        outline: Option<u8>,
        based_on: Option<String>,
    }
    let mut styles: HashMap<String, Style> = HashMap::new();
    let mut reader = Reader::from_str(xml);
    let mut current: Option<(String, Style)> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => match local(&e) {
                "style" => {
                    let paragraph = attr(&e, "type").is_none_or(|t| t == "paragraph");
                    current = attr(&e, "styleId").filter(|_| paragraph).map(|id| {
                        let style = Style {
                            name: String::new(),
                            outline: None,
                            based_on: None,
                        };
                        (id, style)
                    });
                }
                "name" => {
                    if let Some((_, style)) = current.as_mut() {
                        style.name = attr(&e, "val").unwrap_or_default().to_lowercase();
                    }
                }
                "basedOn" => {
                    if let Some((_, style)) = current.as_mut() {
                        style.based_on = attr(&e, "val");
                    }
                }
                "outlineLvl" => {
                    if let Some((_, style)) = current.as_mut() {
                        style.outline = attr(&e, "val").and_then(|v| v.parse().ok());
                    }
                }
                _ => {}
            },
            Ok(Event::End(e)) if e.local_name().into_inner() == "style" => {
                if let Some((id, style)) = current.take() {
                    styles.insert(id, style);
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }

    let own_kind = |style: &Style| -> Option<StyleKind> {
        if style.name == "title" {
            return Some(StyleKind {
                level: Some(1),
                title: true,
            });
        }
        let named = style
            .name
            .strip_prefix("heading ")
            .and_then(|n| n.trim().parse::<u8>().ok())
            .filter(|n| (1..=9).contains(n));
        let outlined = style.outline.filter(|l| *l < 9).map(|l| l + 1);
        named.or(outlined).map(|level| StyleKind {
            level: Some(level),
            title: false,
        })
    };
    let mut kinds = HashMap::new();
    for id in styles.keys() {
        let mut next = Some(id);
        // The depth bound stops a basedOn cycle.
        for _ in 0..16 {
            let Some(style) = next.and_then(|id| styles.get(id)) else {
                break;
            };
            if let Some(kind) = own_kind(style) {
                kinds.insert(id.clone(), kind);
                break;
            }
            next = style.based_on.as_ref();
        }
    }
    kinds
}

/// Style ids Word gives headings in English, for documents without styles.xml.
pub(super) fn default_style_kind(id: &str) -> StyleKind {
    if id == "Title" {
        return StyleKind {
            level: Some(1),
            title: true,
        };
    }
    let level = id
        .strip_prefix("Heading")
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| (1..=9).contains(n));
    StyleKind { level, title: false }
}
