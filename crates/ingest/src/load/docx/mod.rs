//! DOCX: the WordprocessingML body as paragraphs, headings and table rows.
//!
//! A .docx is a zip of XML parts. The body (`word/document.xml`) gives the
//! text; `word/styles.xml` says which paragraph styles are headings; page
//! headers and footers (`word/header*.xml`, `word/footer*.xml`) repeat on
//! every page, so they go to metadata rather than into the text where they
//! would pollute every chunk. A zip is also a classic decompression bomb, so
//! the bytes it may expand to are capped, both as declared and as read.

mod body;
mod package;
mod styles;

use std::collections::HashMap;

use knowhow_core::Metadata;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::{Extracted, LoadError};
use body::{assemble, body_blocks};
use package::Package;
use styles::heading_styles;

pub(crate) fn load(bytes: &[u8], max_expanded_bytes: u64) -> Result<Extracted, LoadError> {
    let mut package = Package::open(bytes, max_expanded_bytes)?;
    let document = package
        .read("word/document.xml")?
        .ok_or_else(|| LoadError::new("not a Word document: the .docx has no word/document.xml"))?;
    let styles = match package.read("word/styles.xml")? {
        Some(xml) => heading_styles(&xml),
        None => HashMap::new(),
    };
    let body = body_blocks("word/document.xml", &document, &styles)?;

    let mut metadata = Metadata::new();
    for (prefix, key) in [("word/header", "headers"), ("word/footer", "footers")] {
        let mut texts = Vec::new();
        for name in package.part_names(prefix) {
            let Some(xml) = package.read(&name)? else {
                continue;
            };
            let text = body_blocks(&name, &xml, &styles)?
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
        return Err(LoadError::no_text(
            "the Word document's body holds only images, empty tables or blank paragraphs",
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
mod tests;
