//! PDF: the text of each page, with page numbers kept so that an answer can
//! cite "page 12".
//!
//! The file is parsed once with `lopdf`; `pdf-extract` then lays out each
//! page's text. Both are parsers of untrusted input that can panic on broken
//! files, so every call into them is fenced with `catch_unwind`: a damaged
//! file must become a clear error, never a crash of the whole ingest run.

use std::panic::{catch_unwind, AssertUnwindSafe};

use std::collections::BTreeMap;

use knowhow_core::{Metadata, Page};
use lopdf::content::{Content, Operation};
use lopdf::{Dictionary, Document, Object, ObjectId};
use pdf_extract::PlainTextOutput;

use super::{Extracted, LoadError};

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

/// The file rewritten from the `N G obj` objects found in it, with each
/// stream's /Length set to its real length and a fresh cross-reference table
/// and trailer, or `None` when there is nothing to build one from (no
/// objects, no catalog). This is the recovery viewers do for files with a
/// missing or wrong table or lengths.
fn with_rebuilt_xref(bytes: &[u8]) -> Option<Vec<u8>> {
    let objects = scan_objects(bytes);
    let max = objects.iter().map(|o| o.number).max()?;
    // Object numbers far beyond the objects found are junk, not a table to build.
    if usize::try_from(max).ok()? > objects.len() * 16 + 1024 {
        return None;
    }
    let trailer = rfind(bytes, b"trailer").map(|at| &bytes[at..]);
    let reference = |key: &[u8]| trailer.and_then(|t| reference_after(t, key));
    let root = reference(b"/Root").or_else(|| {
        objects.iter().find_map(|object| {
            let body = &bytes[object.start..object.end];
            let dictionary = &body[..object.stream.map_or(body.len(), |(keyword, _, _)| keyword)];
            find(dictionary, b"/Catalog").map(|_| (object.number, object.generation))
        })
    })?;

    let mut out = b"%PDF-1.7\n".to_vec();
    let mut offsets: BTreeMap<u32, (usize, u16)> = BTreeMap::new();
    for object in &objects {
        offsets.insert(object.number, (out.len(), object.generation));
        let body = &bytes[object.start..object.end];
        match object.stream {
            Some((keyword, data_start, data_end)) => {
                out.extend_from_slice(&with_length(&body[..keyword], data_end - data_start));
                out.extend_from_slice(b"stream\n");
                out.extend_from_slice(&body[data_start..data_end]);
                out.extend_from_slice(b"\nendstream\nendobj");
            }
            None => out.extend_from_slice(body),
        }
        out.push(b'\n');
    }
    let xref_at = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n", max + 1).as_bytes());
    for number in 0..=max {
        let entry = match offsets.get(&number) {
            Some((offset, generation)) => format!("{offset:010} {generation:05} n\r\n"),
            None if number == 0 => "0000000000 65535 f\r\n".to_string(),
            None => "0000000000 00000 f\r\n".to_string(),
        };
        out.extend_from_slice(entry.as_bytes());
    }
    let mut trailer = format!("trailer\n<< /Size {} /Root {} {} R", max + 1, root.0, root.1);
    for key in ["Info", "Encrypt"] {
        if let Some((number, generation)) = reference(format!("/{key}").as_bytes()) {
            trailer.push_str(&format!(" /{key} {number} {generation} R"));
        }
    }
    trailer.push_str(&format!(" >>\nstartxref\n{xref_at}\n%%EOF\n"));
    out.extend_from_slice(trailer.as_bytes());
    Some(out)
}

/// One `N G obj … endobj` found by scanning a file.
struct ScannedObject {
    number: u32,
    generation: u16,
    /// Byte range of the object, header to `endobj` included.
    start: usize,
    end: usize,
    /// For a stream, relative to `start`: where the `stream` keyword starts
    /// and where its data starts and ends.
    stream: Option<(usize, usize, usize)>,
}

