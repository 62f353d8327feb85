//! The loaders against real documents from the shared data set (its `docs` folder; where the data set is,
//! `knowhow_testkit::env::shared_data` says). Each test skips, with a message, where the data set is absent, so
//! the crate's tests still pass on a machine without it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use knowhow_core::Document;
use knowhow_ingest::load::{load_bytes, Format, LoadOptions};
use knowhow_testkit::env::shared_data;

/// The data set's `docs/<kind>` folder, or `None` (with a message naming this test target) when the data set is
/// absent.
fn docs(kind: &str) -> Option<PathBuf> {
    shared_data("real_documents").map(|data| data.join("docs").join(kind))
}

/// Files of a folder with the given extension, sorted by name; panics when there are none, so that a data set that
/// lost its files fails the test instead of passing it with nothing checked.
fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    assert!(!files.is_empty(), "no .{extension} files in {}", dir.display());
    files.sort();
    files
}

fn load(format: Format, path: &Path) -> Result<Document, String> {
    let bytes = std::fs::read(path).unwrap();
    let source = path.to_string_lossy();
    load_bytes(format, &bytes, &source, &LoadOptions::default())
        .map(|mut loaded| {
            assert_eq!(loaded.documents.len(), 1);
            loaded.documents.remove(0)
        })
        .map_err(|e| e.message)
}

/// Sections and pages are in order, do not overlap, and fall on character
/// boundaries of the text.
fn assert_spans_are_sound(name: &str, doc: &Document) {
    let mut previous_end = 0;
    for section in &doc.sections {
        assert!(section.start >= previous_end, "{name}: sections overlap");
        assert!(
            section.start <= section.end && section.end <= doc.text.len(),
            "{name}: bad section"
        );
        assert!(doc.text.is_char_boundary(section.start) && doc.text.is_char_boundary(section.end));
        assert!((1..=9).contains(&section.level), "{name}: level {}", section.level);
        assert!(!section.heading_path.is_empty(), "{name}: empty heading path");
        previous_end = section.end;
    }
    let mut previous_end = 0;
    for (i, page) in doc.pages.iter().enumerate() {
        assert_eq!(page.number as usize, i + 1, "{name}: pages numbered out of order");
        assert!(page.start >= previous_end && page.start <= page.end && page.end <= doc.text.len());
        assert!(doc.text.is_char_boundary(page.start) && doc.text.is_char_boundary(page.end));
        previous_end = page.end;
    }
}

/// Lower-cased alphanumeric words and how often each occurs.
fn word_counts(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    counts
}

/// Bag-of-words recall and precision of `got` against `expected`.
fn recall_precision(expected: &str, got: &str) -> (f64, f64) {
    let expected = word_counts(expected);
    let got = word_counts(got);
    let overlap: usize = got
        .iter()
        .map(|(word, n)| (*n).min(expected.get(word).copied().unwrap_or(0)))
        .sum();
    let total = |counts: &HashMap<String, usize>| counts.values().sum::<usize>().max(1) as f64;
    (overlap as f64 / total(&expected), overlap as f64 / total(&got))
}

#[test]
fn html_keeps_the_main_content_of_real_pages() {
    let Some(dir) = docs("html") else { return };
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("source.html").is_file())
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "no pages in {}", dir.display());

    let mut failures = Vec::new();
    for page in &pages {
        let name = page.file_name().unwrap().to_string_lossy();
        let doc = load(Format::Html, &page.join("source.html")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected_html = std::fs::read_to_string(page.join("expected.html")).unwrap();
        let expected = dom_query::Document::from(expected_html.as_str()).root().text();
        let (recall, precision) = recall_precision(&expected, &doc.text);
        eprintln!(
            "html {name:<10} recall {recall:.3} precision {precision:.3} title {:?}",
            doc.title
        );
        assert_spans_are_sound(&name, &doc);
        assert!(!doc.title.is_empty(), "{name}: no title");
        if recall < 0.90 || precision < 0.80 {
            failures.push(format!("{name}: recall {recall:.3}, precision {precision:.3}"));
        }
    }
    assert!(failures.is_empty(), "below recall 0.90 / precision 0.80: {failures:?}");
}

#[test]
fn pdf_pages_load_with_their_numbers() {
    let Some(dir) = docs("pdf") else { return };
    let files = files_with_extension(&dir, "pdf");
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        match load(Format::Pdf, path) {
            Ok(doc) => {
                eprintln!(
                    "pdf {name}: {} pages, {} bytes of text, title {:?}",
                    doc.pages.len(),
                    doc.text.len(),
                    doc.title
                );
                assert!(!name.contains("corrupted"), "{name} should not load");
                assert!(!doc.text.trim().is_empty(), "{name}: no text");
                assert!(!doc.pages.is_empty(), "{name}: no pages");
                assert_eq!(doc.metadata["page_count"], doc.pages.len(), "{name}");
                assert_spans_are_sound(&name, &doc);
            }
            Err(message) if name == "jo.pdf" => {
                // See japanese_pdf_yields_japanese_text_or_says_why_not.
                eprintln!("pdf {name}: {message}");
            }
            Err(message) => {
                eprintln!("pdf {name}: {message}");
                assert!(name.contains("corrupted"), "{name} failed: {message}");
                assert!(message.starts_with("corrupted PDF: "), "{name}: {message}");
            }
        }
    }
}

