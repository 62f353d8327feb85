//! DOCX: the WordprocessingML body as paragraphs, headings and table rows.
//!
//! A .docx is a zip of XML parts. The body (`word/document.xml`) gives the
//! text; `word/styles.xml` says which paragraph styles are headings; page
//! headers and footers (`word/header*.xml`, `word/footer*.xml`) repeat on
//! every page, so they go to metadata rather than into the text where they
//! would pollute every chunk. A zip is also a classic decompression bomb, so
//! the bytes it may expand to are capped, both as declared and as read.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use knowhow_core::{Metadata, Section};
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use zip::ZipArchive;

use super::{Extracted, LoadError};

pub(crate) fn load(bytes: &[u8], max_expanded_bytes: u64) -> Result<Extracted, LoadError> {
    let mut package = Package::open(bytes, max_expanded_bytes)?;
    let document = package
        .read("word/document.xml")?
        .ok_or_else(|| LoadError::new("not a Word document: the .docx has no word/document.xml"))?;
    let styles = match package.read("word/styles.xml")? {
        Some(xml) => heading_styles(&xml),
        None => HashMap::new(),
    };
    let body = body_blocks(&document, &styles)?;

    let mut metadata = Metadata::new();
    for (prefix, key) in [("word/header", "headers"), ("word/footer", "footers")] {
        let mut texts = Vec::new();
        for name in package.part_names(prefix) {
            let Some(xml) = package.read(&name)? else {
                continue;
            };
            let text = body_blocks(&xml, &styles)?
                .into_iter()
                .map(|block| block.text)
                .collect::<Vec<_>>()
                .join("\n");
            if !text.is_empty() && !texts.contains(&text) {
                texts.push(text);
            }
        }
        if !texts.is_empty() {
            metadata.insert(key.into(), texts.into());
        }
    }
    let core = match package.read("docProps/core.xml")? {
        Some(xml) => core_properties(&xml),
        None => HashMap::new(),
    };
    if let Some(author) = core.get("creator") {
        metadata.insert("author".into(), author.clone().into());
    }

    let (text, sections) = assemble(&body);
    if text.is_empty() {
        return Err(LoadError::new(
            "the Word document has no text in its body (only images, empty tables or blank \
             paragraphs); there is nothing to index",
        ));
    }
    let title = core
        .get("title")
        .cloned()
        .or_else(|| {
            let first_heading = body
                .iter()
                .find(|b| b.title)
                .or_else(|| body.iter().find(|b| b.level.is_some()));
            first_heading.map(|b| b.text.clone())
        })
        .unwrap_or_default();
    Ok(Extracted {
        title,
        text,
        sections,
        pages: Vec::new(),
        metadata,
    })
}

/// The zip archive, with what may still be expanded from it.
struct Package<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    budget: u64,
    limit: u64,
}

impl<'a> Package<'a> {
    /// Opens the archive and refuses it at once if its entries declare more
    /// than `limit` bytes in all.
    fn open(bytes: &'a [u8], limit: u64) -> Result<Package<'a>, LoadError> {
        let mut archive = ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| LoadError::new(format!("not a valid .docx (it is not a readable zip archive: {e})")))?;
        let mut declared = 0u64;
        for index in 0..archive.len() {
            let size = archive
                .by_index_raw(index)
                .map_err(|e| LoadError::new(format!("damaged .docx: {e}")))?
                .size();
            declared = declared.saturating_add(size);
        }
        if declared > limit {
            return Err(too_large(limit));
        }
        Ok(Package {
            archive,
            budget: limit,
            limit,
        })
    }

    /// Names of the parts starting with `prefix`, in natural order
    /// (header2 before header10).
    fn part_names(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .archive
            .file_names()
            .filter_map(Result::ok)
            .filter(|name| name.starts_with(prefix) && name.ends_with(".xml") && !name[prefix.len()..].contains('/'))
            .map(|name| name.into_owned())
            .collect();
        names.sort_by_key(|name| {
            let digits: String = name[prefix.len()..].chars().filter(char::is_ascii_digit).collect();
            (digits.parse::<u64>().unwrap_or(0), name.clone())
        });
        names
    }

