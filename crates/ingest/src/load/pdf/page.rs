//! One page at a time: readying it for pdf-extract, extracting its text and
//! tidying that text.

use std::panic::{catch_unwind, AssertUnwindSafe};

use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, ObjectId};
use pdf_extract::PlainTextOutput;

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
pub(super) fn prepare_page(document: &mut Document, page_id: ObjectId) -> bool {
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
pub(super) fn page_text(document: &Document, number: u32) -> Result<String, String> {
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
pub(super) fn clean(page: &str) -> String {
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