/// Every object of a file in order, found by its header rather than through
/// the cross-reference table. A stream's data is skipped over, so headers
/// inside binary data are not mistaken for objects.
fn scan_objects(bytes: &[u8]) -> Vec<ScannedObject> {
    let mut objects = Vec::new();
    let mut from = 0;
    while let Some(found) = find(&bytes[from..], b"obj") {
        let at = from + found;
        from = at + 3;
        let delimited = bytes
            .get(at + 3)
            .is_none_or(|b| b.is_ascii_whitespace() || b"<[(/%".contains(b));
        let Some((number, generation, start)) = object_header_before(bytes, at).filter(|_| delimited) else {
            continue;
        };
        let body = &bytes[at + 3..];
        let endobj = find(body, b"endobj");
        let stream_keyword = find(body, b"stream").filter(|&k| endobj.is_none_or(|e| k < e));
        let (end, stream) = match stream_keyword {
            Some(keyword) => {
                let mut data_start = keyword + b"stream".len();
                if body[data_start..].starts_with(b"\r\n") {
                    data_start += 2;
                } else if body[data_start..].starts_with(b"\n") || body[data_start..].starts_with(b"\r") {
                    data_start += 1;
                }
                let Some(endstream) = find(&body[data_start..], b"endstream").map(|e| data_start + e) else {
                    break;
                };
                let data = &body[data_start..endstream];
                let data_end = data_start
                    + data
                        .strip_suffix(b"\r\n")
                        .or_else(|| data.strip_suffix(b"\n"))
                        .or_else(|| data.strip_suffix(b"\r"))
                        .unwrap_or(data)
                        .len();
                let after = endstream + b"endstream".len();
                let end = find(&body[after..], b"endobj").map_or(after, |e| after + e + b"endobj".len());
                let offset = at + 3 - start;
                (end, Some((keyword + offset, data_start + offset, data_end + offset)))
            }
            None => (endobj.map_or(body.len(), |e| e + b"endobj".len()), None),
        };
        from = at + 3 + end;
        objects.push(ScannedObject {
            number,
            generation,
            start,
            end: at + 3 + end,
            stream,
        });
    }
    objects
}

/// A stream dictionary's text with its /Length set to `length`.
fn with_length(dictionary: &[u8], length: usize) -> Vec<u8> {
    let key = (0..dictionary.len()).find(|&i| {
        dictionary[i..].starts_with(b"/Length") && dictionary.get(i + 7).is_none_or(|b| !b.is_ascii_alphanumeric())
    });
    let Some(key) = key else {
        let open = find(dictionary, b"<<").map_or(0, |o| o + 2);
        return [
            &dictionary[..open],
            format!(" /Length {length} ").as_bytes(),
            &dictionary[open..],
        ]
        .concat();
    };
    // The old value: a number, or an `N G R` reference.
    let value_start = key + 7;
    let mut value_end = value_start;
    let mut tokens = 0;
    let mut i = value_start;
    while tokens < 3 && i < dictionary.len() {
        while i < dictionary.len() && dictionary[i].is_ascii_whitespace() {
            i += 1;
        }
        let token_start = i;
        while i < dictionary.len() && (dictionary[i].is_ascii_digit() || dictionary[i] == b'R') {
            i += 1;
        }
        if i == token_start {
            break;
        }
        tokens += 1;
        if tokens == 1 || dictionary[token_start] == b'R' {
            value_end = i;
        }
        if dictionary[token_start] == b'R' {
            break;
        }
    }
    [
        &dictionary[..value_start],
        format!(" {length}").as_bytes(),
        &dictionary[value_end..],
    ]
    .concat()
}

/// Reads `N G` backwards from just before an `obj` keyword at `at`: the
/// object number, generation and the offset where the header starts.
fn object_header_before(bytes: &[u8], at: usize) -> Option<(u32, u16, usize)> {
    let digits_before = |end: usize| {
        let start = bytes[..end]
            .iter()
            .rposition(|b| !b.is_ascii_digit())
            .map_or(0, |p| p + 1);
        (start < end).then_some(start)
    };
    let spaces_before = |end: usize| {
        let start = bytes[..end]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |p| p + 1);
        (start < end).then_some(start)
    };
    let generation_end = spaces_before(at)?;
    let generation_start = digits_before(generation_end)?;
    let number_end = spaces_before(generation_start)?;
    let number_start = digits_before(number_end)?;
    if number_start > 0 && !bytes[number_start - 1].is_ascii_whitespace() {
        return None;
    }
    let number = std::str::from_utf8(&bytes[number_start..number_end])
        .ok()?
        .parse()
        .ok()?;
    let generation = std::str::from_utf8(&bytes[generation_start..generation_end])
        .ok()?
        .parse()
        .ok()?;
    Some((number, generation, number_start))
}

