//! The models retrieval runs: an embedder (text → vector) and a re-ranker
//! ((query, passage) → relevance), each either local (candle, a model folder
//! resolved by `knowhow-hub`) or remote (an HTTP server), chosen by a spec:
//!
//! | spec | meaning |
//! |---|---|
//! | `all-MiniLM-L6-v2`, `org/name`, `./path` | a local model, resolved by `knowhow_hub::resolve` |
//! | `openai:BASE_URL#MODEL` | an OpenAI-compatible `/v1/embeddings` server (key: `OPENAI_API_KEY`) |
//! | `tei:BASE_URL` | a Text Embeddings Inference `/rerank` server |
//! | `cohere:BASE_URL#MODEL`, `jina:BASE_URL#MODEL` | a Cohere- or Jina-style `/v1/rerank` server (key: `RERANK_API_KEY`) |

use knowhow_hub::{ResolveOptions, ResolvedModel, Source};
use knowhow_index::{ModelPin, WeightsChecksum};
use knowhow_models::{CrossEncoder, LoadOptions, SentenceEmbedder};

use crate::batcher::EmbedBatcher;
use crate::remote::{OpenAiEmbedder, RemoteConfig, RemoteReranker, RerankFlavor};
use crate::Error;

/// Turns texts into vectors.
pub enum Embedder {
    Local(Box<SentenceEmbedder>),
    /// A local model shared by many threads, which embeds what they wait for together (a server's).
    Batched(EmbedBatcher),
    Remote(OpenAiEmbedder),
}

/// An embedder with the identity a collection pins.
pub struct LoadedEmbedder {
    pub embedder: Embedder,
    pub pin: ModelPin,
    /// Where the model was found (`path`, `cache`, `hub`, `remote`, ...).
    pub source: String,
}

impl Embedder {
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        match self {
            Embedder::Local(model) => Ok(model.embed(texts)?),
            Embedder::Batched(batcher) => batcher.embed(texts),
            Embedder::Remote(client) => Ok(client.embed(texts)?),
        }
    }

    /// The same model, batching the requests of concurrent callers ([`EmbedBatcher`]); a remote model is left as
    /// it is (its server batches).
    pub fn batched(self) -> Embedder {
        match self {
            Embedder::Local(model) => Embedder::Batched(EmbedBatcher::start(*model)),
            other => other,
        }
    }

    /// The longest text, in tokens, the model reads whole (without the
    /// special tokens it adds); `None` when unknown (a remote model).
    pub fn max_tokens(&self) -> Option<usize> {
        self.token_counter()
            .map(|model| model.max_seq_length().saturating_sub(2).max(1))
    }

    /// Counts tokens as the model sees them; `None` for a remote model.
    pub fn token_counter(&self) -> Option<&SentenceEmbedder> {
        match self {
            Embedder::Local(model) => Some(model),
            Embedder::Batched(batcher) => Some(batcher.model()),
            Embedder::Remote(_) => None,
        }
    }
}

/// Splits `openai:BASE#MODEL`-style specs; `None` for a local model spec.
fn remote_spec(spec: &str) -> Option<(&str, &str, Option<&str>)> {
    let (scheme, rest) = spec.split_once(':')?;
    if !matches!(scheme, "openai" | "tei" | "cohere" | "jina") || !rest.starts_with("http") {
        return None;
    }
    Some(match rest.split_once('#') {
        Some((url, model)) => (scheme, url, Some(model)),
        None => (scheme, rest, None),
    })
}

/// Loads the embedder named by `spec`. Local models are resolved with
/// `resolve` (which decides whether downloading is allowed).
pub fn load_embedder(spec: &str, resolve: &ResolveOptions, batch_size: usize) -> Result<LoadedEmbedder, Error> {
    if let Some((scheme, url, model)) = remote_spec(spec) {
        if scheme != "openai" {
            return Err(Error::Spec(format!(
                "{spec:?} names a re-ranking server; an embedding server is openai:BASE_URL#MODEL"
            )));
        }
        let model = model.ok_or_else(|| Error::Spec(format!("{spec:?} has no #MODEL (openai:BASE_URL#MODEL)")))?;
        let mut config = RemoteConfig::new(url, model);
        config.api_key = std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.is_empty());
        let client = OpenAiEmbedder::new(config)?;
        // The dimension is only known from an answer; a collection pins it.
        let probe = client.embed(&["dimension probe"])?;
        let pin = ModelPin {
            id: format!("openai:{url}#{model}"),
            dimension: probe[0].len() as u32,
            pooling: "remote".into(),
            normalized: is_normalized(&probe[0]),
            checksum: WeightsChecksum::Remote,
        };
        return Ok(LoadedEmbedder {
            embedder: Embedder::Remote(client),
            pin,
            source: "remote".into(),
        });
    }
    let resolved = knowhow_hub::resolve(spec, resolve)?;
    let model = SentenceEmbedder::load(
        &resolved.dir,
        LoadOptions {
            batch_size,
            ..LoadOptions::default()
        },
    )?;
    let info = model.info();
    let checksum = weights_checksum(&resolved)?;
    let pin = ModelPin {
        id: pinned_id(&resolved, &checksum),
        checksum: WeightsChecksum::Known(checksum),
        dimension: info.dimension as u32,
        pooling: serde_json::to_value(info.pooling)?
            .as_str()
            .unwrap_or("unknown")
            .to_string(),
        normalized: info.normalize,
    };
    Ok(LoadedEmbedder {
        embedder: Embedder::Local(Box::new(model)),
        pin,
        source: resolved.source.as_str().to_string(),
    })
}

