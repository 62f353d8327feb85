use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Document, Object, Stream};

use super::damage::adler32;
use super::load;
use super::page::clean;
use super::repair::{find, rfind};

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
