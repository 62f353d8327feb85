//! The exact scan: the inner product of the query with every candidate row,
//! the best `k` kept in a small heap, rows split over threads when there are
//! enough of them to pay for it.
//!
//! Scanning is bound by memory bandwidth (every row is read once per query),
//! so the dot product only has to keep up with the loads: AVX2 with FMA where
//! the CPU has it (checked at run time), otherwise a portable loop written so
//! that LLVM vectorises it for the target's baseline (SSE2, NEON).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use rayon::prelude::*;

/// Below this many values (rows × dimension) one thread scans everything: the
/// split costs more than it saves.
const PARALLEL_MIN_VALUES: usize = 1 << 20;
/// Longer spans are cut into pieces of this many rows so threads share work.
const PIECE_ROWS: usize = 4096;

/// `rows` consecutive rows from `first_row`, all belonging to entry `doc` of
/// the caller's document list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) doc: usize,
    pub(crate) first_row: usize,
    pub(crate) rows: usize,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) score: f32,
    pub(crate) row: usize,
    pub(crate) doc: usize,
}

/// Better is greater: a higher score, then (for a stable order) a lower row.
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.row.cmp(&self.row))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The best `k` candidates seen: a min-heap whose top is the worst one kept.
struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Candidate>>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    fn push(&mut self, candidate: Candidate) {
        if self.heap.len() < self.k {
            self.heap.push(Reverse(candidate));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if candidate > worst.0 {
                *worst = Reverse(candidate);
            }
        }
    }

    fn merge(mut self, other: TopK) -> TopK {
        for Reverse(candidate) in other.heap {
            self.push(candidate);
        }
        self
    }

    fn into_sorted(self) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = self.heap.into_iter().map(|Reverse(c)| c).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }
}

/// The `k` rows of `spans` with the highest inner product with `query`, best
/// first. `matrix` holds `dimension` values per row; `query` has `dimension`.
pub(crate) fn top_k(matrix: &[f32], dimension: usize, spans: &[Span], query: &[f32], k: usize) -> Vec<Candidate> {
    if k == 0 || dimension == 0 {
        return Vec::new();
    }
    let kernel = Kernel::detect();
    let scan = |mut top: TopK, span: &Span| {
        let rows = &matrix[span.first_row * dimension..(span.first_row + span.rows) * dimension];
        for (i, row) in rows.chunks_exact(dimension).enumerate() {
            top.push(Candidate {
                score: kernel.dot(query, row),
                row: span.first_row + i,
                doc: span.doc,
            });
        }
        top
    };
    let total_rows: usize = spans.iter().map(|s| s.rows).sum();
    let top = if total_rows * dimension < PARALLEL_MIN_VALUES {
        spans.iter().fold(TopK::new(k), scan)
    } else {
        cut(spans, PIECE_ROWS)
            .par_iter()
            .fold(|| TopK::new(k), scan)
            .reduce(|| TopK::new(k), TopK::merge)
    };
    top.into_sorted()
}

/// The spans with every one longer than `max_rows` cut into pieces.
fn cut(spans: &[Span], max_rows: usize) -> Vec<Span> {
    let mut out = Vec::with_capacity(spans.len());
    for span in spans {
        let mut start = 0;
        while start < span.rows {
            let rows = max_rows.min(span.rows - start);
            out.push(Span {
                doc: span.doc,
                first_row: span.first_row + start,
                rows,
            });
            start += rows;
        }
    }
    out
}

/// Which dot product this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Portable,
    /// Only made by [`Kernel::detect`] on a CPU with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Kernel::Avx2Fma;
        }
        Kernel::Portable
    }

    #[inline]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Kernel::Portable => dot_portable(a, b),
            // SAFETY: this variant exists only where the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => unsafe { dot_avx2_fma(a, b) },
        }
    }
}