/// The `N G R` reference that follows `key` in a dictionary's text.
fn reference_after(text: &[u8], key: &[u8]) -> Option<(u32, u16)> {
    let rest = &text[find(text, key)? + key.len()..];
    let rest = std::str::from_utf8(&rest[..rest.len().min(64)])
        .unwrap_or_else(|e| std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or_default());
    let mut words = rest.split_ascii_whitespace();
    let number = words.next()?.parse().ok()?;
    let generation = words.next()?.parse().ok()?;
    words.next()?.starts_with('R').then_some((number, generation))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Whether a page's compressed content fails its zlib checksum: its bytes
/// are not the ones written, so what inflates from them cannot be trusted.
/// (Wrong lengths and tables are bookkeeping, repaired in [`parse`]; this is
/// the data itself.)
fn has_damaged_content(document: &Document, page_id: ObjectId) -> bool {
    document.get_page_contents(page_id).into_iter().any(|id| {
        let Ok(stream) = document.get_object(id).and_then(Object::as_stream) else {
            return false;
        };
        let only_flate = stream
            .filters()
            .is_ok_and(|filters| filters == [b"FlateDecode".as_slice()]);
        if !only_flate || stream.dict.has(b"DecodeParms") {
            return false;
        }
        let raw = stream.content.trim_ascii_end();
        let (Some(expected), Ok(inflated)) = (raw.last_chunk::<4>(), stream.decompressed_content()) else {
            return false;
        };
        adler32(&inflated) != u32::from_be_bytes(*expected)
    })
}

/// The Adler-32 checksum that ends every zlib stream (RFC 1950).
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that can be summed before `b` could overflow.
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Whether the page, or the nearest page-tree node above it that has one,
/// has a /MediaBox array of four numbers.
fn has_media_box(document: &Document, page_id: ObjectId) -> bool {
    let mut node = document.get_dictionary(page_id).ok();
    // The depth bound stops a /Parent cycle.
    for _ in 0..64 {
        let Some(dictionary) = node else { return false };
        let media_box = dictionary
            .get(b"MediaBox")
            .and_then(|media_box| document.dereference(media_box))
            .and_then(|(_, media_box)| media_box.as_array());
        if let Ok(media_box) = media_box {
            return media_box.len() == 4 && media_box.iter().all(|n| n.as_float().is_ok());
        }
        node = dictionary
            .get(b"Parent")
            .and_then(Object::as_reference)
            .and_then(|id| document.get_dictionary(id))
            .ok();
    }
    false
}

/// Readies a page for pdf-extract and says whether it shows any text.
///
/// pdf-extract ignores the `'` and `"` text operators (next line, then show
/// a string), so text drawn with them (a2ps and Ghostscript output, for one)
/// would silently vanish; they are rewritten into the equivalent `T*` and
/// `Tj` it does read.
///
/// A page without a usable /MediaBox (pdf-extract needs one, as a flat array
/// of four numbers) gets US Letter, the size viewers assume.
fn prepare_page(document: &mut Document, page_id: ObjectId) -> bool {
    if !has_media_box(document, page_id) {
        if let Ok(page) = document.get_dictionary_mut(page_id) {
            page.set("MediaBox", vec![0.into(), 0.into(), 612.into(), 792.into()]);
        }
    }
    let rewritten = catch_unwind(AssertUnwindSafe(|| {
        let content = Content::decode(&document.get_page_content(page_id).ok()?).ok()?;
        let shows_text = content
            .operations
            .iter()
            .any(|op| matches!(op.operator.as_str(), "Tj" | "TJ" | "'" | "\""));
        if !content
            .operations
            .iter()
            .any(|op| matches!(op.operator.as_str(), "'" | "\""))
        {
            return Some((shows_text, None));
        }
        let mut operations = Vec::with_capacity(content.operations.len());
        for op in content.operations {
            match (op.operator.as_str(), op.operands.as_slice()) {
                ("'", [text]) => {
                    operations.push(Operation::new("T*", vec![]));
                    operations.push(Operation::new("Tj", vec![text.clone()]));
                }
                ("\"", [word_spacing, char_spacing, text]) => {
                    operations.push(Operation::new("Tw", vec![word_spacing.clone()]));
                    operations.push(Operation::new("Tc", vec![char_spacing.clone()]));
                    operations.push(Operation::new("T*", vec![]));
                    operations.push(Operation::new("Tj", vec![text.clone()]));
                }
                _ => operations.push(op),
            }
        }
        Some((shows_text, Content { operations }.encode().ok()))
    }));
    match rewritten {
        Ok(Some((shows_text, rewritten))) => {
            if let Some(content) = rewritten {
                // Left as it was if the page cannot take the new content.
                let _ = document.change_page_content(page_id, content);
            }
            shows_text
        }
        _ => false,
    }
}

/// One page's text as pdf-extract lays it out, or why it could not be read.
fn page_text(document: &Document, number: u32) -> Result<String, String> {
    let mut text = String::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut output = PlainTextOutput::new(&mut text);
        pdf_extract::output_doc_page(document, &mut output, number)
    }));
    match outcome {
        Ok(Ok(())) => Ok(text),
        Ok(Err(e)) => Err(format!("page {number}: {e}")),
        Err(_) => Err(format!("page {number}: the text extractor failed on it")),
    }
}

