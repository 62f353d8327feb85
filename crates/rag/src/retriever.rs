//! The retrieval-mode policy: which mode a query over a collection runs and the models it needs, loaded once and
//! used for every query ([`Retriever`]). Shared by search, ask, eval and the server.

use std::sync::Arc;

use knowhow_core::CollectionRef;
use knowhow_hub::ResolveOptions;
use knowhow_index::Reader;

use crate::embedding::embedder_for_query;
use crate::models::{load_reranker, Embedder, LoadedEmbedder, Reranker};
use crate::retrieve::{retrieve_timed, Mode, Options, Retrieved, StageTimes};
use crate::Error;

/// Which models retrieval runs, besides the mode.
#[derive(Clone, Debug)]
pub struct RetrieverSettings {
    /// The query embedding model; must be the collection's (`None`: the collection's pinned model).
    pub embed_model: Option<String>,
    /// The cross-encoder of rerank mode.
    pub rerank_model: String,
    pub options: Options,
}

/// The models and settings of one retrieval mode over one collection.
///
/// Built once ([`Retriever::new`]), it answers any number of queries; it never downloads a model.
pub struct Retriever {
    mode: Mode,
    embedder: Option<Arc<LoadedEmbedder>>,
    reranker: Option<Arc<Reranker>>,
    options: Options,
    fallback: Option<LexicalFallback>,
}

/// Why a retriever that was free to choose fell back to lexical search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexicalFallback {
    /// The model the collection's vectors come from, which could not be loaded.
    pub model: String,
    /// The loading error, with its causes, on one line.
    pub reason: String,
}

impl Retriever {
    /// Picks the mode and loads what it needs. `requested: None` picks hybrid when the collection has vectors and
    /// lexical otherwise; then a collection whose model cannot be loaded is searched lexically, and
    /// [`Retriever::fallback`] says why. A requested mode that cannot run is an error.
    pub fn new(
        reader: &Reader,
        collection: &CollectionRef,
        requested: Option<Mode>,
        settings: &RetrieverSettings,
        resolve: &ResolveOptions,
    ) -> Result<Retriever, Error> {
        let pin = reader.model_pin()?;
        let mut mode = requested.unwrap_or(if pin.is_some() { Mode::Hybrid } else { Mode::Lexical });
        let mut embedder = None;
        let mut fallback = None;
        if mode != Mode::Lexical {
            let Some(pin) = &pin else {
                return Err(knowhow_index::Error::NoModel(collection.clone()).into());
            };
            match embedder_for_query(collection, settings.embed_model.as_deref(), pin, resolve, 32) {
                Ok(loaded) => embedder = Some(Arc::new(loaded)),
                Err(e) if requested.is_none() => {
                    fallback = Some(LexicalFallback {
                        model: pin.id.clone(),
                        reason: crate::embedding::error_chain(&e),
                    });
                    mode = Mode::Lexical;
                }
                Err(e) => return Err(e),
            }
        }
        let reranker = match mode {
            Mode::Rerank => Some(Arc::new(load_reranker(&settings.rerank_model, resolve)?)),
            _ => None,
        };
        Retriever::assemble(mode, embedder, reranker, &settings.options, fallback)
    }

    /// A retriever over models the caller already holds, as a server does: one embedder shared by every collection
    /// that pins its model, and a cross-encoder if it serves one. Never loads anything. `requested: None` picks
    /// hybrid when the collection's vectors come from `embedder`'s model and lexical otherwise (then
    /// [`Retriever::fallback`] says why); a requested mode whose model is not held is an error.
    pub fn with_models(
        reader: &Reader,
        collection: &CollectionRef,
        requested: Option<Mode>,
        options: &Options,
        embedder: Option<Arc<LoadedEmbedder>>,
        reranker: Option<Arc<Reranker>>,
    ) -> Result<Retriever, Error> {
        let pin = reader.model_pin()?;
        let mut mode = requested.unwrap_or(if pin.is_some() { Mode::Hybrid } else { Mode::Lexical });
        let mut fallback = None;
        let embedder = match (&pin, embedder) {
            _ if mode == Mode::Lexical => None,
            (None, _) => return Err(knowhow_index::Error::NoModel(collection.clone()).into()),
            (Some(pin), Some(held)) if pin.same_model(&held.pin) => Some(held),
            (Some(pin), held) => {
                let reason = match held {
                    Some(held) => format!("the embedding model held is {}", held.pin.id),
                    None => "no embedding model is held".to_string(),
                };
                if requested.is_some() {
                    return Err(Error::QueryModelNotHeld {
                        collection: collection.clone(),
                        model: pin.id.clone(),
                        reason,
                    });
                }
                fallback = Some(LexicalFallback {
                    model: pin.id.clone(),
                    reason,
                });
                mode = Mode::Lexical;
                None
            }
        };
        let reranker = match (mode, reranker) {
            (Mode::Rerank, None) => return Err(Error::NeedsModel(mode, "a re-ranking model")),
            (Mode::Rerank, reranker) => reranker,
            _ => None,
        };
        Retriever::assemble(mode, embedder, reranker, options, fallback)
    }

    fn assemble(
        mode: Mode,
        embedder: Option<Arc<LoadedEmbedder>>,
        reranker: Option<Arc<Reranker>>,
        options: &Options,
        fallback: Option<LexicalFallback>,
    ) -> Result<Retriever, Error> {
        if options.filter.is_some() && mode != Mode::Dense {
            return Err(Error::FilterNeedsDense(mode));
        }
        Ok(Retriever {
            mode,
            embedder,
            reranker,
            options: options.clone(),
            fallback,
        })
    }

    /// The mode every query runs.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Set when the mode was free and the collection's model could not be loaded.
    pub fn fallback(&self) -> Option<&LexicalFallback> {
        self.fallback.as_ref()
    }

    /// The query embedder, when the mode uses one.
    pub fn embedder(&self) -> Option<&Embedder> {
        self.embedder.as_ref().map(|e| &e.embedder)
    }

    pub fn reranker(&self) -> Option<&Reranker> {
        self.reranker.as_deref()
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The top `k` chunks for `query`.
    pub fn retrieve(&self, reader: &Reader, query: &str, k: usize) -> Result<Vec<Retrieved>, Error> {
        self.retrieve_timed(reader, query, k, &mut StageTimes::default())
    }

    /// [`Retriever::retrieve`], saying in `times` how long each stage took.
    pub fn retrieve_timed(
        &self,
        reader: &Reader,
        query: &str,
        k: usize,
        times: &mut StageTimes,
    ) -> Result<Vec<Retrieved>, Error> {
        let models = (self.embedder(), self.reranker());
        retrieve_timed(reader, query, k, self.mode, models, &self.options, times)
    }
}