/// Floating-point addition is not associative, so LLVM keeps one sum in
/// order unless given several: 32 independent partial sums become 8 SSE or
/// NEON registers (4 AVX ones) of multiply-adds per step.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 32;
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_blocks
        .remainder()
        .iter()
        .zip(b_blocks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut sums = [0.0f32; LANES];
    for (x, y) in a_blocks.zip(b_blocks) {
        for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
            *sum += x * y;
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// Two loads per multiply-add cap the loop at about one FMA per cycle; four
/// accumulators cover the FMA latency of four cycles.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, sum) in acc.iter_mut().enumerate() {
            let at = i + 8 * j;
            *sum = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(at)), _mm256_loadu_ps(pb.add(at)), *sum);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    let mut total = _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
    while i < n {
        total += a[i] * b[i];
        i += 1;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream in [-1, 1).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
    }

    #[test]
    fn every_kernel_matches_a_double_precision_dot_product_at_every_length() {
        let kernels = [Kernel::Portable, Kernel::detect()];
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 63, 100, 384, 385, 1024] {
            let (a, b) = (values(n as u64, n), values(n as u64 + 1000, n));
            let exact = dot_f64(&a, &b);
            for kernel in kernels {
                let got = f64::from(kernel.dot(&a, &b));
                assert!(
                    (got - exact).abs() < 1e-4 * (1.0 + n as f64),
                    "{kernel:?} at n={n}: {got} vs {exact}"
                );
            }
        }
    }

    fn brute_force(matrix: &[f32], dimension: usize, spans: &[Span], query: &[f32], k: usize) -> Vec<(usize, f64)> {
        let mut all: Vec<(usize, f64)> = spans
            .iter()
            .flat_map(|s| s.first_row..s.first_row + s.rows)
            .map(|row| (row, dot_f64(query, &matrix[row * dimension..(row + 1) * dimension])))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    /// Checks that `got` holds the brute-force top k, allowing rows whose
    /// exact scores differ by rounding to swap places.
    fn assert_same_top(got: &[Candidate], expected: &[(usize, f64)]) {
        assert_eq!(got.len(), expected.len());
        for (g, (row, score)) in got.iter().zip(expected) {
            assert!(
                (f64::from(g.score) - score).abs() < 1e-4,
                "row {} scored {} not {score}",
                g.row,
                g.score
            );
            if g.row != *row {
                assert!(
                    (f64::from(g.score) - score).abs() < 1e-5,
                    "row {} instead of {row}",
                    g.row
                );
            }
        }
    }

    #[test]
    fn top_k_equals_brute_force_sequentially_and_in_parallel() {
        let dimension = 48;
        for (rows, k) in [(10, 3), (500, 10), (30_000, 25)] {
            let matrix = values(rows as u64, rows * dimension);
            // Uneven spans, with gaps (rows of dead or filtered-out documents).
            let mut spans = Vec::new();
            let mut row = 0;
            let mut doc = 0;
            while row < rows {
                let len = (1 + doc % 7).min(rows - row);
                if doc % 5 != 3 {
                    spans.push(Span {
                        doc,
                        first_row: row,
                        rows: len,
                    });
                }
                row += len;
                doc += 1;
            }
            for seed in 0..3 {
                let query = values(seed + 77, dimension);
                let got = top_k(&matrix, dimension, &spans, &query, k);
                assert_same_top(&got, &brute_force(&matrix, dimension, &spans, &query, k));
                for c in &got {
                    let span = spans.iter().find(|s| s.doc == c.doc).expect("a span of the doc");
                    assert!((span.first_row..span.first_row + span.rows).contains(&c.row));
                }
            }
        }
    }

    #[test]
    fn k_larger_than_the_rows_returns_all_of_them_and_k_zero_none() {
        let matrix = values(3, 4 * 8);
        let spans = [Span {
            doc: 0,
            first_row: 0,
            rows: 4,
        }];
        let query = values(4, 8);
        assert_eq!(top_k(&matrix, 8, &spans, &query, 10).len(), 4);
        assert!(top_k(&matrix, 8, &spans, &query, 0).is_empty());
    }

    #[test]
    fn cut_pieces_cover_each_span_exactly() {
        let spans = [
            Span {
                doc: 0,
                first_row: 0,
                rows: 10,
            },
            Span {
                doc: 1,
                first_row: 20,
                rows: 3,
            },
        ];
        let pieces = cut(&spans, 4);
        let rows: Vec<(usize, usize)> = pieces
            .iter()
            .flat_map(|p| (p.first_row..p.first_row + p.rows).map(move |r| (p.doc, r)))
            .collect();
        let expected: Vec<(usize, usize)> = (0..10).map(|r| (0, r)).chain((20..23).map(|r| (1, r))).collect();
        assert_eq!(rows, expected);
        assert!(pieces.iter().all(|p| p.rows <= 4));
    }
}