fn is_normalized(vector: &[f32]) -> bool {
    let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    (norm - 1.0).abs() < 1e-3
}

/// The name a collection pins, which later commands resolve again: a model
/// from a folder is named by the catalog when its weights are a catalog
/// model's, else by the folder's absolute path.
fn pinned_id(resolved: &ResolvedModel, checksum: &str) -> String {
    if resolved.source != Source::Path {
        return resolved.id.clone();
    }
    let known = knowhow_hub::builtin_catalog().into_iter().find(|m| {
        m.weights_sha256
            .is_some_and(|sha| checksum.strip_prefix("sha256:") == Some(sha))
    });
    match known {
        Some(model) => model.id.to_string(),
        None => std::path::absolute(&resolved.dir)
            .unwrap_or_else(|_| resolved.dir.clone())
            .to_string_lossy()
            .into_owned(),
    }
}

/// `sha256:` + the weights' sha256: the same model has the same checksum
/// whichever way it was found (a path, the cache, the Hugging Face cache).
fn weights_checksum(resolved: &ResolvedModel) -> Result<String, Error> {
    let sha = match &resolved.weights_sha256 {
        Some(sha) => sha.clone(),
        None => knowhow_hub::sha256_file(&resolved.dir.join("model.safetensors"))?,
    };
    Ok(format!("sha256:{sha}"))
}

/// Scores (query, passage) pairs.
pub enum Reranker {
    Local(Box<CrossEncoder>),
    Remote(RemoteReranker),
}

impl Reranker {
    /// One relevance score per passage, in input order (higher is better).
    pub fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, Error> {
        match self {
            Reranker::Local(model) => Ok(model.score(query, passages)?),
            Reranker::Remote(client) => Ok(client.rerank(query, passages)?),
        }
    }
}

/// Loads the re-ranker named by `spec` (see the module documentation).
pub fn load_reranker(spec: &str, resolve: &ResolveOptions) -> Result<Reranker, Error> {
    if let Some((scheme, url, model)) = remote_spec(spec) {
        let flavor: RerankFlavor = scheme.parse().map_err(|_| {
            Error::Spec(format!(
                "{spec:?}: an embedding server cannot re-rank; use tei:, cohere: or jina:"
            ))
        })?;
        let mut config = RemoteConfig::new(url, model.unwrap_or(""));
        config.api_key = std::env::var("RERANK_API_KEY").ok().filter(|k| !k.is_empty());
        if flavor == RerankFlavor::Tei {
            // TEI's default limit on passages per request.
            config.batch_size = 32;
        }
        return Ok(Reranker::Remote(RemoteReranker::new(config, flavor)?));
    }
    let resolved = knowhow_hub::resolve(spec, resolve)?;
    Ok(Reranker::Local(Box::new(CrossEncoder::load(
        &resolved.dir,
        LoadOptions::default(),
    )?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_specs_are_told_apart_from_model_names() {
        assert_eq!(
            remote_spec("openai:http://localhost:8000/v1#bge"),
            Some(("openai", "http://localhost:8000/v1", Some("bge")))
        );
        assert_eq!(
            remote_spec("tei:https://rerank.internal"),
            Some(("tei", "https://rerank.internal", None))
        );
        assert_eq!(remote_spec("all-MiniLM-L6-v2"), None);
        assert_eq!(remote_spec("BAAI/bge-small-en-v1.5"), None);
        // A Windows-style path or an unknown scheme is a local spec.
        assert_eq!(remote_spec("c:models/minilm"), None);
        assert_eq!(remote_spec("openai:models"), None);
    }

    #[test]
    fn an_embedding_spec_without_a_model_is_refused() {
        let resolve = ResolveOptions::from_env(std::env::temp_dir());
        let error = load_embedder("openai:http://127.0.0.1:9", &resolve, 8).err().unwrap();
        assert!(error.to_string().contains("#MODEL"), "{error}");
        let error = load_reranker("openai:http://127.0.0.1:9#m", &resolve).err().unwrap();
        assert!(error.to_string().contains("cannot re-rank"), "{error}");
    }
}
