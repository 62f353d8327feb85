//! Retrieval: from a question to ranked chunks, in one of four modes.
//!
//! ```text
//! lexical : BM25 top-k
//! dense   : embed the query → exact inner-product scan top-k
//! hybrid  : BM25 top-n ‖ dense top-n (in parallel) → Reciprocal Rank Fusion → top-k
//! rerank  : hybrid top-n → cross-encoder scores → top-k
//! ```

use std::time::{Duration, Instant};

use knowhow_core::ChunkId;
use knowhow_index::{Filter, Reader, ScoredChunk};

use crate::fusion::{reciprocal_rank_fusion, RankedList};
use crate::models::{Embedder, Reranker};
use crate::Error;

/// How to retrieve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// BM25 over chunk text.
    Lexical,
    /// Nearest vectors of the query's embedding.
    Dense,
    /// BM25 and dense, fused by Reciprocal Rank Fusion.
    Hybrid,
    /// Hybrid, then the top candidates re-scored by a cross-encoder.
    Rerank,
}

impl Mode {
    /// Every mode, cheapest first.
    pub const ALL: [Mode; 4] = [Mode::Lexical, Mode::Dense, Mode::Hybrid, Mode::Rerank];

    /// The mode's name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Lexical => "lexical",
            Mode::Dense => "dense",
            Mode::Hybrid => "hybrid",
            Mode::Rerank => "rerank",
        }
    }

    /// One line on what the mode does, for help texts.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Lexical => "BM25 over chunk text (English stemming and stop words)",
            Mode::Dense => "Nearest vectors of the query's embedding (exact scan)",
            Mode::Hybrid => "BM25 and dense, fused by Reciprocal Rank Fusion",
            Mode::Rerank => "Hybrid, then the top candidates re-scored by a cross-encoder",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(name: &str) -> Result<Mode, String> {
        Mode::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
            format!("unknown retrieval mode {name:?}: one of {}", names.join(", "))
        })
    }
}

/// Knobs of fusion and re-ranking.
#[derive(Clone, Debug)]
pub struct Options {
    /// Chunks each retriever contributes before fusion (at least `k`).
    pub candidates: usize,
    /// The RRF constant: larger flattens the advantage of top ranks.
    pub rrf_k: f64,
    /// RRF weight of the BM25 list.
    pub lexical_weight: f64,
    /// RRF weight of the dense list.
    pub dense_weight: f64,
    /// Fused chunks the cross-encoder re-scores (rerank mode).
    pub rerank_top: usize,
    /// Metadata filter for dense retrieval.
    pub filter: Option<Filter>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            candidates: 100,
            rrf_k: crate::fusion::DEFAULT_K,
            lexical_weight: 1.0,
            dense_weight: 1.0,
            rerank_top: 50,
            filter: None,
        }
    }
}

/// A retrieved chunk, with how each stage that ran ranked and scored it (ranks start at 1).
///
/// A [`ScoredChunk`] with the fusion and re-ranking details added. Serialized
/// flat: `document_id`, `ordinal`, `score`, then each stage's rank and score.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Retrieved {
    #[serde(flatten)]
    pub id: ChunkId,
    /// The score of the last stage: BM25, inner product, fused RRF score or
    /// cross-encoder logit.
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical_rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense_rank: Option<usize>,
    /// The BM25 score, when the chunk is in the lexical list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical_score: Option<f32>,
    /// The inner product with the query, when the chunk is in the dense list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense_score: Option<f32>,
    /// The Reciprocal Rank Fusion score (hybrid and rerank).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fused_score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
}

impl Retrieved {
    fn from_scored(chunk: ScoredChunk) -> Retrieved {
        Retrieved {
            id: chunk.id,
            score: chunk.score,
            lexical_rank: None,
            dense_rank: None,
            lexical_score: None,
            dense_score: None,
            fused_score: None,
            rerank_score: None,
        }
    }

    fn lexical(chunk: ScoredChunk) -> Retrieved {
        Retrieved {
            lexical_score: Some(chunk.score),
            ..Retrieved::from_scored(chunk)
        }
    }

