//! How deeply markup may nest, and the check of an HTML page against that
//! bound before the DOM is built.
//!
//! A page of 100,000 nested `<div>`s is half a megabyte, yet the HTML parser
//! takes time quadratic in the depth (each start tag looks down the stack of
//! open elements) and the DOM code after it recurses once per level: such a
//! page ran for minutes, and on a worker thread overflowed its stack and
//! aborted the whole ingest. Real pages stay far below the bound; Chromium's
//! parser stops nesting at the same depth.
//!
//! How deep a page nests is decided by the parser, not by its tags: it closes
//! unclosed `<p>`s and `<li>`s, ignores stray end tags, and reopens formatting
//! elements (`<b>`, `<a>`) that misnested markup closed early, so that
//! `<b><a>` repeated nests ever deeper although every `<a>` closes the one
//! before. So the page is parsed by the same parser `dom_query` uses, into a
//! tree that only knows where each node hangs, a slice at a time, stopping
//! at the first slice that passes the bound: the time spent on a hostile page
//! is that of its first few kilobytes.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use html5ever::interface::{ElementFlags, NodeOrText, QuirksMode, TreeSink};
use html5ever::tendril::{StrTendril, TendrilSink};
use html5ever::tree_builder::TreeBuilderOpts;
use html5ever::{Attribute, LocalName, Namespace, ParseOpts, QualName};

use super::LoadError;

/// The deepest nesting of elements a loader accepts, in HTML (counting the
/// `<html>` element as 1) and in the XML parts of a .docx.
pub const MAX_NESTING_DEPTH: usize = 512;

/// The refusal of a file nested deeper than [`MAX_NESTING_DEPTH`]; `what` is
/// the markup (`the HTML`, `word/document.xml`), `at` where the bound was
/// passed.
pub(crate) fn too_deep(what: &str, at: &str) -> LoadError {
    LoadError::new(format!(
        "refused: {what} nests elements more than {MAX_NESTING_DEPTH} levels deep ({at}); no real document \
         needs that, and parsing it would take minutes or overflow the stack. If the file is genuine, save \
         it as plain text and load that"
    ))
}

/// How much of the page the parser reads between two looks at the depth.
const SLICE_BYTES: usize = 16 * 1024;