    /// A part's text, or `None` if the archive has no such part. Reading
    /// stops one byte past the remaining budget: a part's declared size can
    /// lie, its expansion cannot.
    fn read(&mut self, name: &str) -> Result<Option<String>, LoadError> {
        let file = match self.archive.by_name(name) {
            Ok(file) => file,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(LoadError::new(format!("damaged .docx: cannot read {name}: {e}"))),
        };
        let mut bytes = Vec::new();
        file.take(self.budget.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| LoadError::new(format!("damaged .docx: cannot read {name}: {e}")))?;
        let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if read > self.budget {
            return Err(too_large(self.limit));
        }
        self.budget -= read;
        decode_xml(bytes)
            .map(Some)
            .map_err(|_| LoadError::new(format!("damaged .docx: {name} is not UTF-8 or UTF-16 text")))
    }
}

fn too_large(limit: u64) -> LoadError {
    LoadError::new(format!(
        "refused: the .docx would expand to more than {limit} bytes, which looks like a zip bomb; \
         if the file is trusted, raise the expansion limit"
    ))
}

/// XML parts are UTF-8, or UTF-16 with a byte-order mark.
fn decode_xml(bytes: Vec<u8>) -> Result<String, ()> {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(&bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        return if had_errors { Err(()) } else { Ok(text.into_owned()) };
    }
    String::from_utf8(bytes).map_err(|_| ())
}

/// One paragraph or table row of the body.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    text: String,
    /// Heading level, 1 for the top level.
    level: Option<u8>,
    /// Set in the Title style.
    title: bool,
}

/// How a paragraph style reads: its heading level, and whether it is Title.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct StyleKind {
    level: Option<u8>,
    title: bool,
}