/// Trims trailing spaces from lines and folds runs of blank lines into one
/// blank line, the paragraph break the chunker splits on.
fn clean(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    let mut blank_lines = 0;
    for line in page.lines() {
        let line = line.trim_end();
        if line.trim_start().is_empty() {
            blank_lines += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_lines > 0 { "\n\n" } else { "\n" });
        }
        blank_lines = 0;
        out.push_str(line);
    }
    out
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
mod tests {
    use super::*;
    use lopdf::{dictionary, Stream};

    /// Operations showing `text` in Helvetica near the top of a page.
    fn show(text: &str) -> Vec<Operation> {
        vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 24.into()]),
            Operation::new("Td", vec![72.into(), 700.into()]),
            Operation::new("Tj", vec![Object::string_literal(text)]),
            Operation::new("ET", vec![]),
        ]
    }

    /// A PDF with one page per string, each showing that string.
    fn pdf_with_pages(pages: &[&str], title: Option<&str>) -> Document {
        let pages = pages
            .iter()
            .map(|text| if text.is_empty() { Vec::new() } else { show(text) })
            .collect();
        pdf_with_operations(pages, title)
    }

    /// A PDF with one page per list of content operations.
    fn pdf_with_operations(pages: Vec<Vec<Operation>>, title: Option<&str>) -> Document {
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font_id = doc.add_object(dictionary! {
            "Type" => "Font",
            "Subtype" => "Type1",
            "BaseFont" => "Helvetica",
        });
        let resources_id = doc.add_object(dictionary! {
            "Font" => dictionary! { "F1" => font_id },
        });
        let mut kids = Vec::new();
        for operations in pages {
            let content = Content { operations }.encode().unwrap();
            let content_id = doc.add_object(Stream::new(dictionary! {}, content));
            let page_id = doc.add_object(dictionary! {
                "Type" => "Page",
                "Parent" => pages_id,
                "Contents" => content_id,
            });
            kids.push(page_id.into());
        }
        let count = i64::try_from(kids.len()).unwrap();
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages",
                "Kids" => kids,
                "Count" => count,
                "Resources" => resources_id,
                "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
            }),
        );
        let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog_id);
        if let Some(title) = title {
            let info_id = doc.add_object(dictionary! {
                "Title" => lopdf::text_string(title),
                "Author" => Object::string_literal("Ada"),
            });
            doc.trailer.set("Info", info_id);
        }
        doc
    }

    fn save(mut doc: Document) -> Vec<u8> {
        let mut bytes = Vec::new();
        doc.save_to(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn pages_keep_their_numbers_and_byte_ranges() {
        let bytes = save(pdf_with_pages(
            &["Hello page one", "", "Third page"],
            Some("Zürich notes"),
        ));
        let doc = load(&bytes).unwrap();
        assert_eq!(doc.title, "Zürich notes");
        assert_eq!(doc.metadata["author"], "Ada");
        assert_eq!(doc.metadata["page_count"], 3);
        let numbers: Vec<u32> = doc.pages.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        assert_eq!(&doc.text[doc.pages[0].start..doc.pages[0].end], "Hello page one");
        assert_eq!(
            doc.pages[1].start, doc.pages[1].end,
            "the empty page has an empty range"
        );
        assert_eq!(&doc.text[doc.pages[2].start..doc.pages[2].end], "Third page");
        assert_eq!(doc.text, "Hello page one\n\nThird page");
    }

    #[test]
    fn a_password_protected_pdf_is_refused_clearly() {
        let mut doc = pdf_with_pages(&["secret plans"], None);
        doc.trailer
            .set("ID", vec![Object::string_literal("0123456789abcdef"); 2]);
        let version = lopdf::EncryptionVersion::V2 {
            document: &doc,
            owner_password: "owner",
            user_password: "user",
            key_length: 128,
            permissions: lopdf::Permissions::all(),
        };
        let state = lopdf::EncryptionState::try_from(version).unwrap();
        doc.encrypt(&state).unwrap();
        let err = load(&save(doc)).unwrap_err();
        assert!(
            err.message
                .starts_with("encrypted PDF (password-protected): not supported"),
            "{err}"
        );
    }

    #[test]
    fn a_pdf_without_text_asks_for_ocr() {
        let err = load(&save(pdf_with_pages(&["", ""], None))).unwrap_err();
        assert!(err.message.contains("no extractable text"), "{err}");
    }

    #[test]
    fn garbage_is_a_corrupted_pdf() {
        let err = load(b"%PDF-1.4 this is not a pdf").unwrap_err();
        assert!(err.message.starts_with("corrupted PDF: "), "{err}");
    }

    #[test]
    fn a_file_without_a_cross_reference_table_is_repaired() {
        let bytes = save(pdf_with_pages(&["Hello repair"], Some("Fixed")));
        let cut = rfind(&bytes, b"startxref").unwrap();
        let mut broken = bytes[..cut].to_vec();
        broken.extend_from_slice(b"trailer\n<< /Root 6 0 R /Info 7 0 R >>\n%%EOF\n");
        let doc = load(&broken).unwrap();
        assert_eq!(doc.text, "Hello repair");
        assert_eq!(doc.title, "Fixed");
        assert_eq!(doc.metadata["repaired"], "cross-reference table rebuilt");
    }

    #[test]
    fn content_failing_its_checksum_is_a_corrupted_pdf() {
        let mut doc = pdf_with_pages(&["Hello ".repeat(40).as_str()], None);
        let page_id = doc.get_pages()[&1];
        let content_id = doc.get_page_contents(page_id)[0];
        let stream = doc.get_object_mut(content_id).unwrap().as_stream_mut().unwrap();
        stream.compress().unwrap();
        assert!(stream.filters().is_ok(), "the content is compressed");
        let last = stream.content.len() - 1;
        stream.content[last] ^= 0xFF;
        let err = load(&save(doc)).unwrap_err();
        assert!(
            err.message
                .starts_with("corrupted PDF: the content of page 1 is damaged"),
            "{err}"
        );
    }

    #[test]
    fn wrong_stream_lengths_are_repaired() {
        let bytes = save(pdf_with_pages(&["Long enough text"], None));
        let at = find(&bytes, b"/Length ").unwrap() + 8;
        let digits = bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        let broken = [&bytes[..at], b"3".as_slice(), &bytes[at + digits..]].concat();
        assert_eq!(load(&broken).unwrap().text, "Long enough text");
    }

    #[test]
    fn adler32_matches_the_rfc_example() {
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn text_shown_with_quote_operators_is_kept() {
        let mut operations = show("first line");
        operations.insert(4, Operation::new("TL", vec![30.into()]));
        operations.insert(5, Operation::new("'", vec![Object::string_literal("second line")]));
        let spaced = vec![0.into(), 0.into(), Object::string_literal("third line")];
        operations.insert(6, Operation::new("\"", spaced));
        let doc = load(&save(pdf_with_operations(vec![operations], None))).unwrap();
        assert_eq!(doc.text, "first line\nsecond line\nthird line");
    }

    #[test]
    fn a_page_without_a_media_box_gets_one() {
        let mut doc = pdf_with_pages(&["Boxless"], None);
        let pages_id = doc.catalog().unwrap().get(b"Pages").unwrap().as_reference().unwrap();
        doc.get_dictionary_mut(pages_id).unwrap().remove(b"MediaBox");
        assert_eq!(load(&save(doc)).unwrap().text, "Boxless");
    }

    #[test]
    fn blank_lines_fold_into_paragraph_breaks() {
        assert_eq!(clean("  a  \n b\n\n\n\nc \n"), "  a\n b\n\nc");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = load(&bytes);
        }

        #[test]
        fn never_panics_on_damaged_pdfs(cut in 0usize..2000, flip in 0usize..2000, byte in proptest::num::u8::ANY) {
            let mut bytes = save(pdf_with_pages(&["Hello world", "second"], Some("t")));
            let flip = flip % bytes.len();
            bytes[flip] = byte;
            bytes.truncate(bytes.len() - cut.min(bytes.len()));
            let _ = load(&bytes);
        }
    }
}
