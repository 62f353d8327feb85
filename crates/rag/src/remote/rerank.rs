//! A client for hosted cross-encoder re-rankers.
//!
//! Two request shapes exist, chosen by [`RerankFlavor`]:
//!
//! | flavor | endpoint | request | response |
//! |---|---|---|---|
//! | [`Tei`](RerankFlavor::Tei) (Text Embeddings Inference) | `{base}/rerank` | `{query, texts, raw_scores, truncate: true}` | `[{index, score}]` |
//! | [`Cohere`](RerankFlavor::Cohere), [`Jina`](RerankFlavor::Jina) | `{base}/v1/rerank` | `{model, query, documents, top_n, return_documents: false}` | `{results: [{index, relevance_score}]}` |
//!
//! For Cohere and Jina a base URL that already ends in `/v1` is used as it is; for TEI a trailing `/v1` is
//! dropped, since TEI serves `/rerank` at its root. The response is recognised by its shape whatever the flavor,
//! so a proxy that answers the other shape still works. TEI refuses batches above its `--max-client-batch-size`
//! (32 by default): set `batch_size` to at most that.

use std::fmt;
use std::str::FromStr;

use super::http::{start_of, JsonPoster};
use super::{in_input_order, versioned_url, Error, RemoteConfig};

/// Which `/rerank` request shape a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RerankFlavor {
    /// Hugging Face Text Embeddings Inference.
    Tei,
    /// Cohere's `/v1/rerank`.
    Cohere,
    /// Jina AI's `/v1/rerank` (Cohere's shape).
    Jina,
}

impl RerankFlavor {
    pub const NAMES: [&'static str; 3] = ["tei", "cohere", "jina"];

    pub fn name(self) -> &'static str {
        match self {
            RerankFlavor::Tei => "tei",
            RerankFlavor::Cohere => "cohere",
            RerankFlavor::Jina => "jina",
        }
    }
}

impl fmt::Display for RerankFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RerankFlavor {
    type Err = Error;

    /// Parses `tei`, `cohere` or `jina` (any case).
    fn from_str(name: &str) -> Result<Self, Error> {
        match name.to_ascii_lowercase().as_str() {
            "tei" => Ok(RerankFlavor::Tei),
            "cohere" => Ok(RerankFlavor::Cohere),
            "jina" => Ok(RerankFlavor::Jina),
            _ => Err(Error::Config(format!(
                "unknown re-ranker API {name:?}; expected one of {}",
                RerankFlavor::NAMES.join(", ")
            ))),
        }
    }
}

/// Scores (query, passage) pairs on a remote re-ranker, `batch_size` passages per request.
#[derive(Debug)]
pub struct RemoteReranker {
    poster: JsonPoster,
    flavor: RerankFlavor,
    model: String,
    batch_size: usize,
    raw_scores: bool,
}

#[derive(serde::Serialize)]
struct TeiRequest<'a> {
    query: &'a str,
    texts: &'a [&'a str],
    raw_scores: bool,
    /// Long passages are cut to the model's maximum length instead of failing the whole batch.
    truncate: bool,
}

#[derive(serde::Serialize)]
struct CohereRequest<'a> {
    model: &'a str,
    query: &'a str,
    documents: &'a [&'a str],
    top_n: usize,
    return_documents: bool,
}

#[derive(serde::Deserialize)]
struct TeiScore {
    index: usize,
    score: f32,
}

#[derive(serde::Deserialize)]
struct CohereResults {
    results: Vec<CohereResult>,
}

#[derive(serde::Deserialize)]
struct CohereResult {
    index: usize,
    relevance_score: f32,
}

impl RemoteReranker {
    /// Checks the configuration (URL scheme, batch size ≥ 1, timeout > 0, a model name for Cohere and Jina);
    /// sends nothing.
    pub fn new(config: RemoteConfig, flavor: RerankFlavor) -> Result<Self, Error> {
        let url = match flavor {
            RerankFlavor::Tei => {
                let base = config.base_url.trim_end_matches('/');
                format!("{}/rerank", base.strip_suffix("/v1").unwrap_or(base))
            }
            RerankFlavor::Cohere | RerankFlavor::Jina => {
                if config.model.trim().is_empty() {
                    return Err(Error::Config(format!("the {flavor} re-rank API needs a model name")));
                }
                versioned_url(&config.base_url, "rerank")
            }
        };
        let poster = JsonPoster::new(&config, url)?;
        Ok(Self {
            poster,
            flavor,
            model: config.model,
            batch_size: config.batch_size,
            raw_scores: false,
        })
    }

