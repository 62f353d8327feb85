//! Shared vocabulary of knowhow: the normalized [`Document`] every loader
//! produces, the [`Chunk`] the chunker cuts from it (named by its
//! [`ChunkId`], placed by its [`ChunkLocation`]), and the [`CollectionRef`]
//! that names where both live. Every other crate depends on this one and on
//! nothing else of the workspace below it.

mod cancel;
pub mod time;

pub use cancel::Cancellation;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Free-form metadata attached to a document: loader facts (page count,
/// author), or the extra columns of a database row.
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// One normalized document, whatever its source format.
///
/// `text` is the whole extracted text; `sections` and `pages` are byte ranges
/// into it, so a chunk can always say which heading and page it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Stable identifier inside a collection (a row's id field, or a hash of
    /// the file's path for files).
    pub id: String,
    /// Where the document came from: an absolute file path, or `path#row` for
    /// a row of a CSV/JSONL file.
    pub source: String,
    pub title: String,
    pub text: String,
    /// Sections in document order. Sections do not overlap; text before the
    /// first heading belongs to no section.
    pub sections: Vec<Section>,
    /// Pages in order, for formats that have pages (PDF). Empty otherwise.
    pub pages: Vec<Page>,
    pub metadata: Metadata,
    /// blake3 of `title`, `text`, and `metadata`: equal hashes mean equal
    /// documents, so re-ingesting an unchanged one does no work.
    pub hash: String,
}

impl Document {
    /// Builds a document and computes its content hash.
    pub fn new(
        id: String,
        source: String,
        title: String,
        text: String,
        sections: Vec<Section>,
        pages: Vec<Page>,
        metadata: Metadata,
    ) -> Document {
        let mut doc = Document {
            id,
            source,
            title,
            text,
            sections,
            pages,
            metadata,
            hash: String::new(),
        };
        doc.hash = doc.content_hash();
        doc
    }

    /// blake3 over everything a reader sees, hex-encoded.
    pub fn content_hash(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for part in [&self.title, &self.text] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let metadata = serde_json::to_vec(&self.metadata).expect("metadata is JSON");
        hasher.update(&metadata);
        let structure = serde_json::to_vec(&(&self.sections, &self.pages)).expect("serializable");
        hasher.update(&structure);
        hasher.finalize().to_hex().to_string()
    }
}

/// A headed part of a document: `heading_path` runs from the outermost heading
/// to this one, e.g. `["Install", "On Linux"]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub heading_path: Vec<String>,
    /// 1 for a top-level heading.
    pub level: u8,
    /// Byte range of the section (its heading line included) in the text.
    pub start: usize,
    pub end: usize,
}

/// One page of a paged document, as a byte range of the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// 1-based page number, as a PDF viewer shows it.
    pub number: u32,
    pub start: usize,
    pub end: usize,
}

/// Which chunk: the document it was cut from and its position there.
///
/// The one key of a chunk everywhere: in the store, the derived indexes,
/// retrieval results and answers. `ordinal` is 0-based: the document's first
/// chunk is 0, the next 1, in text order. Ordering is by document id, then
/// ordinal, so sorted ids list each document's chunks in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId {
    pub document_id: String,
    /// 0-based position of the chunk in its document.
    pub ordinal: u32,
}

impl ChunkId {
    pub fn new(document_id: impl Into<String>, ordinal: u32) -> ChunkId {
        ChunkId {
            document_id: document_id.into(),
            ordinal,
        }
    }
}

/// `DOCUMENT#ORDINAL`, e.g. `3f2a9c#0` for a document's first chunk.
impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.document_id, self.ordinal)
    }
}

/// Where a chunk lies in its document: the section and pages it belongs to,
/// and its exact span of the document text. Shared by the chunker's
/// [`Chunk`] and everything that shows or cites a chunk later, so a chunk's
/// position is described one way everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLocation {
    /// Heading path of the section the chunk starts in; empty when none.
    pub heading_path: Vec<String>,
    /// First and last page the chunk touches, for paged documents.
    pub pages: Option<(u32, u32)>,
    /// Byte span of the chunk's text in the document text.
    pub start: usize,
    pub end: usize,
    /// The same span counted in Unicode scalar values, for callers that index
    /// strings by character (Python, JavaScript).
    pub char_start: usize,
    pub char_end: usize,
}

