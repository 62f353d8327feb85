//! Retrieval evaluation: BEIR datasets and the metrics of trec_eval.
//!
//! Metrics follow trec_eval exactly: a run is ranked by score (descending),
//! ties broken by document id (descending, as trec_eval's `strcmp` on
//! docnos); only judgments with relevance > 0 count as relevant; nDCG uses the
//! judged relevance as gain with a log2(rank + 1) discount, normalised by the
//! ideal ordering of the judgments; every judged query counts, and a query
//! with no results scores 0 (trec_eval `-c`).

pub mod beir;

use std::collections::HashMap;

/// Relevance judgments: query id → (document id → relevance).
pub type Qrels = HashMap<String, HashMap<String, i32>>;

/// A ranked result list for one query: (document id, score).
pub type Run = Vec<(String, f32)>;

/// Mean metrics over a query set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scores {
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    #[serde(rename = "recall@100")]
    pub recall_at_100: f64,
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
    pub queries: usize,
}

/// Sorts a run the way trec_eval does before scoring.
fn trec_order(run: &Run) -> Vec<&(String, f32)> {
    let mut sorted: Vec<&(String, f32)> = run.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    sorted
}

/// nDCG at cut-off `k` (trec_eval `ndcg_cut_k`).
pub fn ndcg_at(run: &Run, judged: &HashMap<String, i32>, k: usize) -> f64 {
    let dcg: f64 = trec_order(run)
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, (doc, _))| {
            let gain = judged.get(doc).copied().unwrap_or(0).max(0) as f64;
            gain / (i as f64 + 2.0).log2()
        })
        .sum();
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&r| r > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &rel)| rel as f64 / (i as f64 + 2.0).log2())
        .sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

/// Share of the relevant documents found in the top `k` (trec_eval `recall_k`).
pub fn recall_at(run: &Run, judged: &HashMap<String, i32>, k: usize) -> f64 {
    let relevant = judged.values().filter(|&&r| r > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = trec_order(run)
        .iter()
        .take(k)
        .filter(|(doc, _)| judged.get(doc).is_some_and(|&r| r > 0))
        .count();
    found as f64 / relevant as f64
}

/// Reciprocal rank of the first relevant document within the top `k`.
pub fn mrr_at(run: &Run, judged: &HashMap<String, i32>, k: usize) -> f64 {
    trec_order(run)
        .iter()
        .take(k)
        .position(|(doc, _)| judged.get(doc).is_some_and(|&r| r > 0))
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0))
}

/// Means of the three metrics over every judged query; `runs` may lack
/// queries (they score 0).
pub fn evaluate(qrels: &Qrels, runs: &HashMap<String, Run>) -> Scores {
    let empty = Run::new();
    let mut totals = (0.0, 0.0, 0.0);
    for (query, judged) in qrels {
        let run = runs.get(query).unwrap_or(&empty);
        totals.0 += ndcg_at(run, judged, 10);
        totals.1 += recall_at(run, judged, 100);
        totals.2 += mrr_at(run, judged, 10);
    }
    let n = qrels.len().max(1) as f64;
    Scores {
        ndcg_at_10: totals.0 / n,
        recall_at_100: totals.1 / n,
        mrr_at_10: totals.2 / n,
        queries: qrels.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect()
    }

    fn run(pairs: &[(&str, f32)]) -> Run {
        pairs.iter().map(|(d, s)| (d.to_string(), *s)).collect()
    }

    #[test]
    fn ndcg_matches_a_hand_computed_value() {
        // Relevant a (2) and b (1); ranking: x, a, b.
        let j = judged(&[("a", 2), ("b", 1), ("z", 0)]);
        let r = run(&[("x", 3.0), ("a", 2.0), ("b", 1.0)]);
        let dcg = 2.0 / 3f64.log2() + 1.0 / 4f64.log2();
        let idcg = 2.0 / 2f64.log2() + 1.0 / 3f64.log2();
        assert!((ndcg_at(&r, &j, 10) - dcg / idcg).abs() < 1e-12);
        assert!((ndcg_at(&r, &j, 1) - 0.0).abs() < 1e-12);
    }

    #[test]
    fn ties_are_broken_by_descending_document_id_like_trec_eval() {
        let j = judged(&[("a", 1)]);
        // Equal scores: trec_eval ranks "b" before "a".
        let r = run(&[("a", 1.0), ("b", 1.0)]);
        assert!((mrr_at(&r, &j, 10) - 0.5).abs() < 1e-12);
        assert!((ndcg_at(&r, &j, 10) - 1.0 / 3f64.log2()).abs() < 1e-12);
    }

    #[test]
    fn recall_counts_only_positive_judgments_and_respects_the_cutoff() {
        let j = judged(&[("a", 1), ("b", 1), ("c", 0)]);
        let r = run(&[("c", 5.0), ("a", 4.0), ("x", 3.0), ("b", 2.0)]);
        assert!((recall_at(&r, &j, 100) - 1.0).abs() < 1e-12);
        assert!((recall_at(&r, &j, 3) - 0.5).abs() < 1e-12);
        assert!((mrr_at(&r, &j, 1) - 0.0).abs() < 1e-12);
    }

    #[test]
    fn queries_missing_from_the_run_count_as_zero() {
        let mut qrels = Qrels::new();
        qrels.insert("q1".into(), judged(&[("a", 1)]));
        qrels.insert("q2".into(), judged(&[("b", 1)]));
        let mut runs = HashMap::new();
        runs.insert("q1".to_string(), run(&[("a", 1.0)]));
        let scores = evaluate(&qrels, &runs);
        assert_eq!(scores.queries, 2);
        assert!((scores.ndcg_at_10 - 0.5).abs() < 1e-12);
        assert!((scores.mrr_at_10 - 0.5).abs() < 1e-12);
    }
}