    fn dense(chunk: ScoredChunk) -> Retrieved {
        Retrieved {
            dense_score: Some(chunk.score),
            ..Retrieved::from_scored(chunk)
        }
    }
}

/// Where one query's time went, stage by stage, in the order the stages finished: `lexical` (BM25), `embed` (the
/// query's vector), `dense` (the vector scan), `fuse` (RRF), `rerank` (passages read and scored). BM25 runs beside
/// the embedding and the scan in hybrid and rerank modes, so the stages may add up to more than the wall time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageTimes {
    pub stages: Vec<(&'static str, Duration)>,
}

impl StageTimes {
    fn time<T>(&mut self, stage: &'static str, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let done = work();
        self.stages.push((stage, started.elapsed()));
        done
    }
}

/// The top `k` chunks of `reader`'s collection for `query`.
///
/// `embedder` is required for every mode but lexical, `reranker` for rerank;
/// the embedder must be the collection's pinned model (the caller checks).
pub fn retrieve(
    reader: &Reader,
    query: &str,
    k: usize,
    mode: Mode,
    embedder: Option<&Embedder>,
    reranker: Option<&Reranker>,
    options: &Options,
) -> Result<Vec<Retrieved>, Error> {
    let models = (embedder, reranker);
    retrieve_timed(reader, query, k, mode, models, options, &mut StageTimes::default())
}

/// [`retrieve`], saying in `times` how long each stage took. `models` are the embedder and the re-ranker.
pub fn retrieve_timed(
    reader: &Reader,
    query: &str,
    k: usize,
    mode: Mode,
    models: (Option<&Embedder>, Option<&Reranker>),
    options: &Options,
    times: &mut StageTimes,
) -> Result<Vec<Retrieved>, Error> {
    let (embedder, reranker) = models;
    let dense = |limit: usize, times: &mut StageTimes| -> Result<Vec<ScoredChunk>, Error> {
        let embedder = embedder.ok_or(Error::NeedsModel(mode, "an embedding model"))?;
        let vector = times
            .time("embed", || embedder.embed(&[query]))?
            .pop()
            .expect("one text, one vector");
        Ok(times.time("dense", || reader.dense(&vector, limit, options.filter.as_ref()))?)
    };
    // BM25 on a thread of its own while this one embeds the query and scans the vectors. Not rayon::join: its
    // closures run on rayon's pool, and an embedder that waits for its batch (the server's `EmbedBatcher`) would
    // hold pool threads that the model's own matrix products need.
    let lexical_and_dense = |limit: usize, times: &mut StageTimes| -> Result<_, Error> {
        let (lexical, dense) = std::thread::scope(|scope| {
            let lexical = scope.spawn(|| {
                let started = Instant::now();
                (reader.rank(query, limit), started.elapsed())
            });
            let dense = dense(limit, times);
            let lexical = lexical.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (lexical, dense)
        });
        let (lexical, seconds) = lexical;
        times.stages.push(("lexical", seconds));
        let (lexical, dense) = (lexical?, dense?);
        times.time("fuse", || fuse(&lexical, &dense, options))
    };
    match mode {
        Mode::Lexical => Ok(times
            .time("lexical", || reader.rank(query, k))?
            .into_iter()
            .map(Retrieved::lexical)
            .collect()),
        Mode::Dense => Ok(dense(k, times)?.into_iter().map(Retrieved::dense).collect()),
        Mode::Hybrid => {
            let mut fused = lexical_and_dense(options.candidates.max(k), times)?;
            fused.truncate(k);
            Ok(fused)
        }
        Mode::Rerank => {
            let reranker = reranker.ok_or(Error::NeedsModel(mode, "a re-ranking model"))?;
            let limit = options.candidates.max(k).max(options.rerank_top);
            let mut fused = lexical_and_dense(limit, times)?;
            fused.truncate(options.rerank_top.max(k));
            times.time("rerank", || -> Result<(), Error> {
                let ids: Vec<ChunkId> = fused.iter().map(|r| r.id.clone()).collect();
                let texts = reader.chunk_texts(&ids)?;
                let passages: Vec<&str> = texts.iter().map(|t| t.as_deref().unwrap_or("")).collect();
                let scores = reranker.score(query, &passages)?;
                for (retrieved, score) in fused.iter_mut().zip(scores) {
                    retrieved.rerank_score = Some(score);
                    retrieved.score = score;
                }
                Ok(())
            })?;
            // Stable: equal cross-encoder scores keep their fused order.
            fused.sort_by(|a, b| b.score.total_cmp(&a.score));
            fused.truncate(k);
            Ok(fused)
        }
    }
}

