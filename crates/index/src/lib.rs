//! The embedded knowledge base of knowhow.
//!
//! A [`Home`] directory holds collections, each in its namespace:
//! `HOME/collections/NAMESPACE/COLLECTION/` with `store.redb` (the source of
//! truth), and derived from it `lexical/` (a tantivy BM25 index) and
//! `vectors/` (a flat file of chunk vectors for exact dense search).
//!
//! [`Home`] opens a collection three ways: a [`Writer`] (exclusive; applies
//! batches and keeps the derived indexes in step), a [`Reader`] (searches,
//! never waiting for a writer) and a [`Catalog`] (read-only store access:
//! listing, showing, [`Catalog::check`]).
//!
//! # Invariants
//! - The store is written first, one transaction per batch of whole
//!   documents with their chunks and vectors; once [`Writer::apply`] returns,
//!   the batch is durable (acknowledged).
//! - Every change to a document is logged in the store under a sequence
//!   number; each tantivy commit and each vector file commit records the last
//!   sequence number it contains. Opening a writer replays what either lacks,
//!   so a crash at any point loses nothing acknowledged. The log is trimmed
//!   only up to a number both have made durable.
//! - A document's chunks enter and leave each derived index in one commit, so
//!   a search never sees half a document.
//! - A collection with vectors pins the model that made them ([`ModelPin`]);
//!   vectors and queries of another model are refused.
//! - One process writes a collection at a time (redb's file lock); searches
//!   read the last commits and never wait for a writer.

mod catalog;
mod home;
mod lexical;
mod reader;
mod store;
mod vectors;
mod writer;

use std::path::{Path, PathBuf};

use knowhow_core::CollectionRef;

pub use catalog::{Catalog, CheckReport};
pub use home::Home;
pub use lexical::{analyze, english_analyzer, Hit, ScoredChunk, Snippet, SourceChunk};
pub use reader::Reader;
pub use store::{SourceRecord, StoredDocument};
pub use vectors::{Filter, ModelPin, WeightsChecksum};
pub use writer::{Applied, ChunkText, DocumentUpdate, ReembedProgress, SourceUpdate, Writer};

/// Errors of the store and index, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("collection {0} does not exist (create it with `knowhow collections create`, or ingest into it)")]
    NoSuchCollection(CollectionRef),
    #[error("collection {0} already exists")]
    CollectionExists(CollectionRef),
    #[error("collection {0} is busy: another knowhow process is writing to it; try again when it finishes")]
    Busy(CollectionRef),
    #[error("store: {0}")]
    Store(#[from] redb::Error),
    #[error("lexical index: {0}")]
    Lexical(#[from] tantivy::TantivyError),
    /// A file or directory operation failed: `action` says what was being
    /// done (`open`, `create directory`...), `path` on what.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store file could not be opened (a redb error other than plain
    /// I/O, which is [`Error::Io`]: an unsupported format, say).
    #[error("cannot open {}: {source}", .path.display())]
    OpenStore {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("corrupt collection data: {0}")]
    Corrupt(String),
    /// Vectors or a query of another model than the collection's: the one wording of that rule, wherever it is
    /// hit (ingest, query, pinning).
    #[error(
        "collection {collection} keeps vectors of {pinned}, not of {given}: vectors of two models cannot be \
         compared. Use {} with it, or re-embed the collection with {}",
        .pinned.id,
        .given.id
    )]
    ModelMismatch {
        collection: CollectionRef,
        pinned: Box<ModelPin>,
        given: Box<ModelPin>,
    },
    #[error(
        "collection {0} has no embedding model, so it has no vectors to search: ingest into it with an \
         embedding model, or re-embed it with one"
    )]
    NoModel(CollectionRef),
    #[error(
        "collection {collection} holds {documents} documents without vectors, so it cannot take model {} \
         by ingesting: re-embed them all with {}",
        .model.id,
        .model.id
    )]
    Unembedded {
        collection: CollectionRef,
        documents: u64,
        model: Box<ModelPin>,
    },
    #[error("invalid model pin: {0}")]
    InvalidModelPin(String),
    #[error("vectors of document {document}: {problem}")]
    InvalidVectors { document: String, problem: String },
    #[error("query vector for collection {collection}: {problem}")]
    InvalidQuery { collection: CollectionRef, problem: String },
    #[error(
        "collection {0} has no vector file yet: it is built when the ingest running now finishes; \
         try again then"
    )]
    NoVectorFile(CollectionRef),
    #[error("re-embedding collection {collection}: {problem}")]
    Reembed { collection: CollectionRef, problem: String },
}

impl Error {
    /// The one error for vectors or queries of another model than the collection's.
    pub fn model_mismatch(collection: &CollectionRef, pinned: &ModelPin, given: &ModelPin) -> Error {
        Error::ModelMismatch {
            collection: collection.clone(),
            pinned: Box::new(pinned.clone()),
            given: Box::new(given.clone()),
        }
    }
}

macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Store(redb::Error::from(e))
            }
        }
    )*};
}
store_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// For `map_err`: an I/O error as [`Error::Io`], naming what was being done
/// to which path. The path is copied only when there is an error, so the hot
/// write paths pay nothing for it.
pub(crate) fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
