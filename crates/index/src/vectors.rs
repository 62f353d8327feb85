//! Dense vectors: the embedding model a collection is pinned to, the checks
//! every vector passes on its way in, and exact search over them.
//!
//! The store holds one vector per chunk (table `vectors`), written in the same
//! transaction as the chunk, for every chunk exactly when the collection pins
//! a model ([`ModelPin`]); so an acknowledged document always has its vectors.
//! Searches read a derived flat file instead ([`file`]): stamped with the
//! store's sequence number and model pin, caught up from the store's change
//! log, rebuilt from the store when missing or inconsistent.

mod file;
mod scan;

use std::fmt;

use knowhow_core::{ChunkId, Metadata};
use serde::{Deserialize, Serialize};

use crate::{Error, ScoredChunk};

pub(crate) use file::{stamp, DocRecord, VectorSnapshot, VectorWriter};

/// The embedding model whose vectors a collection holds. Vectors of two
/// models are not comparable, so a collection takes vectors and queries from
/// its pinned model only; moving to another is a re-embedding
/// ([`crate::Writer::start_reembed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPin {
    /// The model's name, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub id: String,
    /// Values per vector.
    pub dimension: u32,
    /// How token embeddings become one vector, e.g. `mean` or `cls`.
    pub pooling: String,
    /// Whether vectors have unit length (then the inner product is the
    /// cosine similarity).
    pub normalized: bool,
    /// What identifies the weights.
    pub checksum: WeightsChecksum,
}

/// What identifies a model's weights in a [`ModelPin`]. Stored as a string: `remote`, or the checksum itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum WeightsChecksum {
    /// A checksum of the weights' file (e.g. `sha256:` and the sha256 of `model.safetensors`): the same weights
    /// reached by any name or path have the same one.
    Known(String),
    /// A model behind an HTTP server: its weights cannot be read, so only the whole pin identifies it.
    Remote,
}

impl WeightsChecksum {
    const REMOTE: &'static str = "remote";
}

impl From<String> for WeightsChecksum {
    fn from(text: String) -> WeightsChecksum {
        if text == WeightsChecksum::REMOTE {
            WeightsChecksum::Remote
        } else {
            WeightsChecksum::Known(text)
        }
    }
}

impl From<WeightsChecksum> for String {
    fn from(checksum: WeightsChecksum) -> String {
        match checksum {
            WeightsChecksum::Known(text) => text,
            WeightsChecksum::Remote => WeightsChecksum::REMOTE.to_string(),
        }
    }
}

impl fmt::Display for WeightsChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsChecksum::Known(text) => f.write_str(text),
            WeightsChecksum::Remote => f.write_str(WeightsChecksum::REMOTE),
        }
    }
}

impl fmt::Display for ModelPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checksum: String = self.checksum.to_string().chars().take(12).collect();
        write!(
            f,
            "{} ({} dimensions, {} pooling, {}, checksum {checksum})",
            self.id,
            self.dimension,
            self.pooling,
            if self.normalized {
                "normalized"
            } else {
                "not normalized"
            },
        )
    }
}

impl ModelPin {
    /// Whether `other` names the same model: the same weights (whatever name or path reached them) read the same
    /// way. A remote model's weights cannot be checked, so only the same pin is the same model.
    pub fn same_model(&self, other: &ModelPin) -> bool {
        if self.checksum == WeightsChecksum::Remote || other.checksum == WeightsChecksum::Remote {
            return self == other;
        }
        self.checksum == other.checksum
            && self.dimension == other.dimension
            && self.pooling == other.pooling
            && self.normalized == other.normalized
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.id.is_empty() || self.dimension == 0 {
            return Err(Error::InvalidModelPin(format!(
                "a model pin needs an id and a dimension above 0, got {self}"
            )));
        }
        Ok(())
    }
}

/// Which documents a dense search may return: every `(key, value)` in
/// `metadata` must match the document's metadata. A value matches a string
/// equal to it, a number or boolean written the same way (`"2021"` matches
/// `2021`), or an array with a matching element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub metadata: Vec<(String, String)>,
}

impl Filter {
    pub fn matches(&self, metadata: &Metadata) -> bool {
        self.metadata
            .iter()
            .all(|(key, want)| metadata.get(key).is_some_and(|value| value_matches(value, want)))
    }
}

fn value_matches(value: &serde_json::Value, want: &str) -> bool {
    match value {
        serde_json::Value::String(s) => s == want,
        serde_json::Value::Number(n) => n.to_string() == want,
        serde_json::Value::Bool(b) => b.to_string() == want,
        serde_json::Value::Array(items) => items.iter().any(|item| value_matches(item, want)),
        serde_json::Value::Null | serde_json::Value::Object(_) => false,
    }
}

/// Checks the vectors given with a document against the collection's model:
/// present exactly when it pins one, one per chunk, of its dimension, finite.
pub(crate) fn validate(
    pin: Option<&ModelPin>,
    document: &str,
    chunks: usize,
    vectors: Option<&[Vec<f32>]>,
) -> Result<(), Error> {
    let invalid = |problem: String| Error::InvalidVectors {
        document: document.to_string(),
        problem,
    };
    match (pin, vectors) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(invalid(
            "the collection has no embedding model, so it takes no vectors: pin the model first \
             (Writer::pin_model), or ingest without vectors"
                .into(),
        )),
        (Some(pin), None) => Err(invalid(format!(
            "the collection is embedded with {pin}, so every chunk needs its vector, and none were given"
        ))),
        (Some(pin), Some(vectors)) => {
            if vectors.len() != chunks {
                return Err(invalid(format!("{} vectors for {chunks} chunks", vectors.len())));
            }
            for (ordinal, vector) in vectors.iter().enumerate() {
                check_vector(pin, vector).map_err(|problem| invalid(format!("chunk {ordinal}: {problem}")))?;
            }
            Ok(())
        }
    }
}

