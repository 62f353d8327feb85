//! HTML: the page's main content as plain text.
//!
//! A web page is mostly navigation, scripts, cookie banners and footers; what
//! a user wants answered from is the article. `dom_smoothie` (a port of
//! Mozilla's Readability, the engine behind Firefox's reader view) picks the
//! article out; its HTML is then walked into blank-line separated blocks, one
//! per paragraph, list item or table row, with `h1`–`h6` opening sections. When
//! Readability finds nothing, the whole body minus its page furniture is used,
//! so a short page still loads.

use std::panic::{catch_unwind, AssertUnwindSafe};

use dom_query::{Document, NodeRef};
use dom_smoothie::{Article, Readability};
use knowhow_core::{Metadata, Section};

use super::nesting::{html_too_deep, too_deep};
use super::{Extracted, LoadError};

/// Elements whose content is never text for a reader.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object", "embed", "canvas", "select",
    "button", "input", "textarea",
];

/// Page furniture dropped before Readability looks at the page: site
/// navigation, banners and footers are never the article, but on a short page
/// Readability may keep them. A `<header>` inside the article can hold its
/// title, so only the page's own header goes.
const FURNITURE: &str = "nav, footer, body > header, [role=navigation], [role=banner], \
     [role=contentinfo], script, style, noscript, template";

/// Further furniture dropped when the whole body has to be used, without
/// Readability's judgement of what is content.
const BODY_FURNITURE: &str = "header, aside, form, [aria-hidden=true]";

/// Elements that start and end a block of text.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "caption",
    "center",
    "dd",
    "details",
    "dialog",
    "dir",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "header",
    "hgroup",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "menu",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "ul",
];

pub(crate) fn load(bytes: &[u8], encoding: Option<&'static encoding_rs::Encoding>) -> Result<Extracted, LoadError> {
    let html = decode(bytes, encoding)?;
    if let Some(at) = html_too_deep(&html) {
        return Err(too_deep("the HTML", &at));
    }
    let document = Document::from(html.as_str());
    let page_title = collapse_whitespace(&document.select("title").text());
    document.select(FURNITURE).remove();

    let (content, article) = match readable_article(document) {
        Some(article) => {
            let content = blocks_of(&Document::from(article.content.as_ref()).root());
            (content, Some(article))
        }
        None => (Blocks::default(), None),
    };
    let (content, extractor) = if content.text.trim().is_empty() {
        let document = Document::from(html.as_str());
        document.select(FURNITURE).remove();
        document.select(BODY_FURNITURE).remove();
        let root = document.body().unwrap_or_else(|| document.root());
        (blocks_of(&root), "body")
    } else {
        (content, "readability")
    };
    if content.text.is_empty() {
        return Err(LoadError::no_text(
            "no readable text found in the HTML page (it may be built by JavaScript at view time)",
        ));
    }

    let mut metadata = Metadata::new();
    metadata.insert("extractor".into(), extractor.into());
    let mut title = page_title;
    if let Some(article) = article {
        let readable_title = collapse_whitespace(&article.title);
        if !readable_title.is_empty() {
            title = readable_title;
        }
        let fields = [
            ("author", article.byline),
            ("site_name", article.site_name),
            ("lang", article.lang),
            ("published_time", article.published_time),
        ];
        for (key, value) in fields {
            if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
                metadata.insert(key.into(), value.trim().into());
            }
        }
    }
    Ok(Extracted {
        title,
        text: content.text,
        sections: content.sections,
        pages: Vec::new(),
        metadata,
    })
}

/// Decodes the page the way a browser would choose its encoding: a byte-order
/// mark first, then a `<meta charset>` (or `http-equiv` content type) near the
/// top, else UTF-8. Undeclared text that is not UTF-8 is an error rather than a
/// guess, as for plain text files. An encoding the user names wins over all.
fn decode(bytes: &[u8], encoding: Option<&'static encoding_rs::Encoding>) -> Result<String, LoadError> {
    if encoding.is_some() || encoding_rs::Encoding::for_bom(bytes).is_some() {
        return super::text::decode(bytes, encoding);
    }
    let declared = meta_charset(bytes)
        .and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()))
        // A meta tag cannot truthfully declare UTF-16: it was read as ASCII.
        .map(|encoding| encoding.output_encoding());
    super::text::decode(bytes, declared)
}

