//! Which embedding model a collection's ingest and queries use — the rule every entry point (CLI, server) follows.
//!
//! A collection pins the model its vectors come from (the first ingest with a model pins it). Ingest uses the
//! pinned model, else the one asked for, else the default (all-MiniLM-L6-v2). Queries use the pinned model, or one
//! asked for that is the same model. Two specs name the same model when [`ModelPin::same_model`] says so, whatever
//! name or path reached the weights. When no model can be had, ingest still works, lexically, and the caller is told
//! why ([`LexicalOnly`]) so that it can say so.

use knowhow_core::CollectionRef;
use knowhow_hub::{ResolveOptions, DEFAULT_EMBEDDING_MODEL};
use knowhow_index::{ModelPin, Writer};

use crate::models::{load_embedder, LoadedEmbedder};
use crate::Error;

/// The embedding model a caller asks ingest to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelRequest<'a> {
    /// The collection's pinned model, else the default one.
    Collection,
    /// This spec (a name, a folder, `openai:URL#MODEL`).
    Named(&'a str),
    /// No vectors: a lexical-only collection.
    NoVectors,
}

/// What ingest embeds with.
pub enum IngestModel {
    Embed(Box<LoadedEmbedder>),
    /// Lexical only, and why, for the caller to tell its user.
    LexicalOnly(LexicalOnly),
}

/// Why a collection is searched lexically only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LexicalOnly {
    /// No model was asked for, and the default one could not be loaded (offline, say): the error's text.
    DefaultModelUnavailable(String),
    /// The collection's documents were ingested without vectors.
    BuiltWithoutVectors(CollectionRef),
    /// The caller asked for no vectors.
    Asked,
}

/// The embedder ingest into `writer`'s collection uses, pinned to the collection when it had no pin. `resolve`
/// decides whether models may be downloaded.
pub fn embedder_for_ingest(
    writer: &mut Writer,
    request: ModelRequest<'_>,
    resolve: &ResolveOptions,
    batch_size: usize,
) -> Result<IngestModel, Error> {
    let pin = writer.model_pin().cloned();
    let loaded = match (request, &pin) {
        (ModelRequest::NoVectors, Some(pin)) => {
            return Err(Error::VectorsRequired {
                collection: writer.collection().clone(),
                model: pin.id.clone(),
            })
        }
        (ModelRequest::NoVectors, None) => return Ok(IngestModel::LexicalOnly(LexicalOnly::Asked)),
        (ModelRequest::Named(spec), _) => load_embedder(spec, resolve, batch_size)?,
        (ModelRequest::Collection, Some(pin)) => {
            load_embedder(&pin.id, resolve, batch_size).map_err(|e| Error::PinnedModelUnavailable {
                collection: writer.collection().clone(),
                model: pin.id.clone(),
                source: Box::new(e),
            })?
        }
        (ModelRequest::Collection, None) => match load_embedder(DEFAULT_EMBEDDING_MODEL, resolve, batch_size) {
            Ok(loaded) => loaded,
            Err(e) => {
                return Ok(IngestModel::LexicalOnly(LexicalOnly::DefaultModelUnavailable(
                    error_chain(&e),
                )));
            }
        },
    };
    match &pin {
        // The pinned model under another name or path: keep the pin as it is.
        Some(pin) if pin.same_model(&loaded.pin) => Ok(IngestModel::Embed(Box::new(LoadedEmbedder {
            pin: pin.clone(),
            ..loaded
        }))),
        Some(pin) => Err(knowhow_index::Error::model_mismatch(writer.collection(), pin, &loaded.pin).into()),
        None => match writer.pin_model(&loaded.pin) {
            Ok(()) => Ok(IngestModel::Embed(Box::new(loaded))),
            // Documents ingested without vectors (offline, or with no vectors asked for).
            Err(knowhow_index::Error::Unembedded { collection, .. }) if request == ModelRequest::Collection => {
                Ok(IngestModel::LexicalOnly(LexicalOnly::BuiltWithoutVectors(collection)))
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// The embedder for queries against `collection`, pinned to `pin`: the pinned model itself, or `spec` when it is
/// the same model. `resolve` should not allow downloads: a query never waits for one.
pub fn embedder_for_query(
    collection: &CollectionRef,
    spec: Option<&str>,
    pin: &ModelPin,
    resolve: &ResolveOptions,
    batch_size: usize,
) -> Result<LoadedEmbedder, Error> {
    let loaded = load_embedder(spec.unwrap_or(&pin.id), resolve, batch_size)?;
    if !pin.same_model(&loaded.pin) {
        return Err(knowhow_index::Error::model_mismatch(collection, pin, &loaded.pin).into());
    }
    Ok(loaded)
}

/// `error: cause: cause`, as the error and its sources read in one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