/// Reciprocal Rank Fusion of a BM25 and a dense list of chunks.
fn fuse(lexical: &[ScoredChunk], dense: &[ScoredChunk], options: &Options) -> Result<Vec<Retrieved>, Error> {
    let ids = |chunks: &[ScoredChunk]| -> Vec<ChunkId> { chunks.iter().map(|c| c.id.clone()).collect() };
    let (lexical_keys, dense_keys) = (ids(lexical), ids(dense));
    let fused = reciprocal_rank_fusion(
        &[
            RankedList::weighted(&lexical_keys, options.lexical_weight),
            RankedList::weighted(&dense_keys, options.dense_weight),
        ],
        options.rrf_k,
    )?;
    Ok(fused
        .into_iter()
        .map(|f| Retrieved {
            score: f.score as f32,
            lexical_rank: f.ranks[0],
            dense_rank: f.ranks[1],
            lexical_score: f.ranks[0].map(|rank| lexical[rank - 1].score),
            dense_score: f.ranks[1].map(|rank| dense[rank - 1].score),
            fused_score: Some(f.score as f32),
            ..Retrieved::from_scored(ScoredChunk { id: f.key, score: 0.0 })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &str, score: f32) -> ScoredChunk {
        ScoredChunk {
            id: ChunkId::new(id, 0),
            score,
        }
    }

    #[test]
    fn modes_read_back_from_their_names() {
        for mode in Mode::ALL {
            assert_eq!(mode.name().parse::<Mode>(), Ok(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.name());
        }
        assert!("fuzzy"
            .parse::<Mode>()
            .unwrap_err()
            .contains("lexical, dense, hybrid, rerank"));
    }

    #[test]
    fn retrieved_chunks_serialize_flat() {
        let retrieved = Retrieved {
            lexical_rank: Some(2),
            ..Retrieved::from_scored(chunk("a", 1.5))
        };
        assert_eq!(
            serde_json::to_string(&retrieved).unwrap(),
            r#"{"document_id":"a","ordinal":0,"score":1.5,"lexical_rank":2}"#
        );
    }

    #[test]
    fn fusion_keeps_each_retrievers_rank_and_prefers_agreement() {
        let lexical = [chunk("a", 9.0), chunk("b", 8.0), chunk("c", 7.0)];
        let dense = [chunk("c", 0.9), chunk("d", 0.8), chunk("b", 0.7)];
        let fused = fuse(&lexical, &dense, &Options::default()).unwrap();
        let ids: Vec<&str> = fused.iter().map(|r| r.id.document_id.as_str()).collect();
        // c: 1/63 + 1/61, b: 1/62 + 1/63 — both beat a (1/61) and d (1/62).
        assert_eq!(ids, ["c", "b", "a", "d"]);
        assert_eq!((fused[0].lexical_rank, fused[0].dense_rank), (Some(3), Some(1)));
        assert_eq!((fused[3].lexical_rank, fused[3].dense_rank), (None, Some(2)));
        assert_eq!((fused[0].lexical_score, fused[0].dense_score), (Some(7.0), Some(0.9)));
        assert_eq!((fused[3].lexical_score, fused[3].dense_score), (None, Some(0.8)));
        assert_eq!(fused[0].fused_score, Some(fused[0].score));
        let expected = 1.0 / 63.0 + 1.0 / 61.0;
        assert!((f64::from(fused[0].score) - expected).abs() < 1e-6);

        let lexical_only = Options {
            dense_weight: 0.0,
            ..Options::default()
        };
        let fused = fuse(&lexical, &dense, &lexical_only).unwrap();
        let ids: Vec<&str> = fused.iter().map(|r| r.id.document_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