/// The charset named by the first `<meta>` tag that names one, looking only
/// at the start of the page as browsers do.
fn meta_charset(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(4096)];
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut rest = head.as_str();
    while let Some(at) = rest.find("<meta") {
        let tag = &rest[at..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        if let Some(value) = tag.split("charset=").nth(1) {
            let value = value.trim_start_matches(['"', '\'', ' ']);
            let end = value
                .find(|c: char| c == '"' || c == '\'' || c == ';' || c == '/' || c.is_whitespace())
                .unwrap_or(value.len());
            if end > 0 {
                return Some(value[..end].to_string());
            }
        }
        rest = &rest[at + 5..];
    }
    None
}

/// Readability's article, or `None` when it finds no content. Readability is
/// a heuristic over arbitrary markup; a panic inside it must cost only the
/// article, not the load, so the body fallback still runs.
fn readable_article(document: Document) -> Option<Article> {
    catch_unwind(AssertUnwindSafe(|| {
        Readability::with_document(document, None, None).ok()?.parse().ok()
    }))
    .ok()
    .flatten()
}

/// Text with its sections, built block by block.
#[derive(Default)]
struct Blocks {
    text: String,
    sections: Vec<Section>,
    /// Open headings, outermost first, as (level, title).
    heading_path: Vec<(u8, String)>,
}

impl Blocks {
    fn push_block(&mut self, block: &str) {
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
        }
        self.text.push_str(block);
    }

    /// A heading ends the section before it (sections tile the text from the
    /// first heading on) and opens its own.
    fn push_heading(&mut self, level: u8, title: &str) {
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
        }
        let start = self.text.len();
        if let Some(previous) = self.sections.last_mut() {
            previous.end = start;
        }
        self.text.push_str(title);
        self.heading_path.retain(|(open, _)| *open < level);
        self.heading_path.push((level, title.to_string()));
        self.sections.push(Section {
            heading_path: self.heading_path.iter().map(|(_, t)| t.clone()).collect(),
            level,
            start,
            end: self.text.len(),
        });
    }

    fn finish(&mut self) {
        if let Some(last) = self.sections.last_mut() {
            last.end = self.text.len();
        }
    }
}

/// The block being gathered: inline text with whitespace collapsed as it
/// comes, unless it is preformatted.
#[derive(Default)]
struct Pending {
    text: String,
    preformatted: bool,
    /// A list marker waiting for the block's first words.
    marker: Option<String>,
}

/// Walks an element tree into [`Blocks`]. The walk keeps its own stack, so a
/// page nested thousands of levels deep cannot overflow the thread's stack.
fn blocks_of(root: &NodeRef) -> Blocks {
    enum Step<'a> {
        Enter(NodeRef<'a>),
        Leave(String),
    }
    let mut blocks = Blocks::default();
    let mut pending = Pending::default();
    // Per open list: the next item number, or None for a bulleted list.
    let mut lists: Vec<Option<u32>> = Vec::new();
    // Per open table row: how many cells it has had so far.
    let mut rows: Vec<usize> = Vec::new();
    let mut cell_depth = 0usize;
    let mut pre_depth = 0usize;

    let mut stack = vec![Step::Enter(*root)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Enter(node) => {
                if node.is_text() {
                    append_text(&mut pending, &node.text(), pre_depth > 0);
                    continue;
                }
                if !(node.is_element() || node.is_document() || node.is_fragment()) {
                    continue;
                }
                let name = node.node_name().map(|n| n.to_string()).unwrap_or_default();
                if SKIPPED.contains(&name.as_str()) {
                    continue;
                }
                match name.as_str() {
                    "br" => {
                        append_text(&mut pending, "\n", true);
                        continue;
                    }
                    "tr" => {
                        flush(&mut pending, &mut blocks, cell_depth);
                        rows.push(0);
                    }
                    "td" | "th" => {
                        if let Some(cells) = rows.last_mut() {
                            if *cells > 0 {
                                append_text(&mut pending, " | ", true);
                            }
                            *cells += 1;
                        }
                        cell_depth += 1;
                    }
                    "ul" | "ol" | "menu" => {
                        flush(&mut pending, &mut blocks, cell_depth);
                        lists.push((name == "ol").then(|| list_start(&node)));
                    }
                    "li" => {
                        flush(&mut pending, &mut blocks, cell_depth);
                        if cell_depth == 0 {
                            pending.marker = Some(match lists.last_mut() {
                                Some(Some(number)) => {
                                    let marker = format!("{number}. ");
                                    *number = number.saturating_add(1);
                                    marker
                                }
                                _ => "- ".to_string(),
                            });
                        }
                    }
                    "pre" => {
                        flush(&mut pending, &mut blocks, cell_depth);
                        pre_depth += 1;
                        pending.preformatted = cell_depth == 0;
                    }
                    _ if heading_level(&name).is_some() || BLOCKS.contains(&name.as_str()) => {
                        flush(&mut pending, &mut blocks, cell_depth);
                    }
                    _ => {}
                }
                stack.push(Step::Leave(name));
                let children: Vec<_> = node.children_it(true).collect();
                stack.extend(children.into_iter().map(Step::Enter));
            }
            Step::Leave(name) => match name.as_str() {
                "tr" => {
                    rows.pop();
                    flush(&mut pending, &mut blocks, cell_depth);
                }
                "td" | "th" => cell_depth = cell_depth.saturating_sub(1),
                "ul" | "ol" | "menu" => {
                    lists.pop();
                    flush(&mut pending, &mut blocks, cell_depth);
                }
                "pre" => {
                    flush(&mut pending, &mut blocks, cell_depth);
                    pre_depth = pre_depth.saturating_sub(1);
                }
                _ => match heading_level(&name) {
                    Some(level) if cell_depth == 0 => {
                        let title = collapse_whitespace(&pending.text);
                        pending = Pending::default();
                        if !title.is_empty() {
                            blocks.push_heading(level, &title);
                        }
                    }
                    _ if heading_level(&name).is_some() || BLOCKS.contains(&name.as_str()) => {
                        flush(&mut pending, &mut blocks, cell_depth);
                    }
                    _ => {}
                },
            },
        }
    }
    flush(&mut pending, &mut blocks, 0);
    blocks.finish();
    blocks
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

