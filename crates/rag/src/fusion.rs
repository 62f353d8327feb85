//! Reciprocal Rank Fusion (Cormack, Clarke and Büttcher, SIGIR 2009).
//!
//! Every retriever returns its keys best first. A key's fused score is
//!
//! ```text
//! score(d) = Σ_i  w_i / (k + rank_i(d))        rank_i starts at 1
//! ```
//!
//! where a list that does not hold `d` adds nothing. Only ranks enter the formula, never the retrievers' own
//! scores, which is why BM25 scores and cosine similarities, on unrelated scales, fuse without calibration. `k`
//! flattens the top of each list: with k = 60, rank 1 is worth 1/61 and rank 10 is worth 1/70, so a key that
//! several retrievers agree on beats a key that only one of them loves.
//!
//! ```
//! use knowhow_rag::fusion::{reciprocal_rank_fusion, RankedList, DEFAULT_K};
//!
//! let dense = ["b", "a", "c"];
//! let bm25 = ["a", "d"];
//! let fused = reciprocal_rank_fusion(&[RankedList::new(&dense), RankedList::new(&bm25)], DEFAULT_K).unwrap();
//! assert_eq!(fused[0].key, "a"); // 1/62 + 1/61 beats b's 1/61
//! assert_eq!(fused[0].ranks, vec![Some(2), Some(1)]);
//! ```

use std::collections::HashMap;
use std::hash::Hash;

/// The `k` of the original paper, and the usual choice of Elasticsearch, OpenSearch and Vespa.
pub const DEFAULT_K: f64 = 60.0;

/// One retriever's result: keys best first, and how much this retriever counts.
#[derive(Debug, Clone, Copy)]
pub struct RankedList<'a, K> {
    /// Keys best first: the key at position `p` has rank `p + 1`. A key repeated in one list counts once, at its
    /// first (best) position.
    pub keys: &'a [K],
    /// Multiplies every contribution of this list. 0 ignores the list: keys that only it holds are left out of
    /// the result and its ranks add nothing (they are still reported in [`Fused::ranks`]).
    pub weight: f64,
}

impl<'a, K> RankedList<'a, K> {
    /// A list with weight 1.
    pub fn new(keys: &'a [K]) -> Self {
        Self { keys, weight: 1.0 }
    }

    /// A list with the given weight (finite and ≥ 0).
    pub fn weighted(keys: &'a [K], weight: f64) -> Self {
        Self { keys, weight }
    }
}

/// One key of the fused ranking, with what it is made of (for `--json` explanations).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fused<K> {
    pub key: K,
    /// Σ_i w_i / (k + rank_i) over the lists that hold the key.
    pub score: f64,
    /// `ranks[i]` is the key's 1-based rank in input list `i`, `None` when that list does not hold it.
    pub ranks: Vec<Option<usize>>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FusionError {
    #[error("the RRF constant k must be a finite number ≥ 0, got {0}; the usual value is 60")]
    InvalidK(f64),
    #[error("the weight of ranked list {list} (counting from 0) must be a finite number ≥ 0, got {weight}")]
    InvalidWeight { list: usize, weight: f64 },
}

