//! Search and answers over knowhow collections: the ingest pipeline that
//! fills a collection, the retrieval that ranks its chunks for a question,
//! and the answering that turns those chunks into a grounded, cited answer.
//!
//! - [`pipeline`]: the incremental ingest pipeline (files into a collection,
//!   embedded and written a transaction per batch), shared by every entry
//!   point.
//! - [`embedding`]: which embedding model a collection's ingest and queries
//!   use, following the model the collection pins.
//! - [`retrieve`]: the four retrieval modes (lexical, dense, hybrid, rerank);
//!   [`retriever`] picks the mode for a collection and loads its models once.
//! - [`fusion`]: weighted Reciprocal Rank Fusion of the lexical and dense
//!   rankings.
//! - [`models`]: the embedders and re-rankers retrieval runs, local candle
//!   models or remote servers, from a spec.
//! - [`remote`]: the HTTP clients for remote embedding and re-ranking servers.
//! - [`llm`]: the [`llm::ChatModel`] interface and its two implementations, an
//!   OpenAI-compatible streaming client and a local decoder with its chat
//!   template.
//! - [`answer`]: grounded answers: sources found and packed into a prompt, the
//!   model (or the extractive answerer) run, citations checked, abstention on
//!   weak evidence, and the audit record.

pub mod answer;
pub mod batcher;
pub mod embedding;
pub mod fusion;
pub mod llm;
pub mod models;
pub mod pipeline;
pub mod remote;
pub mod retrieve;
pub mod retriever;

pub use models::{load_embedder, load_reranker, Embedder, LoadedEmbedder, Reranker};
pub use retrieve::{retrieve, retrieve_timed, Mode, Options, Retrieved, StageTimes};
pub use retriever::{LexicalFallback, Retriever, RetrieverSettings};

use knowhow_core::CollectionRef;

/// What can go wrong while retrieving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Index(#[from] knowhow_index::Error),
    #[error(transparent)]
    Model(#[from] knowhow_models::Error),
    #[error(transparent)]
    Resolve(#[from] knowhow_hub::Error),
    #[error(transparent)]
    Remote(#[from] remote::Error),
    #[error(transparent)]
    Fusion(#[from] fusion::FusionError),
    #[error("{0}")]
    Spec(String),
    #[error("{0} retrieval needs {1}")]
    NeedsModel(Mode, &'static str),
    /// Metadata filters run inside the dense scan.
    #[error("metadata filters apply to dense retrieval only, not to {0}")]
    FilterNeedsDense(Mode),
    #[error(
        "{collection} keeps vectors of {model}: every document needs one, so ingesting without vectors is refused \
         here (ingest into another collection for lexical-only search)"
    )]
    VectorsRequired { collection: CollectionRef, model: String },
    #[error("{collection} keeps vectors of {model}, which is not available to embed new documents")]
    PinnedModelUnavailable {
        collection: CollectionRef,
        model: String,
        #[source]
        source: Box<Error>,
    },
    /// A mode that embeds the query was asked of a collection whose model the caller does not hold.
    #[error(
        "{collection}'s vectors come from {model}, which is not loaded here ({reason}): ask for lexical retrieval"
    )]
    QueryModelNotHeld {
        collection: CollectionRef,
        model: String,
        reason: String,
    },
    /// Walking the given paths or the chunker's settings failed before any file was read.
    #[error("{0}")]
    Ingest(String),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}