fn list_start(node: &NodeRef) -> u32 {
    node.attr("start")
        .and_then(|start| start.trim().parse().ok())
        .unwrap_or(1)
}

/// Adds a text node's text to the pending block. Outside `<pre>`, runs of
/// whitespace become one space, as a browser renders them.
fn append_text(pending: &mut Pending, text: &str, verbatim: bool) {
    if verbatim {
        pending.text.push_str(text);
        return;
    }
    for c in text.chars() {
        if c.is_whitespace() {
            if !pending.text.is_empty() && !pending.text.ends_with([' ', '\n']) {
                pending.text.push(' ');
            }
        } else {
            pending.text.push(c);
        }
    }
}

/// Ends the pending block. Inside a table cell a block boundary is only a
/// space: the cell's paragraphs stay on their row.
fn flush(pending: &mut Pending, blocks: &mut Blocks, cell_depth: usize) {
    if cell_depth > 0 {
        append_text(pending, " ", false);
        return;
    }
    let text = std::mem::take(&mut pending.text);
    let block = if pending.preformatted {
        preformatted_block(&text)
    } else {
        text.split('\n')
            .map(collapse_whitespace)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    pending.preformatted = false;
    if block.is_empty() {
        return;
    }
    match pending.marker.take() {
        Some(marker) => blocks.push_block(&format!("{marker}{block}")),
        None => blocks.push_block(&block),
    }
}

/// Code keeps its lines and indentation, but not trailing spaces nor blank
/// lines, which would read as paragraph breaks.
fn preformatted_block(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn navigation_scripts_and_footers_are_dropped() {
        let html = r#"<html><head><title>Release notes</title><style>p{}</style></head><body>
            <nav><a href="/">Home</a> <a href="/docs">Docs</a></nav>
            <script>var tracking = 1;</script>
            <div class="cookie-banner">We use cookies. Accept all?</div>
            <article>
              <h1>Version 2.0</h1>
              <p>This release rewrites the storage engine so that writes are atomic and crash safe,
                 which was the most requested change over the last two years of issues.</p>
              <h2>Upgrading</h2>
              <p>Stop the server, run the migration tool against the data directory, then start it
                 again. The migration keeps a backup of every file it rewrites until you confirm.</p>
              <ul><li>Back up first.</li><li>Read the changelog.</li></ul>
            </article>
            <footer>Copyright 2024 Example Corp. All rights reserved.</footer>
            </body></html>"#;
        let doc = load(html.as_bytes(), None).unwrap();
        assert!(doc.text.contains("rewrites the storage engine"), "{}", doc.text);
        assert!(doc.text.contains("Stop the server"), "{}", doc.text);
        assert!(
            doc.text.contains("- Back up first.\n\n- Read the changelog."),
            "{}",
            doc.text
        );
        for furniture in ["Home", "tracking", "Copyright", "p{}"] {
            assert!(!doc.text.contains(furniture), "{furniture} kept in {}", doc.text);
        }
        let upgrading = doc
            .sections
            .iter()
            .find(|s| s.heading_path.ends_with(&["Upgrading".to_string()]));
        let upgrading = upgrading.expect("an Upgrading section");
        assert!(doc.text[upgrading.start..upgrading.end].starts_with("Upgrading\n\nStop the server"));
    }

    #[test]
    fn a_short_page_keeps_its_text_without_the_furniture() {
        let html = "<body><header>Site</header><p>Just one line.</p><footer>Foot</footer></body>";
        let doc = load(html.as_bytes(), None).unwrap();
        assert_eq!(doc.text, "Just one line.");
    }

    #[test]
    fn a_page_without_text_is_an_error() {
        let err = load(b"<html><body><script>x()</script></body></html>", None).unwrap_err();
        assert!(err.message.starts_with("has no text: no readable text"), "{err}");
    }

    #[test]
    fn blocks_headings_and_table_rows() {
        let html = "<h1>A</h1><p>one\n  two</p><h2>B</h2><table><tr><th>k</th><th>v</th></tr>\
                    <tr><td><p>x</p><p>y</p></td><td>1</td></tr></table><h1>C</h1><ol start=3><li>c</li></ol>\
                    <pre>fn main() {\n    go();\n}\n</pre>";
        let blocks = blocks_of(&Document::from(html).root());
        assert_eq!(
            blocks.text,
            "A\n\none two\n\nB\n\nk | v\n\nx y | 1\n\nC\n\n3. c\n\nfn main() {\n    go();\n}"
        );
        let paths: Vec<_> = blocks.sections.iter().map(|s| s.heading_path.join("/")).collect();
        assert_eq!(paths, ["A", "A/B", "C"]);
        assert_eq!(blocks.sections[1].start, blocks.text.find("B\n").unwrap());
        assert_eq!(blocks.sections[1].end, blocks.sections[2].start);
        assert_eq!(blocks.sections[2].end, blocks.text.len());
    }

    #[test]
    fn the_declared_charset_is_honoured() {
        let mut html = b"<html><head><meta charset=\"windows-1252\"><title>Caf\xe9</title></head>".to_vec();
        html.extend_from_slice(b"<body><p>cr\xe8me br\xfbl\xe9e</p></body></html>");
        let doc = load(&html, None).unwrap();
        assert_eq!(doc.title, "Café");
        assert!(doc.text.contains("crème brûlée"), "{}", doc.text);
        assert_eq!(
            meta_charset(b"<meta http-equiv='Content-Type' content='text/html; charset=ISO-8859-1'>").as_deref(),
            Some("iso-8859-1")
        );
    }

    #[test]
    fn undeclared_text_that_is_not_utf8_is_an_error() {
        let err = load(b"<p>caf\xe9 cr\xe8me</p>", None).unwrap_err();
        let forced = load(
            b"<p>caf\xe9 cr\xe8me au lait, tous les matins</p>",
            Some(encoding_rs::WINDOWS_1252),
        );
        assert!(forced.unwrap().text.contains("café crème"));
        assert!(err.message.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let html = format!("{}deep{}", "<div>".repeat(20_000), "</div>".repeat(20_000));
        let blocks = blocks_of(&Document::from(html.as_str()).root());
        assert_eq!(blocks.text, "deep");
    }

    /// 100,000 nested `<div>`s ran for minutes and overflowed the stack; a
    /// page nested past the bound is refused at once, and one at the bound
    /// still loads on a thread with the default stack of a worker.
    #[test]
    fn a_page_nested_past_the_bound_is_refused_and_one_within_it_loads() {
        let started = std::time::Instant::now();
        let deep = format!("<p>x</p>{}y{}", "<div>".repeat(100_000), "</div>".repeat(100_000));
        let err = load(deep.as_bytes(), None).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(err.message.contains("more than 512 levels deep (at line 1)"), "{err}");
        assert!(err.message.starts_with("refused: the HTML nests elements"), "{err}");

        let depth = crate::load::MAX_NESTING_DEPTH - 4;
        let within = format!(
            "<html><body><main>{}<p>Still read at the bottom.</p>{}</main></body></html>",
            "<div><span>".repeat(depth / 2),
            "</span></div>".repeat(depth / 2)
        );
        let loaded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || load(within.as_bytes(), None))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(loaded.text, "Still read at the bottom.");
    }

    proptest::proptest! {
        // Readability is slow in debug builds; fewer cases keep the suite quick.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = load(&bytes, None);
        }

        #[test]
        fn never_panics_on_tag_soup(html in "(<(p|div|h[1-6]|li|ul|ol|table|tr|td|pre|br|nav|script)>|</(p|div|h[1-6]|li|ul|ol|table|tr|td|pre|nav|script)>|[a-z ]{0,12}|\n){0,80}") {
            let _ = load(html.as_bytes(), None);
        }
    }
}