    /// TEI only: ask for the model's raw logits instead of their sigmoid (TEI's default). Re-ranking order is
    /// the same either way.
    pub fn with_raw_scores(mut self, raw_scores: bool) -> Self {
        self.raw_scores = raw_scores;
        self
    }

    /// The endpoint this client posts to.
    pub fn url(&self) -> &str {
        self.poster.url()
    }

    pub fn flavor(&self) -> RerankFlavor {
        self.flavor
    }

    /// One relevance score per passage, in the order of `passages` (higher is more relevant). Scores from
    /// different batches are comparable: a cross-encoder scores each (query, passage) pair on its own.
    pub fn rerank(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, Error> {
        let mut scores = Vec::with_capacity(passages.len());
        for batch in passages.chunks(self.batch_size) {
            scores.extend(self.rerank_batch(query, batch)?);
        }
        Ok(scores)
    }

    fn rerank_batch(&self, query: &str, batch: &[&str]) -> Result<Vec<f32>, Error> {
        let body = match self.flavor {
            RerankFlavor::Tei => serde_json::to_vec(&TeiRequest {
                query,
                texts: batch,
                raw_scores: self.raw_scores,
                truncate: true,
            }),
            RerankFlavor::Cohere | RerankFlavor::Jina => serde_json::to_vec(&CohereRequest {
                model: &self.model,
                query,
                documents: batch,
                top_n: batch.len(),
                return_documents: false,
            }),
        }
        .expect("a struct of strings and numbers serializes");
        let text = self.poster.post(&body)?;
        parse_scores(&text, batch.len()).map_err(|problem| Error::Response {
            url: self.poster.url().to_string(),
            problem,
            start: start_of(&text),
        })
    }
}

/// Reads either response shape: TEI's top-level array or Cohere's and Jina's `results` object.
fn parse_scores(text: &str, count: usize) -> Result<Vec<f32>, String> {
    const SHAPES: &str =
        "expected [{\"index\", \"score\"}] (TEI) or {\"results\": [{\"index\", \"relevance_score\"}]} \
                          (Cohere, Jina)";
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("{SHAPES}, not JSON ({error})"))?;
    let pairs: Vec<(usize, f32)> = if json.is_array() {
        let scores: Vec<TeiScore> = serde_json::from_value(json).map_err(|error| format!("{SHAPES} ({error})"))?;
        scores.into_iter().map(|s| (s.index, s.score)).collect()
    } else {
        let results: CohereResults = serde_json::from_value(json).map_err(|error| format!("{SHAPES} ({error})"))?;
        results
            .results
            .into_iter()
            .map(|r| (r.index, r.relevance_score))
            .collect()
    };
    in_input_order(pairs, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavors_parse_by_name() {
        for name in RerankFlavor::NAMES {
            assert_eq!(name.parse::<RerankFlavor>().unwrap().name(), name);
        }
        assert_eq!("TEI".parse::<RerankFlavor>().unwrap(), RerankFlavor::Tei);
        let err = "voyage".parse::<RerankFlavor>().unwrap_err();
        assert!(err.to_string().contains("tei, cohere, jina"), "{err}");
    }

    #[test]
    fn tei_urls_drop_a_v1_suffix() {
        let tei = |base: &str| RemoteReranker::new(RemoteConfig::new(base, ""), RerankFlavor::Tei).unwrap();
        assert_eq!(tei("http://h:8080").url(), "http://h:8080/rerank");
        assert_eq!(tei("http://h:8080/v1/").url(), "http://h:8080/rerank");
    }

    #[test]
    fn both_response_shapes_are_read() {
        assert_eq!(
            parse_scores(r#"[{"index":1,"score":0.5},{"index":0,"score":0.25}]"#, 2),
            Ok(vec![0.25, 0.5])
        );
        let cohere = r#"{"id":"x","results":[{"index":1,"relevance_score":0.5},{"index":0,"relevance_score":0.25}]}"#;
        assert_eq!(parse_scores(cohere, 2), Ok(vec![0.25, 0.5]));
        assert!(parse_scores(r#"{"scores":[1,2]}"#, 2).unwrap_err().contains("expected"));
    }
}
