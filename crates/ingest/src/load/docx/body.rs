//! The text of a body, header or footer part: its paragraphs and table rows
//! as blocks, then the blocks as text and sections.

use std::collections::HashMap;

use knowhow_core::Section;
use quick_xml::events::Event;
use quick_xml::Reader;

use super::styles::{default_style_kind, StyleKind};
use super::{attr, local};
use crate::load::nesting::{too_deep, MAX_NESTING_DEPTH};
use crate::load::LoadError;

/// One paragraph or table row of the body.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Block {
    pub(super) text: String,
    /// Heading level, 1 for the top level.
    pub(super) level: Option<u8>,
    /// Set in the Title style.
    pub(super) title: bool,
}

/// An open table: its current row's finished cells and the cell being read.
#[derive(Default)]
struct Table {
    cells: Vec<String>,
    cell: String,
}

/// Paragraphs and table rows of a body, header or footer part, in order.
///
/// Text is the `w:t` runs; `w:tab` is a space and `w:br`/`w:cr` a line break.
/// Deleted text (`w:delText`), field codes (`w:instrText`) and the fallback
/// copy of alternate content (`mc:Fallback`, a duplicate of `mc:Choice`)
/// are skipped. A table row is one block, its cells joined by " | "; a table
/// inside a cell becomes part of that cell's text. A part nested deeper than
/// [`MAX_NESTING_DEPTH`] is refused: each level of nested paragraphs or
/// tables copies the text inside it once more.
pub(super) fn body_blocks(part: &str, xml: &str, styles: &HashMap<String, StyleKind>) -> Result<Vec<Block>, LoadError> {
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    let mut blocks = Vec::new();
    let mut tables: Vec<Table> = Vec::new();
    // The paragraph being read (paragraphs nest through text boxes).
    let mut paragraphs: Vec<(String, StyleKind)> = Vec::new();
    let mut in_text = false;
    let mut skip_depth = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| {
            LoadError::new(format!(
                "damaged .docx: its XML is malformed near byte {}: {e}",
                reader.buffer_position()
            ))
        })?;
        match event {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING_DEPTH {
            let at = format!("at byte {}", reader.buffer_position());
            return Err(too_deep(part, &at));
        }
        if skip_depth > 0 {
            match event {
                Event::Start(_) => skip_depth += 1,
                Event::End(_) => skip_depth -= 1,
                Event::Eof => break,
                _ => {}
            }
            continue;
        }
        match event {
            Event::Start(e) => match local(&e) {
                "Fallback" | "delText" | "instrText" | "del" => skip_depth = 1,
                "p" => paragraphs.push((String::new(), StyleKind::default())),
                "t" => in_text = true,
                "tbl" => tables.push(Table::default()),
                "tc" => {
                    if let Some(table) = tables.last_mut() {
                        table.cell.clear();
                    }
                }
                _ => {}
            },
            Event::Empty(e) => match local(&e) {
                "pStyle" => {
                    if let (Some(paragraph), Some(id)) = (paragraphs.last_mut(), attr(&e, "val")) {
                        let kind = styles.get(&id).copied().unwrap_or_else(|| {
                            if styles.is_empty() {
                                default_style_kind(&id)
                            } else {
                                StyleKind::default()
                            }
                        });
                        paragraph.1 = StyleKind {
                            level: paragraph.1.level.or(kind.level),
                            title: kind.title,
                        };
                    }
                }
                "outlineLvl" => {
                    if let (Some(paragraph), Some(level)) = (paragraphs.last_mut(), attr(&e, "val")) {
                        // A paragraph's own outline level wins over its style's; 9 is body text.
                        paragraph.1.level = level.parse::<u8>().ok().filter(|l| *l < 9).map(|l| l + 1);
                    }
                }
                "tab" | "ptab" => push_to(&mut paragraphs, " "),
                "br" | "cr" => push_to(&mut paragraphs, "\n"),
                _ => {}
            },
            Event::Text(e) if in_text => push_to(&mut paragraphs, &e.xml10_content()),
            Event::CData(e) if in_text => push_to(&mut paragraphs, &e.xml10_content()),
            Event::GeneralRef(e) if in_text => {
                let resolved = match e.resolve_char_ref() {
                    Ok(Some(c)) => Some(c.to_string()),
                    _ => quick_xml::escape::resolve_predefined_entity(&e.xml10_content()).map(str::to_string),
                };
                if let Some(text) = resolved {
                    push_to(&mut paragraphs, &text);
                }
            }
            Event::End(e) => match e.local_name().into_inner() {
                "t" => in_text = false,
                "p" => {
                    let Some((text, kind)) = paragraphs.pop() else {
                        continue;
                    };
                    let text = tidy(&text);
                    if text.is_empty() {
                        continue;
                    }
                    if let Some(outer) = paragraphs.last_mut() {
                        // A text box: its text joins the paragraph that anchors it.
                        push_separated(&mut outer.0, &text, " ");
                    } else if let Some(table) = tables.last_mut() {
                        push_separated(&mut table.cell, &text, " ");
                    } else {
                        blocks.push(Block {
                            text,
                            level: kind.level,
                            title: kind.title,
                        });
                    }
                }
                "tc" => {
                    if let Some(table) = tables.last_mut() {
                        let cell = std::mem::take(&mut table.cell).replace('\n', " ");
                        table.cells.push(cell);
                    }
                }
                "tr" => {
                    let Some(table) = tables.last_mut() else {
                        continue;
                    };
                    let cells = std::mem::take(&mut table.cells);
                    if cells.iter().all(String::is_empty) {
                        continue;
                    }
                    let row = cells.join(" | ");
                    match tables.len() {
                        1 => blocks.push(Block {
                            text: row,
                            level: None,
                            title: false,
                        }),
                        depth => push_separated(&mut tables[depth - 2].cell, &row, "; "),
                    }
                }
                "tbl" => {
                    tables.pop();
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(blocks)
}

fn push_to(paragraphs: &mut [(String, StyleKind)], text: &str) {
    if let Some((paragraph, _)) = paragraphs.last_mut() {
        paragraph.push_str(text);
    }
}

fn push_separated(target: &mut String, text: &str, separator: &str) {
    if !target.is_empty() {
        target.push_str(separator);
    }
    target.push_str(text);
}

/// A paragraph's text with each line's whitespace collapsed and blank lines
/// dropped, so no paragraph contains a paragraph break.
fn tidy(text: &str) -> String {
    text.split('\n')
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text and sections: blocks separated by blank lines; each heading opens
/// a section that runs to the next heading.
pub(super) fn assemble(blocks: &[Block]) -> (String, Vec<Section>) {
    let mut text = String::new();
    let mut sections: Vec<Section> = Vec::new();
    let mut path: Vec<(u8, String)> = Vec::new();
    for block in blocks {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        let start = text.len();
        text.push_str(&block.text);
        if let Some(level) = block.level {
            if let Some(previous) = sections.last_mut() {
                previous.end = start;
            }
            let heading = block.text.replace('\n', " ");
            path.retain(|(open, _)| *open < level);
            path.push((level, heading));
            sections.push(Section {
                heading_path: path.iter().map(|(_, t)| t.clone()).collect(),
                level,
                start,
                end: text.len(),
            });
        }
    }
    if let Some(last) = sections.last_mut() {
        last.end = text.len();
    }
    (text, sections)
}
