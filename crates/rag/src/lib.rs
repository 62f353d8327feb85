//! Retrieval for knowhow: the four retrieval modes ([`retrieve`]), rank
//! fusion ([`fusion`]), the models they run ([`models`]: local candle models or
//! remote servers) and the HTTP clients for remote embedding and re-ranking
//! servers ([`remote`]).

pub mod answer;
pub mod fusion;
pub mod llm;
pub mod models;
pub mod remote;
pub mod retrieve;

pub use models::{load_embedder, load_reranker, Embedder, LoadedEmbedder, Reranker};
pub use retrieve::{retrieve, Mode, Options, Retrieved};

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
    #[error("{0:?} retrieval needs {1}")]
    NeedsModel(Mode, &'static str),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}