/// Paragraph styles that are headings, by style id. A style is a heading by
/// its name ("heading 1".."heading 9", "Title": names are the same in every
/// language of Word, ids are not), by its outline level, or by inheriting
/// either from the style it is based on.
fn heading_styles(xml: &str) -> HashMap<String, StyleKind> {
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
fn default_style_kind(id: &str) -> StyleKind {
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
/// inside a cell becomes part of that cell's text.
fn body_blocks(xml: &str, styles: &HashMap<String, StyleKind>) -> Result<Vec<Block>, LoadError> {
    let mut reader = Reader::from_str(xml);
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
fn assemble(blocks: &[Block]) -> (String, Vec<Section>) {
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

/// `dc:title`, `dc:creator` and the like from docProps/core.xml, by local
/// name, where not empty.
fn core_properties(xml: &str) -> HashMap<String, String> {
    let mut properties = HashMap::new();
    let mut reader = Reader::from_str(xml);
    let mut current: Option<(String, String)> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => current = Some((local(&e).to_string(), String::new())),
            Ok(Event::Text(e)) => {
                if let Some((_, value)) = current.as_mut() {
                    value.push_str(&e.xml10_content());
                }
            }
            Ok(Event::GeneralRef(e)) => {
                let resolved = match e.resolve_char_ref() {
                    Ok(Some(c)) => Some(c.to_string()),
                    _ => quick_xml::escape::resolve_predefined_entity(&e.xml10_content()).map(str::to_string),
                };
                if let (Some((_, value)), Some(text)) = (current.as_mut(), resolved) {
                    value.push_str(&text);
                }
            }
            Ok(Event::End(_)) => {
                if let Some((name, value)) = current.take() {
                    let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
                    if !value.is_empty() {
                        properties.insert(name, value);
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    properties
}

/// An element's name without its namespace prefix.
fn local<'e>(e: &'e BytesStart) -> &'e str {
    e.local_name().into_inner()
}

/// An attribute's value by local name (`w:val` is found as "val").
fn attr(e: &BytesStart, name: &str) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        (a.key.local_name().into_inner() == name)
            .then(|| a.normalized_value(XmlVersion::Implicit1_0).ok().map(|v| v.into_owned()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use zip::write::SimpleFileOptions;

    use super::*;

    const W: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main""#;

    fn docx(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content) in parts {
            zip.start_file(*name, SimpleFileOptions::default()).unwrap();
            zip.write_all(content.as_bytes()).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn paragraph(style: Option<&str>, text: &str) -> String {
        let style = style.map_or(String::new(), |s| format!(r#"<w:pPr><w:pStyle w:val="{s}"/></w:pPr>"#));
        format!(r#"<w:p>{style}<w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>"#)
    }

    fn document(body: &str) -> String {
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><w:document {W}><w:body>{body}</w:body></w:document>"#)
    }

    const STYLES: &str = r#"<w:styles xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">
        <w:style w:type="paragraph" w:styleId="Titre"><w:name w:val="Title"/></w:style>
        <w:style w:type="paragraph" w:styleId="Berschrift1"><w:name w:val="heading 1"/></w:style>
        <w:style w:type="paragraph" w:styleId="Custom"><w:name w:val="My Heading"/><w:basedOn w:val="Outline2"/></w:style>
        <w:style w:type="paragraph" w:styleId="Outline2"><w:name w:val="Outline"/><w:pPr><w:outlineLvl w:val="1"/></w:pPr></w:style>
        <w:style w:type="character" w:styleId="Strong"><w:name w:val="heading 1"/></w:style>
    </w:styles>"#;

    #[test]
    fn headings_from_style_names_outline_levels_and_inheritance() {
        let body = [
            paragraph(Some("Titre"), "Handbook"),
            paragraph(None, "Intro &amp; scope"),
            paragraph(Some("Berschrift1"), "Leave"),
            paragraph(Some("Custom"), "Sick leave"),
            paragraph(None, "Call in before 9."),
        ]
        .concat();
        let bytes = docx(&[("word/document.xml", &document(&body)), ("word/styles.xml", STYLES)]);
        let doc = load(&bytes, 1 << 20).unwrap();
        assert_eq!(doc.title, "Handbook");
        assert_eq!(
            doc.text,
            "Handbook\n\nIntro & scope\n\nLeave\n\nSick leave\n\nCall in before 9."
        );
        let paths: Vec<_> = doc.sections.iter().map(|s| s.heading_path.join("/")).collect();
        assert_eq!(paths, ["Handbook", "Leave", "Leave/Sick leave"]);
        assert_eq!(doc.sections[2].level, 2);
        assert_eq!(
            &doc.text[doc.sections[2].start..doc.sections[2].end],
            "Sick leave\n\nCall in before 9."
        );
    }

    #[test]
    fn tables_become_rows_and_headers_stay_out_of_the_text() {
        let cell = |text: &str| format!("<w:tc>{}</w:tc>", paragraph(None, text));
        let table = format!(
            "<w:tbl><w:tr>{}{}</w:tr><w:tr>{}{}</w:tr></w:tbl>",
            cell("Name"),
            cell("Days"),
            cell("Annual"),
            cell("25")
        );
        let body = [paragraph(None, "Before"), table, paragraph(None, "After")].concat();
        let header = format!(r#"<w:hdr {W}>{}</w:hdr>"#, paragraph(None, "ACME confidential"));
        let footer = format!(r#"<w:ftr {W}>{}</w:ftr>"#, paragraph(None, "Page"));
        let core = r#"<cp:coreProperties xmlns:cp="c" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Policy</dc:title><dc:creator>HR</dc:creator></cp:coreProperties>"#;
        let bytes = docx(&[
            ("word/document.xml", &document(&body)),
            ("word/header1.xml", &header),
            ("word/footer1.xml", &footer),
            ("docProps/core.xml", core),
        ]);
        let doc = load(&bytes, 1 << 20).unwrap();
        assert_eq!(doc.text, "Before\n\nName | Days\n\nAnnual | 25\n\nAfter");
        assert_eq!(doc.title, "Policy");
        assert_eq!(doc.metadata["author"], "HR");
        assert_eq!(doc.metadata["headers"], serde_json::json!(["ACME confidential"]));
        assert_eq!(doc.metadata["footers"], serde_json::json!(["Page"]));
    }

    #[test]
    fn deleted_text_field_codes_and_fallbacks_are_skipped() {
        let body = r#"<w:p><w:r><w:t>kept</w:t></w:r><w:del><w:r><w:delText>gone</w:delText></w:r></w:del>
            <w:r><w:instrText>HYPERLINK x</w:instrText></w:r><w:r><w:tab/><w:t>tabbed</w:t></w:r>
            <mc:AlternateContent xmlns:mc="m"><mc:Choice><w:t xml:space="preserve"> choice</w:t></mc:Choice><mc:Fallback><w:t>fallback</w:t></mc:Fallback></mc:AlternateContent></w:p>"#;
        let doc = load(&docx(&[("word/document.xml", &document(body))]), 1 << 20).unwrap();
        assert_eq!(doc.text, "kept tabbed choice");
    }

    #[test]
    fn without_styles_english_style_ids_still_make_headings() {
        let body = [paragraph(Some("Heading2"), "Setup"), paragraph(None, "text")].concat();
        let doc = load(&docx(&[("word/document.xml", &document(&body))]), 1 << 20).unwrap();
        assert_eq!(doc.sections[0].heading_path, ["Setup"]);
        assert_eq!(doc.sections[0].level, 2);
        assert_eq!(doc.title, "Setup");
    }

    #[test]
    fn a_zip_bomb_is_refused() {
        let spaces = " ".repeat(10 << 20);
        let bytes = docx(&[("word/document.xml", &document(&spaces))]);
        assert!(bytes.len() < 100_000, "the bomb is small: {}", bytes.len());
        let err = load(&bytes, 1 << 20).unwrap_err();
        assert!(err.message.contains("zip bomb"), "{err}");
    }

    #[test]
    fn a_part_that_lies_about_its_size_is_cut_off_while_reading() {
        let body = paragraph(None, &"word ".repeat(2000));
        let bytes = docx(&[("word/document.xml", &document(&body))]);
        let mut package = Package::open(&bytes, 1 << 20).unwrap();
        package.budget = 100;
        let err = package.read("word/document.xml").unwrap_err();
        assert!(err.message.contains("zip bomb"), "{err}");
    }

    #[test]
    fn not_a_zip_and_no_document_part_are_clear_errors() {
        let err = load(b"plain text", 1 << 20).unwrap_err();
        assert!(err.message.contains("not a readable zip archive"), "{err}");
        let err = load(&docx(&[("hello.txt", "hi")]), 1 << 20).unwrap_err();
        assert!(err.message.contains("no word/document.xml"), "{err}");
    }

    #[test]
    fn malformed_xml_is_a_clear_error() {
        let err = load(
            &docx(&[("word/document.xml", "<w:document><w:body><w:p></w:body>")]),
            1 << 20,
        )
        .unwrap_err();
        assert!(err.message.contains("malformed"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = load(&bytes, 1 << 20);
        }

        #[test]
        fn never_panics_on_odd_xml(xml in "(<w:(p|t|tbl|tr|tc|br|tab|pStyle w:val=\"Heading1\")/?>|</w:(p|t|tbl|tr|tc)>|[a-z &;]{0,8}){0,60}") {
            let bytes = docx(&[("word/document.xml", &document(&xml))]);
            let _ = load(&bytes, 1 << 20);
        }
    }
}
