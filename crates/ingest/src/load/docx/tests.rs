use std::io::{Cursor, Write};

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

/// Text boxes nest paragraphs, and each level copies the text inside it
/// once more: 100,000 levels would copy for hours. Past the bound the part
/// is refused, by name; at it, the text is read.
#[test]
fn a_body_nested_past_the_bound_is_refused() {
    let nested = |depth: usize| {
        let open = r#"<w:p><w:r><w:t>word</w:t></w:r>"#.repeat(depth);
        document(&format!("{open}{}", "</w:p>".repeat(depth)))
    };
    let started = std::time::Instant::now();
    let deep = docx(&[("word/document.xml", &nested(100_000))]);
    let err = load(&deep, 64 << 20).unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.message
            .starts_with("refused: word/document.xml nests elements more than 512 levels deep (at byte"),
        "{err}"
    );
    let header = format!(r#"<w:hdr {W}>{}</w:hdr>"#, "<w:tbl><w:tr><w:tc>".repeat(200));
    let bytes = docx(&[
        ("word/document.xml", &document(&paragraph(None, "x"))),
        ("word/header1.xml", &header),
    ]);
    let err = load(&bytes, 1 << 20).unwrap_err();
    assert!(err.message.contains("word/header1.xml nests elements"), "{err}");

    // The document element and the body take two levels, the innermost run
    // and text two more.
    let at_bound = crate::load::MAX_NESTING_DEPTH - 4;
    assert!(load(&docx(&[("word/document.xml", &nested(at_bound + 1))]), 1 << 20).is_err());
    let doc = load(&docx(&[("word/document.xml", &nested(at_bound))]), 1 << 20).unwrap();
    assert!(doc.text.starts_with("word word word"), "{}", &doc.text[..40]);
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