/// `Err(problem)` unless `vector` has the pinned dimension and finite values.
pub(crate) fn check_vector(pin: &ModelPin, vector: &[f32]) -> Result<(), String> {
    if vector.len() != pin.dimension as usize {
        return Err(format!("{} values, but {} has {}", vector.len(), pin.id, pin.dimension));
    }
    match vector.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(format!("value {i} is {}", vector[i])),
        None => Ok(()),
    }
}

/// The `k` chunks of `snapshot` whose vectors have the highest inner product
/// with `query` (which has the pinned dimension), best first, among the
/// documents `filter` lets through.
pub(crate) fn search(snapshot: &VectorSnapshot, query: &[f32], k: usize, filter: Option<&Filter>) -> Vec<ScoredChunk> {
    let spans: Vec<scan::Span> = snapshot
        .docs
        .iter()
        .enumerate()
        .filter(|(_, doc)| filter.is_none_or(|f| f.matches(&doc.metadata)))
        .map(|(i, doc)| scan::Span {
            doc: i,
            first_row: doc.first_row as usize,
            rows: doc.ordinals.len(),
        })
        .collect();
    scan::top_k(snapshot.matrix(), query.len(), &spans, query, k)
        .into_iter()
        .map(|c| {
            let doc = &snapshot.docs[c.doc];
            ScoredChunk {
                id: ChunkId::new(doc.id.clone(), doc.ordinals[c.row - doc.first_row as usize]),
                score: c.score,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(dimension: u32) -> ModelPin {
        ModelPin {
            id: "test-model".into(),
            dimension,
            pooling: "mean".into(),
            normalized: true,
            checksum: WeightsChecksum::Known("0123456789abcdef".into()),
        }
    }

    #[test]
    fn the_same_weights_reached_by_another_name_are_the_same_model() {
        let with = |id: &str, checksum: WeightsChecksum| ModelPin {
            id: id.into(),
            checksum,
            ..pin(384)
        };
        let sha = |s: &str| WeightsChecksum::Known(format!("sha256:{s}"));
        assert!(with("all-MiniLM-L6-v2", sha("aa")).same_model(&with("/models/minilm", sha("aa"))));
        assert!(!with("all-MiniLM-L6-v2", sha("aa")).same_model(&with("all-MiniLM-L6-v2", sha("bb"))));
        let remote = |id: &str| with(id, WeightsChecksum::Remote);
        assert!(remote("openai:http://a#m").same_model(&remote("openai:http://a#m")));
        assert!(!remote("openai:http://a#m").same_model(&remote("openai:http://b#m")));
    }

    #[test]
    fn checksums_are_stored_as_the_strings_they_always_were() {
        let stored = serde_json::to_value(pin(3)).unwrap();
        assert_eq!(stored["checksum"], "0123456789abcdef");
        let remote = ModelPin {
            checksum: WeightsChecksum::Remote,
            ..pin(3)
        };
        let stored = serde_json::to_string(&remote).unwrap();
        assert!(stored.contains(r#""checksum":"remote""#), "{stored}");
        assert_eq!(serde_json::from_str::<ModelPin>(&stored).unwrap(), remote);
    }

    #[test]
    fn filter_matches_strings_numbers_booleans_and_array_elements() {
        let metadata: Metadata =
            serde_json::from_str(r#"{"lang":"en","year":2021,"draft":false,"tags":["a","b"]}"#).expect("valid JSON");
        let filter = |pairs: &[(&str, &str)]| Filter {
            metadata: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        assert!(filter(&[]).matches(&metadata));
        assert!(filter(&[("lang", "en"), ("year", "2021")]).matches(&metadata));
        assert!(filter(&[("draft", "false"), ("tags", "b")]).matches(&metadata));
        assert!(!filter(&[("lang", "en"), ("year", "2020")]).matches(&metadata));
        assert!(!filter(&[("missing", "x")]).matches(&metadata));
    }

    #[test]
    fn validation_names_the_document_chunk_and_problem() {
        let p = pin(3);
        let ok = [vec![0.0, 0.6, 0.8]];
        assert!(validate(Some(&p), "d", 1, Some(&ok)).is_ok());
        assert!(validate(None, "d", 1, None).is_ok());
        let message = |r: Result<(), Error>| r.expect_err("invalid").to_string();
        let wrong_dim = message(validate(Some(&p), "doc-7", 1, Some(&[vec![1.0, 0.0]])));
        assert!(wrong_dim.contains("doc-7") && wrong_dim.contains("chunk 0") && wrong_dim.contains("2 values"));
        let nan = message(validate(
            Some(&p),
            "d",
            2,
            Some(&[ok[0].clone(), vec![0.0, f32::NAN, 1.0]]),
        ));
        assert!(nan.contains("chunk 1") && nan.contains("value 1 is NaN"), "{nan}");
        assert!(message(validate(Some(&p), "d", 2, Some(&ok))).contains("1 vectors for 2 chunks"));
        assert!(message(validate(Some(&p), "d", 1, None)).contains("test-model"));
        assert!(message(validate(None, "d", 1, Some(&ok))).contains("no embedding model"));
    }
}
