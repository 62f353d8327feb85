//! Which embedding model a command uses, and what happens when there is none.
//!
//! A collection pins the model its vectors come from (the first ingest with
//! a model pins it). Ingest uses the pinned model, else the one named with
//! `--embed-model`, else the default (all-MiniLM-L6-v2, fetched on first use
//! with a progress bar). When no model can be had at all, ingest and search
//! still work, lexically, and say so once.

use std::io::IsTerminal as _;

use knowhow_hub::{ResolveOptions, DEFAULT_EMBEDDING_MODEL};
use knowhow_index::ModelPin;
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

/// The embedder ingest should use: `None` means lexical only (and the reason
/// has been printed on stderr).
pub fn for_ingest(
    context: &Context,
    spec: Option<&str>,
    pin: Option<&ModelPin>,
    batch_size: usize,
) -> anyhow::Result<Option<LoadedEmbedder>> {
    match (spec, pin) {
        (Some(NONE), Some(pin)) => anyhow::bail!(
            "{} keeps vectors of {}: every document needs one, so --embed-model none is refused here \
             (ingest into another collection for lexical-only search)",
            context.collection,
            pin.id
        ),
        (Some(NONE), None) => Ok(None),
        (Some(spec), _) => Ok(Some(load(context, spec, batch_size)?)),
        (None, Some(pin)) => match load(context, &pin.id, batch_size) {
            Ok(loaded) => Ok(Some(loaded)),
            Err(e) => Err(e.context(format!(
                "{} keeps vectors of {}, which is not available to embed new documents",
                context.collection, pin.id
            ))),
        },
        (None, None) => match load(context, DEFAULT_EMBEDDING_MODEL, batch_size) {
            Ok(loaded) => Ok(Some(loaded)),
            Err(e) => {
                lexical_only_notice(
                    &format!("{e:#}"),
                    "`knowhow model pull` fetches the default model; `knowhow reembed` then adds vectors",
                );
                Ok(None)
            }
        },
    }
}

/// The embedder a query in `mode` needs against a collection pinned to
/// `pin`: the pinned model itself (never downloaded), or `spec` when it is
/// the same model.
pub fn for_query(
    context: &Context,
    spec: Option<&str>,
    pin: &ModelPin,
    batch_size: usize,
) -> anyhow::Result<LoadedEmbedder> {
    let spec = spec.unwrap_or(&pin.id);
    let options = resolve_options(context, false);
    let loaded = knowhow_rag::load_embedder(spec, &options, batch_size)?;
    if !same_model(&loaded.pin, pin) {
        anyhow::bail!(
            "{} holds vectors of {pin}; the query model {} differs (use the pinned model, or migrate with \
             `knowhow reembed --model {}`)",
            context.collection,
            loaded.pin,
            loaded.pin.id
        );
    }
    Ok(loaded)
}

/// Loads `spec`, downloading it when needed (the user asked for it, or it is
/// the default model's first use).
pub fn load(context: &Context, spec: &str, batch_size: usize) -> anyhow::Result<LoadedEmbedder> {
    let options = resolve_options(context, true);
    Ok(knowhow_rag::load_embedder(spec, &options, batch_size)?)
}

/// Two pins name the same model when the weights are the same, whatever name
/// or path reached them.
pub fn same_model(a: &ModelPin, b: &ModelPin) -> bool {
    if a.checksum == "remote" || b.checksum == "remote" {
        return a == b;
    }
    a.checksum == b.checksum && a.dimension == b.dimension && a.pooling == b.pooling && a.normalized == b.normalized
}

/// Says once per process that retrieval is lexical only, why, and what to do.
pub fn lexical_only_notice(reason: &str, advice: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let first_line = reason.lines().next().unwrap_or(reason).trim_end_matches(':');
        eprintln!("note: no embedding model available ({first_line}); working lexically (BM25 only). {advice}.");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(id: &str, checksum: &str) -> ModelPin {
        ModelPin {
            id: id.into(),
            dimension: 384,
            pooling: "mean".into(),
            normalized: true,
            checksum: checksum.into(),
        }
    }

    #[test]
    fn the_same_weights_reached_by_another_name_are_the_same_model() {
        assert!(same_model(
            &pin("all-MiniLM-L6-v2", "sha256:aa"),
            &pin("/models/minilm", "sha256:aa")
        ));
        assert!(!same_model(
            &pin("all-MiniLM-L6-v2", "sha256:aa"),
            &pin("all-MiniLM-L6-v2", "sha256:bb")
        ));
        assert!(!same_model(
            &pin("openai:http://a#m", "remote"),
            &pin("openai:http://b#m", "remote")
        ));
    }
}