/// A piece of a document small enough to embed and to show as a source.
///
/// Serialized flat (`document_id`, `ordinal`, `text`, `heading_path`, ...,
/// `tokens`): `id` and `location` are only groupings in Rust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    #[serde(flatten)]
    pub id: ChunkId,
    pub text: String,
    #[serde(flatten)]
    pub location: ChunkLocation,
    /// Size of the chunk as the chunker's token counter measured it.
    pub tokens: u32,
}

/// Names a collection: every collection lives in a namespace, and nothing
/// crosses namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CollectionRef {
    pub namespace: String,
    pub collection: String,
}

impl CollectionRef {
    /// Validates both names: they become directory names, so only
    /// `[A-Za-z0-9_.-]`, 1 to 64 characters, not starting with a dot.
    pub fn new(namespace: &str, collection: &str) -> Result<CollectionRef, Error> {
        validate_name("namespace", namespace)?;
        validate_name("collection", collection)?;
        Ok(CollectionRef {
            namespace: namespace.to_string(),
            collection: collection.to_string(),
        })
    }
}

impl fmt::Display for CollectionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.collection)
    }
}

fn validate_name(what: &'static str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// Errors shared by every crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what} name {name:?}: use 1-64 characters of A-Z a-z 0-9 _ . - (not starting with '.')")]
    InvalidName { what: &'static str, name: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_escape_the_home_directory_are_refused() {
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "ä", &"x".repeat(65)] {
            assert!(CollectionRef::new("default", bad).is_err(), "{bad:?}");
            assert!(CollectionRef::new(bad, "default").is_err(), "{bad:?}");
        }
        let ok = CollectionRef::new("team-a", "docs_v1.2").unwrap();
        assert_eq!(ok.to_string(), "team-a/docs_v1.2");
    }

    #[test]
    fn hash_changes_with_text_title_and_metadata_only() {
        let doc = |title: &str, text: &str, key: &str| {
            let mut metadata = Metadata::new();
            metadata.insert(key.into(), serde_json::json!(1));
            Document::new(
                "id".into(),
                "src".into(),
                title.into(),
                text.into(),
                vec![],
                vec![],
                metadata,
            )
        };
        let base = doc("t", "body", "k");
        assert_eq!(base.hash, doc("t", "body", "k").hash);
        assert_ne!(base.hash, doc("u", "body", "k").hash);
        assert_ne!(base.hash, doc("t", "body!", "k").hash);
        assert_ne!(base.hash, doc("t", "body", "j").hash);
        // Length-prefixing keeps title/text boundaries apart.
        assert_ne!(doc("ab", "c", "k").hash, doc("a", "bc", "k").hash);
    }

    #[test]
    fn chunks_serialize_flat_and_ids_sort_by_document_then_ordinal() {
        let chunk = Chunk {
            id: ChunkId::new("doc", 2),
            text: "Some text.".into(),
            location: ChunkLocation {
                heading_path: vec!["Intro".into()],
                pages: Some((1, 2)),
                start: 4,
                end: 14,
                char_start: 3,
                char_end: 13,
            },
            tokens: 3,
        };
        let json = serde_json::to_string(&chunk).unwrap();
        assert_eq!(
            json,
            r#"{"document_id":"doc","ordinal":2,"text":"Some text.","heading_path":["Intro"],"pages":[1,2],"start":4,"end":14,"char_start":3,"char_end":13,"tokens":3}"#
        );
        assert_eq!(serde_json::from_str::<Chunk>(&json).unwrap(), chunk);
        assert_eq!(chunk.id.to_string(), "doc#2");

        let mut ids = [ChunkId::new("b", 0), ChunkId::new("a", 10), ChunkId::new("a", 9)];
        ids.sort();
        assert_eq!(ids, [ChunkId::new("a", 9), ChunkId::new("a", 10), ChunkId::new("b", 0)]);
    }
}
