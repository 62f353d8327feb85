//! Attention probabilities of a decoder in one op: `softmax(scores · scale)` over the keys each query may see.
//!
//! Written out with candle's ops, the scaling, the additive −∞ mask and the softmax's max, subtraction, exponent and
//! division each make a tensor of the scores' size (`[batch, heads, queries, keys]`), and a training graph keeps
//! every one of them until the backward pass. This op keeps its input and its output only, and its backward pass is
//! the softmax's closed form: `∂scores = scale · p ⊙ (∂p − Σ ∂p ⊙ p)`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Which keys a query sees: query `i` of a chunk that starts at position `offset` sees key `j` when
/// `j ≤ offset + i` and, with a sliding window `w`, `j > offset + i − w`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CausalSoftmax {
    pub scale: f32,
    pub offset: usize,
    pub window: Option<usize>,
}

impl CausalSoftmax {
    /// Applies the op to `scores: [..., queries, keys]` (f32, on the CPU).
    pub fn apply(self, scores: &Tensor) -> Result<Tensor> {
        scores.apply_op1(self)
    }

    /// The keys `first..end` that query `query` sees.
    fn visible(&self, query: usize, keys: usize) -> (usize, usize) {
        let end = (self.offset + query + 1).min(keys);
        let first = self
            .window
            .map_or(0, |window| (self.offset + query + 1).saturating_sub(window));
        (first.min(end), end)
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        if dims.len() < 2 {
            candle_core::bail!("causal-softmax: scores must be [..., queries, keys], got {dims:?}");
        }
        let (queries, keys) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let scores = super::contiguous_f32(storage, layout, "causal-softmax", "scores")?;
        let mut probabilities = vec![0f32; scores.len()];
        probabilities
            .par_chunks_mut(keys)
            .zip(scores.par_chunks(keys))
            .enumerate()
            .for_each(|(row, (out, scores))| {
                let (first, end) = self.visible(row % queries, keys);
                let visible = &scores[first..end];
                let max = visible.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s)) * self.scale;
                let mut sum = 0f32;
                for (p, &s) in out[first..end].iter_mut().zip(visible) {
                    *p = (s * self.scale - max).exp();
                    sum += *p;
                }
                let inverse = 1.0 / sum;
                out[first..end].iter_mut().for_each(|p| *p *= inverse);
            });
        Ok((CpuStorage::F32(probabilities), layout.shape().clone()))
    }

    fn bwd(&self, _scores: &Tensor, probabilities: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // Masked positions have p = 0, so they get no gradient. Detached: a gradient must not carry a graph.
        let probabilities = &probabilities.detach();
        let dot = (grad * probabilities)?.sum_keepdim(D::Minus1)?;
        let grad = ((grad.broadcast_sub(&dot)? * probabilities)? * self.scale as f64)?;
        Ok(Some(grad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::max_abs_diff as max_diff;
    use candle_core::{Device, Var};

    /// The same probabilities with candle's own ops: scale, add a −∞ mask, softmax.
    fn reference(scores: &Tensor, op: CausalSoftmax) -> Tensor {
        let (queries, keys) = (scores.dim(D::Minus2).unwrap(), scores.dim(D::Minus1).unwrap());
        let mask: Vec<f32> = (0..queries)
            .flat_map(|q| {
                let (first, end) = op.visible(q, keys);
                (0..keys).map(move |k| {
                    if (first..end).contains(&k) {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (queries, keys), scores.device()).unwrap();
        let scaled = (scores * op.scale as f64).unwrap();
        candle_nn::ops::softmax(&scaled.broadcast_add(&mask).unwrap(), D::Minus1).unwrap()
    }

    #[test]
    fn matches_scaled_masked_softmax_and_its_gradient() {
        let device = Device::Cpu;
        for op in [
            CausalSoftmax {
                scale: 0.125,
                offset: 0,
                window: None,
            },
            CausalSoftmax {
                scale: 0.5,
                offset: 0,
                window: Some(3),
            },
            CausalSoftmax {
                scale: 1.0,
                offset: 4,
                window: None,
            },
        ] {
            let keys = op.offset + 6;
            let scores = Var::randn(0f32, 3.0, (2, 3, 6, keys), &device).unwrap();
            let upstream = Tensor::randn(0f32, 1.0, (2, 3, 6, keys), &device).unwrap();
            let fused = op.apply(scores.as_tensor()).unwrap();
            let plain = reference(scores.as_tensor(), op);
            assert!(max_diff(&fused, &plain) < 1e-6, "{op:?}");

            let fused_grad = (fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let plain_grad = (plain * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let (fused_grad, plain_grad) = (fused_grad.get(&scores).unwrap(), plain_grad.get(&scores).unwrap());
            assert!(max_diff(fused_grad, plain_grad) < 1e-5, "{op:?}");
        }
    }

    #[test]
    fn rows_sum_to_one_over_the_visible_keys_only() {
        let op = CausalSoftmax {
            scale: 1.0,
            offset: 2,
            window: Some(2),
        };
        let scores = Tensor::ones((1, 3, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        let rows = op.apply(&scores).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        // Query 0 is position 2: keys 1 and 2. Query 2 is position 4: keys 3 and 4.
        assert_eq!(rows[0], [0.0, 0.5, 0.5, 0.0, 0.0]);
        assert_eq!(rows[2], [0.0, 0.0, 0.0, 0.5, 0.5]);
        assert!(op.apply(&scores.to_dtype(candle_core::DType::F64).unwrap()).is_err());
    }
}