/// jo.pdf sets its Japanese text in a CID font (Ryumin-Light, Identity-V)
/// with no ToUnicode map; pdf-extract lacks the Adobe-Japan1 tables needed to
/// turn such glyphs into characters. Either it learns them and the text is
/// Japanese, or the user is told why nothing came out.
#[test]
fn japanese_pdf_yields_japanese_text_or_says_why_not() {
    let Some(dir) = docs("pdf") else { return };
    match load(Format::Pdf, &dir.join("jo.pdf")) {
        Ok(doc) => {
            let japanese = doc
                .text
                .chars()
                .filter(|c| matches!(*c as u32, 0x3040..=0x30FF | 0x4E00..=0x9FFF))
                .count();
            assert!(japanese > 100, "only {japanese} Japanese characters in {:?}", doc.text);
        }
        Err(message) => assert!(message.contains("no Unicode mapping"), "{message}"),
    }
}

/// Whether a .docx body has any `w:t` text run, read straight from the zip.
fn docx_body_has_text(path: &Path) -> bool {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut xml = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("word/document.xml").unwrap(), &mut xml).unwrap();
    xml.split("<w:t").skip(1).any(|run| {
        let run = run.split("</w:t>").next().unwrap_or_default();
        run.starts_with([' ', '>']) && run.split_once('>').is_some_and(|(_, text)| !text.trim().is_empty())
    })
}

#[test]
fn docx_documents_load_with_structure() {
    let Some(dir) = docs("docx") else { return };
    let files = files_with_extension(&dir, "docx");
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // having-images.docx holds only pictures and tbl-having-tables.docx
        // only empty tables: they must be refused, not loaded empty.
        if !docx_body_has_text(path) {
            let message = load(Format::Docx, path).unwrap_err();
            eprintln!("docx {name}: {message}");
            assert!(message.contains("no text"), "{name}: {message}");
            continue;
        }
        let doc = load(Format::Docx, path).unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!(
            "docx {name}: {} bytes of text, {} sections, title {:?}",
            doc.text.len(),
            doc.sections.len(),
            doc.title
        );
        assert!(!doc.text.trim().is_empty(), "{name}: no text");
        assert!(!doc.text.contains("\n\n\n"), "{name}: empty paragraphs kept");
        assert_spans_are_sound(&name, &doc);
        // The documents whose body uses heading styles.
        if ["par-known-paragraphs.docx", "test.docx"].contains(&name.as_str()) {
            assert!(!doc.sections.is_empty(), "{name}: headings but no sections");
        }
    }
}

/// blk-paras-and-tables.docx has empty tables (dropped) and a one-cell
/// table holding a paragraph, a nested two-row table and another paragraph:
/// that cell is one row, its nested rows joined by "; ". Its page header is a
/// two-cell table row, kept in metadata with its cells joined by " | ".
#[test]
fn docx_tables_keep_their_place_in_the_text() {
    let Some(dir) = docs("docx") else { return };
    let doc = load(Format::Docx, &dir.join("blk-paras-and-tables.docx")).unwrap();
    let blocks: Vec<&str> = doc.text.split("\n\n").collect();
    assert_eq!(
        blocks,
        [
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
            "Text before; Table; Between Text after",
            "Donec semper facilisis metus finibus malesuada.",
        ]
    );
    assert_eq!(doc.metadata["headers"], serde_json::json!(["Left-side | Right-side"]));
}

#[test]
fn docx_headers_and_footers_go_to_metadata_not_text() {
    let Some(dir) = docs("docx") else { return };
    let doc = load(Format::Docx, &dir.join("hdr-header-footer.docx")).unwrap();
    let strings = |key: &str| -> Vec<String> {
        let values = doc
            .metadata
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {:?}", doc.metadata));
        serde_json::from_value(values.clone()).unwrap()
    };
    let headers = strings("headers");
    let footers = strings("footers");
    assert!(
        headers.iter().any(|h| h.contains("Header for section-1")),
        "{headers:?}"
    );
    assert!(footers.iter().any(|f| f.contains("Footer for section")), "{footers:?}");
    for furniture in headers.iter().chain(&footers) {
        assert!(
            !doc.text.contains(furniture.as_str()),
            "{furniture:?} is in the text {:?}",
            doc.text
        );
    }
    assert!(doc.text.contains("section with header"), "{:?}", doc.text);
}