/// Fuses ranked lists by Reciprocal Rank Fusion with constant `k` (see the module documentation).
///
/// The result holds every key of the lists with a weight above 0, each once, best first. The order is total and
/// does not depend on hashing: higher fused score first; on equal scores, the key with the better (smaller) best
/// rank in any weighted list first, since one retriever's firm preference is worth more than no preference; then
/// the smaller key by `Ord`.
pub fn reciprocal_rank_fusion<K>(lists: &[RankedList<'_, K>], k: f64) -> Result<Vec<Fused<K>>, FusionError>
where
    K: Clone + Eq + Hash + Ord,
{
    if !k.is_finite() || k < 0.0 {
        return Err(FusionError::InvalidK(k));
    }
    for (list, ranked) in lists.iter().enumerate() {
        if !ranked.weight.is_finite() || ranked.weight < 0.0 {
            return Err(FusionError::InvalidWeight {
                list,
                weight: ranked.weight,
            });
        }
    }

    let mut slot_of: HashMap<&K, usize> = HashMap::new();
    let mut fused: Vec<Fused<K>> = Vec::new();
    for (list, ranked) in lists.iter().enumerate() {
        for (position, key) in ranked.keys.iter().enumerate() {
            let slot = *slot_of.entry(key).or_insert_with(|| {
                fused.push(Fused {
                    key: key.clone(),
                    score: 0.0,
                    ranks: vec![None; lists.len()],
                });
                fused.len() - 1
            });
            fused[slot].ranks[list].get_or_insert(position + 1);
        }
    }

    let mut fused: Vec<(Fused<K>, usize)> = fused
        .into_iter()
        .filter_map(|mut entry| {
            let mut best_rank: Option<usize> = None;
            // Summed in list order, so equal inputs give bit-identical scores.
            for (rank, ranked) in entry.ranks.iter().zip(lists) {
                if let (Some(rank), true) = (*rank, ranked.weight > 0.0) {
                    entry.score += ranked.weight / (k + rank as f64);
                    best_rank = Some(best_rank.map_or(rank, |best| best.min(rank)));
                }
            }
            Some((entry, best_rank?))
        })
        .collect();
    fused.sort_by(|(a, a_best), (b, b_best)| {
        b.score
            .total_cmp(&a.score)
            .then(a_best.cmp(b_best))
            .then_with(|| a.key.cmp(&b.key))
    });
    Ok(fused.into_iter().map(|(entry, _)| entry).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One term of the RRF sum, written out independently of the code under test.
    fn term(weight: f64, k: f64, rank: usize) -> f64 {
        weight / (k + rank as f64)
    }

    fn keys<K: Clone>(fused: &[Fused<K>]) -> Vec<K> {
        fused.iter().map(|f| f.key.clone()).collect()
    }

    #[test]
    fn scores_and_order_follow_the_formula() {
        let a = ["a", "b", "c"];
        let b = ["c", "a", "d"];
        let fused = reciprocal_rank_fusion(&[RankedList::new(&a), RankedList::new(&b)], DEFAULT_K).unwrap();
        // a: ranks 1 and 2; c: ranks 3 and 1; b: rank 2 only; d: rank 3 only.
        // 1/61 + 1/62 > 1/63 + 1/61 > 1/62 > 1/63.
        assert_eq!(keys(&fused), ["a", "c", "b", "d"]);
        assert_eq!(fused[0].score, term(1.0, 60.0, 1) + term(1.0, 60.0, 2));
        assert_eq!(fused[1].score, term(1.0, 60.0, 3) + term(1.0, 60.0, 1));
        assert_eq!(fused[2].score, term(1.0, 60.0, 2));
        assert_eq!(fused[3].score, term(1.0, 60.0, 3));
        assert_eq!(fused[1].ranks, vec![Some(3), Some(1)]);
        assert_eq!(fused[3].ranks, vec![None, Some(3)]);
    }

    #[test]
    fn chunk_ids_fuse() {
        let id = knowhow_core::ChunkId::new;
        let dense = [id("doc1", 0), id("doc2", 3)];
        let bm25 = [id("doc2", 3), id("doc1", 1)];
        let fused = reciprocal_rank_fusion(&[RankedList::new(&dense), RankedList::new(&bm25)], DEFAULT_K).unwrap();
        // doc2#3 is held by both lists (1/62 + 1/61) and beats doc1#0 (1/61) and doc1#1 (1/62).
        assert_eq!(keys(&fused), [id("doc2", 3), id("doc1", 0), id("doc1", 1)]);
    }

    #[test]
    fn weights_scale_contributions_and_can_flip_the_order() {
        let first = ["x", "y"];
        let second = ["y", "x"];
        // Equal weights: x and y both score 1/61 + 1/62 and both have best rank 1, so the key order decides.
        let even = reciprocal_rank_fusion(&[RankedList::new(&first), RankedList::new(&second)], DEFAULT_K).unwrap();
        assert_eq!(keys(&even), ["x", "y"]);
        assert_eq!(even[0].score, even[1].score);

        // Weight 2 on the second list: y = 2/61 + 1/62 beats x = 2/62 + 1/61.
        let lists = [RankedList::new(&first), RankedList::weighted(&second, 2.0)];
        let skewed = reciprocal_rank_fusion(&lists, DEFAULT_K).unwrap();
        assert_eq!(keys(&skewed), ["y", "x"]);
        assert_eq!(skewed[0].score, term(1.0, 60.0, 2) + term(2.0, 60.0, 1));
    }

    #[test]
    fn equal_scores_prefer_the_better_single_rank_then_the_smaller_key() {
        // k = 0 makes the arithmetic exact: p = 1/2 + 1/2 = 1 (rank 2 twice), q = 1/1 and r = 1/1 (rank 1 once).
        let one = ["q", "p"];
        let two = ["r", "p"];
        let fused = reciprocal_rank_fusion(&[RankedList::new(&one), RankedList::new(&two)], 0.0).unwrap();
        assert!(fused.iter().all(|f| f.score == 1.0), "{fused:?}");
        // q and r have best rank 1, p only 2 (although "p" is the smallest key); q and r tie on that too.
        assert_eq!(keys(&fused), ["q", "r", "p"]);
    }

    #[test]
    fn a_repeated_key_counts_once_at_its_best_position() {
        let list = ["a", "b", "a"];
        let fused = reciprocal_rank_fusion(&[RankedList::new(&list)], DEFAULT_K).unwrap();
        assert_eq!(keys(&fused), ["a", "b"]);
        assert_eq!(fused[0].score, term(1.0, 60.0, 1));
    }

    #[test]
    fn invalid_parameters_are_refused_with_the_culprit() {
        let list = ["a"];
        assert_eq!(
            reciprocal_rank_fusion(&[RankedList::new(&list)], -1.0),
            Err(FusionError::InvalidK(-1.0))
        );
        let lists = [RankedList::new(&list), RankedList::weighted(&list, f64::NAN)];
        let err = reciprocal_rank_fusion(&lists, DEFAULT_K).unwrap_err();
        assert!(matches!(err, FusionError::InvalidWeight { list: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("ranked list 1"), "{err}");
    }

    #[test]
    fn no_lists_fuse_to_nothing() {
        let lists: [RankedList<'_, u8>; 0] = [];
        assert!(reciprocal_rank_fusion(&lists, DEFAULT_K).unwrap().is_empty());
    }

    /// 1 to 4 lists of distinct keys drawn from 0..24, with weights in 0.1..3.
    fn lists_strategy() -> impl Strategy<Value = Vec<(Vec<u8>, f64)>> {
        let list = (
            proptest::sample::subsequence((0u8..24).collect::<Vec<_>>(), 0..24).prop_shuffle(),
            0.1f64..3.0,
        );
        proptest::collection::vec(list, 1..5)
    }

    fn ranked(lists: &[(Vec<u8>, f64)]) -> Vec<RankedList<'_, u8>> {
        lists
            .iter()
            .map(|(keys, weight)| RankedList::weighted(keys, *weight))
            .collect()
    }

    proptest! {
        #[test]
        fn a_key_first_everywhere_is_first(lists in lists_strategy()) {
            let champion = 200u8;
            let lists: Vec<(Vec<u8>, f64)> = lists
                .into_iter()
                .map(|(keys, weight)| (std::iter::once(champion).chain(keys).collect(), weight))
                .collect();
            let fused = reciprocal_rank_fusion(&ranked(&lists), DEFAULT_K).unwrap();
            prop_assert_eq!(fused[0].key, champion);
        }

        #[test]
        fn a_zero_weight_list_is_ignored(lists in lists_strategy(), extra in lists_strategy(), at in 0usize..5) {
            let with_extra: Vec<(Vec<u8>, f64)> = {
                let mut all = lists.clone();
                all.insert(at.min(all.len()), (extra[0].0.clone(), 0.0));
                all
            };
            let plain = reciprocal_rank_fusion(&ranked(&lists), DEFAULT_K).unwrap();
            let ignored = reciprocal_rank_fusion(&ranked(&with_extra), DEFAULT_K).unwrap();
            let key_scores = |fused: &[Fused<u8>]| fused.iter().map(|f| (f.key, f.score)).collect::<Vec<_>>();
            prop_assert_eq!(key_scores(&plain), key_scores(&ignored));
        }

        #[test]
        fn result_is_the_union_once_each_ranked_by_score(lists in lists_strategy(), k in 0.0f64..100.0) {
            let fused = reciprocal_rank_fusion(&ranked(&lists), k).unwrap();
            let mut union: Vec<u8> = lists.iter().flat_map(|(keys, _)| keys.iter().copied()).collect();
            union.sort_unstable();
            union.dedup();
            let mut got = keys(&fused);
            got.sort_unstable();
            prop_assert_eq!(got, union);
            for pair in fused.windows(2) {
                prop_assert!(pair[0].score >= pair[1].score);
            }
            for entry in &fused {
                for (list, (keys, _)) in lists.iter().enumerate() {
                    let expected = keys.iter().position(|key| *key == entry.key).map(|p| p + 1);
                    prop_assert_eq!(entry.ranks[list], expected);
                }
            }
        }
    }
}