/// Where `html` first nests elements deeper than [`MAX_NESTING_DEPTH`], as
/// "at line N", or `None` when it never does.
pub(crate) fn html_too_deep(html: &str) -> Option<String> {
    let opts = ParseOpts {
        tree_builder: TreeBuilderOpts {
            // As dom_query parses: the content of <noscript> is markup.
            scripting_enabled: false,
            ..TreeBuilderOpts::default()
        },
        ..ParseOpts::default()
    };
    let mut parser = html5ever::parse_document(DepthSink::new(), opts);
    let mut rest = html;
    while !rest.is_empty() {
        let mut end = rest.len().min(SLICE_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        parser.process(StrTendril::from_slice(&rest[..end]));
        if let Some(line) = parser.tokenizer.sink.sink.too_deep_at.get() {
            return Some(format!("at line {line}"));
        }
        rest = &rest[end..];
    }
    parser.finish().map(|line| format!("at line {line}"))
}

type Handle = Rc<Node>;

/// A node of the measuring tree: its name (the parser asks for it) and
/// where it hangs, nothing else.
struct Node {
    name: QualName,
    /// The slot of the node it is a child of.
    parent: RefCell<Option<Rc<Slot>>>,
    /// The slot its children hang from, while it has any.
    children: RefCell<Weak<Slot>>,
    /// Its depth, while the epoch it was measured in lasts.
    depth: Cell<Option<(u64, usize)>>,
}

/// What the children of a node point at, rather than at the node itself: the
/// parser's "move all the children of A to B" repoints their slot at once.
/// Children own their parent's slot and a slot its node, so a node lives as
/// long as anything below it does, and nothing points downwards.
struct Slot {
    node: RefCell<Handle>,
}

impl Node {
    fn new(name: QualName) -> Handle {
        Rc::new(Node {
            name,
            parent: RefCell::new(None),
            children: RefCell::new(Weak::new()),
            depth: Cell::new(None),
        })
    }

    fn parent(&self) -> Option<Handle> {
        self.parent.borrow().as_ref().map(|slot| slot.node.borrow().clone())
    }

    fn is_element(&self) -> bool {
        !self.name.local.is_empty()
    }
}

fn slot_of(node: &Handle) -> Rc<Slot> {
    if let Some(slot) = node.children.borrow().upgrade() {
        return slot;
    }
    let slot = Rc::new(Slot {
        node: RefCell::new(node.clone()),
    });
    *node.children.borrow_mut() = Rc::downgrade(&slot);
    slot
}

/// The parser's tree sink: it builds the measuring tree and notes the line
/// of the first element deeper than the bound.
struct DepthSink {
    document: Handle,
    /// Bumped whenever nodes that may have children move: every depth
    /// measured before is then measured again, once, when next needed.
    epoch: Cell<u64>,
    line: Cell<u64>,
    too_deep_at: Cell<Option<u64>>,
}

fn nameless() -> QualName {
    QualName::new(None, Namespace::from(""), LocalName::from(""))
}

impl DepthSink {
    fn new() -> DepthSink {
        DepthSink {
            document: Node::new(nameless()),
            epoch: Cell::new(0),
            line: Cell::new(1),
            too_deep_at: Cell::new(None),
        }
    }

    /// The depth of `node` (the document's is 0), walking up to the nearest
    /// node measured in this epoch; past the bound the walk stops.
    fn depth(&self, node: &Handle) -> usize {
        let epoch = self.epoch.get();
        let mut chain = Vec::new();
        let mut current = node.clone();
        let mut depth = loop {
            match current.depth.get() {
                Some((measured, depth)) if measured == epoch => break depth,
                _ => {}
            }
            let Some(parent) = current.parent() else {
                current.depth.set(Some((epoch, 0)));
                break 0;
            };
            if chain.len() > MAX_NESTING_DEPTH {
                return chain.len();
            }
            chain.push(current);
            current = parent;
        };
        for node in chain.into_iter().rev() {
            depth += 1;
            node.depth.set(Some((epoch, depth)));
        }
        depth
    }

    /// Hangs `child` from `slot`, a node of depth `parent_depth`'s slot.
    fn attach(&self, slot: Rc<Slot>, child: NodeOrText<Handle>) {
        let NodeOrText::AppendNode(child) = child else {
            return;
        };
        if child.parent.borrow().is_some() || child.children.borrow().upgrade().is_some() {
            self.epoch.set(self.epoch.get() + 1);
        }
        let parent = slot.node.borrow().clone();
        *child.parent.borrow_mut() = Some(slot);
        let depth = self.depth(&parent) + 1;
        child.depth.set(Some((self.epoch.get(), depth)));
        if depth > MAX_NESTING_DEPTH && child.is_element() && self.too_deep_at.get().is_none() {
            self.too_deep_at.set(Some(self.line.get()));
        }
    }
}

impl TreeSink for DepthSink {
    type Handle = Handle;
    type Output = Option<u64>;
    type ElemName<'a> = &'a QualName;

    fn finish(self) -> Option<u64> {
        self.too_deep_at.get()
    }

    fn parse_error(&self, _message: Cow<'static, str>) {}

    fn get_document(&self) -> Handle {
        self.document.clone()
    }

    fn elem_name<'a>(&'a self, target: &'a Handle) -> &'a QualName {
        &target.name
    }

    fn create_element(&self, name: QualName, _attrs: Vec<Attribute>, _flags: ElementFlags) -> Handle {
        Node::new(name)
    }

    fn create_comment(&self, _text: StrTendril) -> Handle {
        Node::new(nameless())
    }

    fn create_pi(&self, _target: StrTendril, _data: StrTendril) -> Handle {
        Node::new(nameless())
    }

    fn append(&self, parent: &Handle, child: NodeOrText<Handle>) {
        self.attach(slot_of(parent), child);
    }

    fn append_based_on_parent_node(&self, element: &Handle, prev_element: &Handle, child: NodeOrText<Handle>) {
        if element.parent.borrow().is_some() {
            self.append_before_sibling(element, child);
        } else {
            self.append(prev_element, child);
        }
    }

    fn append_doctype_to_document(&self, _name: StrTendril, _public_id: StrTendril, _system_id: StrTendril) {}

    /// A template's content hangs one level below it (a new fragment each
    /// time: only the depth matters).
    fn get_template_contents(&self, target: &Handle) -> Handle {
        let contents = Node::new(nameless());
        *contents.parent.borrow_mut() = Some(slot_of(target));
        contents
    }

    fn same_node(&self, x: &Handle, y: &Handle) -> bool {
        Rc::ptr_eq(x, y)
    }

    fn set_quirks_mode(&self, _mode: QuirksMode) {}

    fn append_before_sibling(&self, sibling: &Handle, new_node: NodeOrText<Handle>) {
        let slot = sibling.parent.borrow().clone();
        if let Some(slot) = slot {
            self.attach(slot, new_node);
        }
    }

    fn add_attrs_if_missing(&self, _target: &Handle, _attrs: Vec<Attribute>) {}

    fn remove_from_parent(&self, target: &Handle) {
        *target.parent.borrow_mut() = None;
        self.epoch.set(self.epoch.get() + 1);
    }

    fn reparent_children(&self, node: &Handle, new_parent: &Handle) {
        let slot = std::mem::take(&mut *node.children.borrow_mut());
        if let Some(slot) = slot.upgrade() {
            *slot.node.borrow_mut() = new_parent.clone();
            self.epoch.set(self.epoch.get() + 1);
        }
    }

    fn set_current_line(&self, line: u64) {
        self.line.set(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, depth: usize) -> String {
        format!("{}text{}", open.repeat(depth), close.repeat(depth))
    }

    /// `<html>` and `<body>` are two levels of their own.
    const DIVS_WITHIN: usize = MAX_NESTING_DEPTH - 2;

    #[test]
    fn the_bound_is_passed_where_the_nesting_passes_it() {
        assert_eq!(html_too_deep(&nested("<div>", "</div>", DIVS_WITHIN)), None);
        let deep = format!("<p>intro</p>\n\n{}", nested("<div>\n", "</div>", DIVS_WITHIN + 1));
        assert_eq!(html_too_deep(&deep).as_deref(), Some("at line 513"));
        // Self-closing syntax does not close an HTML element, only SVG's.
        assert!(html_too_deep(&"<div/>".repeat(DIVS_WITHIN + 1)).is_some());
        assert_eq!(html_too_deep(&format!("<svg>{}</svg>", "<g/>".repeat(10_000))), None);
        assert!(html_too_deep(&nested("<svg><g>", "</g></svg>", DIVS_WITHIN / 2 + 1)).is_some());
    }

    /// Start tags that end an open element, and stray end tags, add no depth.
    #[test]
    fn what_the_parser_closes_by_itself_adds_no_depth() {
        let flat = [
            "<p>para".repeat(5_000),
            "<ul>".to_string() + &"<li>item".repeat(5_000),
            "<dl>".to_string() + &"<dt>term<dd>definition".repeat(5_000),
            "<table>".to_string() + &"<tr><td>cell<td>cell".repeat(5_000),
            "<select>".to_string() + &"<option>choice".repeat(5_000),
            "<br><img src=x><hr><input>".repeat(5_000),
            "<a href=1>link".repeat(5_000),
            "<h1>one<h2>two".repeat(5_000),
            "<td>stray cell outside a table".repeat(5_000),
            "<form><form>".repeat(5_000),
            "<section><b>bold</section>".repeat(5_000),
            "</div></body></html>".repeat(5_000),
        ];
        for html in flat {
            assert_eq!(html_too_deep(&html), None, "{}", &html[..40]);
        }
    }

    /// Markup that closes its tags, or looks as if it did, yet nests: each
    /// of these once got past a scan of the tags alone.
    #[test]
    fn markup_that_nests_although_its_tags_close_is_measured_as_parsed() {
        for unit in [
            "<b><a>x",
            "<i><button>x",
            "<b><nobr>x",
            "</p><optgroup>",
            "<p><frameset>",
            "<span><div>x</span>",
        ] {
            let html = unit.repeat(2 * MAX_NESTING_DEPTH);
            assert!(html_too_deep(&html).is_some(), "{unit}");
        }
    }

    #[test]
    fn comments_scripts_and_attribute_values_hold_no_tags() {
        let hidden = [
            format!("<!-- {} -->", "<div>".repeat(10_000)),
            format!("<script>var s = '{}';</script>", "<div>".repeat(10_000)),
            format!("<style>/* {} */</style>", "<div>".repeat(10_000)),
            format!("<title>{}</title>", "<div>".repeat(10_000)),
            format!("<img alt=\"{}\">", "<div>".repeat(10_000)),
            format!("<plaintext>{}", "<div>".repeat(10_000)),
        ];
        for html in &hidden {
            assert_eq!(html_too_deep(html), None, "{}", &html[..30]);
        }
        // <noscript> holds markup, as dom_query parses it.
        assert!(html_too_deep(&format!("<noscript>{}", "<div>".repeat(DIVS_WITHIN + 1))).is_some());
    }

    #[test]
    fn a_hostile_page_is_refused_after_its_first_slice() {
        let started = std::time::Instant::now();
        let html = "<div>".repeat(1_000_000);
        assert_eq!(html_too_deep(&html).as_deref(), Some("at line 1"));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
