//! Which embedding model a command uses, and what it says when there is none.
//!
//! The rule itself (pinned model, else the asked one, else the default; the same-model check) is
//! `knowhow_rag::embedding`'s. This module gives it the command line's resolution settings (downloads with a
//! progress bar on a terminal) and prints, once, why a collection is searched lexically.

use std::io::IsTerminal as _;

use knowhow_hub::ResolveOptions;
use knowhow_index::Writer;
use knowhow_rag::embedding::{embedder_for_ingest, IngestModel, LexicalOnly, ModelRequest};
use knowhow_rag::LoadedEmbedder;

use crate::Context;

/// `--embed-model` value that turns embeddings off.
pub const NONE: &str = "none";

/// Resolution settings from the environment; downloads (with a progress bar
/// on a terminal) only when `allow_download`.
pub fn resolve_options(context: &Context, allow_download: bool) -> ResolveOptions {
    let mut options = ResolveOptions::from_env(context.home.root());
    options.allow_download = allow_download;
    if allow_download && !context.json && std::io::stderr().is_terminal() {
        options.progress = Some(crate::model::progress_bars());
    }
    options
}

/// The embedder ingest into `writer` uses (`spec`: `--embed-model`): `None`
/// means lexical only, and the reason has been printed on stderr.
pub fn for_ingest(
    context: &Context,
    writer: &mut Writer,
    spec: Option<&str>,
    batch_size: usize,
) -> anyhow::Result<Option<LoadedEmbedder>> {
    let request = match spec {
        Some(NONE) => ModelRequest::NoVectors,
        Some(spec) => ModelRequest::Named(spec),
        None => ModelRequest::Collection,
    };
    let chosen = match embedder_for_ingest(writer, request, &resolve_options(context, true), batch_size) {
        Err(knowhow_rag::Error::VectorsRequired { collection, model }) => anyhow::bail!(
            "{collection} keeps vectors of {model}: every document needs one, so --embed-model none is refused \
             here (ingest into another collection for lexical-only search)"
        ),
        other => other?,
    };
    match chosen {
        IngestModel::Embed(loaded) => Ok(Some(*loaded)),
        IngestModel::LexicalOnly(LexicalOnly::Asked) => Ok(None),
        IngestModel::LexicalOnly(LexicalOnly::DefaultModelUnavailable(reason)) => {
            lexical_only_notice(
                &reason,
                "`knowhow model pull` fetches the default model; `knowhow reembed` then adds vectors",
            );
            Ok(None)
        }
        IngestModel::LexicalOnly(LexicalOnly::BuiltWithoutVectors(collection)) => {
            lexical_only_notice(
                &format!("{collection} was built without vectors"),
                "`knowhow reembed` adds them",
            );
            Ok(None)
        }
    }
}

/// Loads `spec`, downloading it when needed (the user asked for it, or it is
/// the default model's first use).
pub fn load(context: &Context, spec: &str, batch_size: usize) -> anyhow::Result<LoadedEmbedder> {
    let options = resolve_options(context, true);
    Ok(knowhow_rag::load_embedder(spec, &options, batch_size)?)
}

/// Says once per process that retrieval is lexical only, why, and what to do.
pub fn lexical_only_notice(reason: &str, advice: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let first_line = reason.lines().next().unwrap_or(reason).trim_end_matches(':');
        eprintln!("note: no embedding model available ({first_line}); working lexically (BM25 only). {advice}.");
    });
}
