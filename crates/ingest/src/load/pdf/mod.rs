//! PDF: the text of each page, with page numbers kept so that an answer can
//! cite "page 12".
//!
//! The file is parsed once with `lopdf`; `pdf-extract` then lays out each
//! page's text. Both are parsers of untrusted input that can panic on broken
//! files, so every call into them is fenced with `catch_unwind`: a damaged
//! file must become a clear error, never a crash of the whole ingest run.

mod damage;
mod page;
mod repair;

use std::panic::catch_unwind;

use knowhow_core::{Metadata, Page};
use lopdf::{Dictionary, Document, Object, ObjectId};

use super::{Extracted, LoadError};
use damage::has_damaged_content;
use page::{clean, page_text, prepare_page};
use repair::with_rebuilt_xref;

const ENCRYPTED: &str = "encrypted PDF (password-protected): not supported; \
     save an unprotected copy (print to PDF, or qpdf --decrypt) and load that";

pub(crate) fn load(bytes: &[u8]) -> Result<Extracted, LoadError> {
    let (mut document, repaired) = parse(bytes)?;
    // lopdf opens files whose user password is empty (owner-password-only
    // "protection") by itself and removes /Encrypt; one still carrying it
    // needs a password we do not have.
    if document.trailer.get(b"Encrypt").is_ok() {
        return Err(LoadError::new(ENCRYPTED));
    }
    let page_ids: Vec<(u32, ObjectId)> = document.get_pages().into_iter().collect();
    if page_ids.is_empty() {
        return Err(LoadError::new("corrupted PDF: it has no pages"));
    }
    if let Some(&(number, _)) = page_ids.iter().find(|(_, id)| has_damaged_content(&document, *id)) {
        return Err(LoadError::new(format!(
            "corrupted PDF: the content of page {number} is damaged (its compressed data fails \
             its checksum); re-export or re-download the file and load it again"
        )));
    }

    let mut text = String::new();
    let mut pages = Vec::with_capacity(page_ids.len());
    let mut unreadable = Vec::new();
    let mut first_failure = None;
    let mut shows_text = false;
    for (index, &(number, page_id)) in page_ids.iter().enumerate() {
        shows_text |= prepare_page(&mut document, page_id);
        let page_text = match page_text(&document, number) {
            Ok(page_text) => clean(&page_text),
            Err(why) => {
                first_failure.get_or_insert(why);
                unreadable.push(number);
                String::new()
            }
        };
        if !page_text.is_empty() && !text.is_empty() {
            text.push_str("\n\n");
        }
        let start = text.len();
        text.push_str(&page_text);
        pages.push(Page {
            number: u32::try_from(index + 1).unwrap_or(u32::MAX),
            start,
            end: text.len(),
        });
    }

    if text.is_empty() {
        return Err(LoadError::new(match first_failure {
            Some(why) => format!("corrupted PDF: no page could be read ({why})"),
            None if shows_text => "PDF text cannot be extracted: its fonts have no Unicode mapping \
                 (common in older CJK PDFs); convert it with a tool that can (e.g. pdftotext) \
                 and load the text"
                .to_string(),
            None => "PDF has no extractable text (probably scanned images); \
                     run OCR on it first (e.g. ocrmypdf), then load the result"
                .to_string(),
        }));
    }

    let info = info_dictionary(&document);
    let info_text = |key: &[u8]| {
        info.and_then(|info| info.get(key).ok())
            .and_then(|value| lopdf::decode_text_string(value).ok())
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
    };
    let mut metadata = Metadata::new();
    metadata.insert("page_count".into(), pages.len().into());
    if let Some(author) = info_text(b"Author") {
        metadata.insert("author".into(), author.into());
    }
    if !unreadable.is_empty() {
        metadata.insert("unreadable_pages".into(), unreadable.into());
    }
    if repaired {
        metadata.insert("repaired".into(), "cross-reference table rebuilt".into());
    }
    Ok(Extracted {
        title: info_text(b"Title").unwrap_or_default(),
        text,
        sections: Vec::new(),
        pages,
        metadata,
    })
}

/// Parses the file's object structure, telling a locked file from a broken
/// one. A file whose cross-reference table is missing or wrong (hand-made
/// and truncated files, careless writers) is parsed again with a table
/// rebuilt from its objects, as PDF viewers do; the flag says so.
fn parse(bytes: &[u8]) -> Result<(Document, bool), LoadError> {
    let error = match try_parse(bytes)? {
        Ok(document) => return Ok((document, false)),
        Err(error) => error,
    };
    let rebuilt = catch_unwind(|| with_rebuilt_xref(bytes)).ok().flatten();
    if let Some(Ok(document)) = rebuilt.map(|rebuilt| try_parse(&rebuilt)).transpose()? {
        return Ok((document, true));
    }
    Err(LoadError::new(format!("corrupted PDF: {error}")))
}

/// lopdf's verdict on a file: a document, a parse error to report if no
/// repair works, or (as the outer error) a refusal that no repair changes.
fn try_parse(bytes: &[u8]) -> Result<Result<Document, String>, LoadError> {
    match catch_unwind(|| Document::load_mem(bytes)) {
        Ok(Ok(document)) => Ok(Ok(document)),
        Ok(Err(
            lopdf::Error::Decryption(_) | lopdf::Error::InvalidPassword | lopdf::Error::UnsupportedSecurityHandler(_),
        )) => Err(LoadError::new(ENCRYPTED)),
        Ok(Err(e)) => Ok(Err(e.to_string())),
        Err(_) => Ok(Err("its structure cannot be parsed".to_string())),
    }
}

/// The document information dictionary (/Info), where titles and authors live.
fn info_dictionary(document: &Document) -> Option<&Dictionary> {
    match document.trailer.get(b"Info").ok()? {
        Object::Reference(id) => document.get_dictionary(*id).ok(),
        Object::Dictionary(info) => Some(info),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
