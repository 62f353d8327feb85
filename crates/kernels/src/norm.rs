//! LayerNorm over the last dimension, alone and fused with the residual add that precedes it in every BERT block.

use std::mem::MaybeUninit;

use candle_core::Tensor;

use crate::error::{KernelError, Result};
use crate::simd::{dispatch, fmadd, horizontal_sum, sum, Kernel, BLOCK};
use crate::tensors::{
    assume_init, cpu_tensor, for_each_row_block, for_each_row_block2, last_dim, output_buffer, CpuF32,
};

/// LayerNorm over the last dimension: (x − mean) / √(var + eps) · gamma + beta, per row.
///
/// `x` has shape `[..., n]`, `gamma` and `beta` shape `[n]`. The variance is the biased one (divide by n), as in
/// PyTorch and `candle_nn::ops::layer_norm`; it is computed from the deviations (passes over a row that stays in
/// L1), so it keeps its precision when the mean is large next to the spread. BERT uses eps = 1e−12.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    let n = check_params(OP, x, gamma, beta)?;
    let src = CpuF32::borrow(OP, "x", x)?;
    let src = src.contiguous(OP, "x")?;
    let (gamma, beta) = (CpuF32::borrow(OP, "gamma", gamma)?, CpuF32::borrow(OP, "beta", beta)?);
    let (gamma, beta) = (gamma.contiguous(OP, "gamma")?, beta.contiguous(OP, "beta")?);
    // SAFETY: the row blocks cover the whole buffer and LayerNormRows writes every element of its block.
    let dst = unsafe {
        output_buffer(src.len(), |dst| {
            for_each_row_block(src, dst, n, |_, x, dst| {
                dispatch(LayerNormRows {
                    x,
                    residual: None,
                    gamma,
                    beta,
                    eps,
                    dst,
                })
            })
        })
    };
    cpu_tensor(dst, x.dims())
}

/// LayerNorm(x + residual) in one pass over memory: BERT's "add & norm", twice per layer
/// (`attention.output.LayerNorm(dense(context) + input)` and `output.LayerNorm(dense(intermediate) + attention)`).
///
/// `x` and `residual` have the same shape `[..., n]`; see [`layer_norm`] for the rest.
pub fn add_layer_norm(x: &Tensor, residual: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    const OP: &str = "add_layer_norm";
    let n = check_params(OP, x, gamma, beta)?;
    if residual.dims() != x.dims() {
        return Err(KernelError::Shape {
            op: OP,
            message: format!(
                "`residual` must have the shape of `x` {:?}, got {:?}",
                x.dims(),
                residual.dims()
            ),
        });
    }
    let src = CpuF32::borrow(OP, "x", x)?;
    let src = src.contiguous(OP, "x")?;
    let res = CpuF32::borrow(OP, "residual", residual)?;
    let res = res.contiguous(OP, "residual")?;
    let (gamma, beta) = (CpuF32::borrow(OP, "gamma", gamma)?, CpuF32::borrow(OP, "beta", beta)?);
    let (gamma, beta) = (gamma.contiguous(OP, "gamma")?, beta.contiguous(OP, "beta")?);
    // SAFETY: the row blocks cover the whole buffer and LayerNormRows writes every element of its block.
    let dst = unsafe {
        output_buffer(src.len(), |dst| {
            for_each_row_block2(src, res, dst, n, |x, residual, dst| {
                dispatch(LayerNormRows {
                    x,
                    residual: Some(residual),
                    gamma,
                    beta,
                    eps,
                    dst,
                })
            })
        })
    };
    cpu_tensor(dst, x.dims())
}

/// Checks that `gamma` and `beta` are `[n]` for the last dimension n of `x`, and returns n.
fn check_params(op: &'static str, x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<usize> {
    let n = last_dim(op, "x", x.dims())?;
    for (arg, t) in [("gamma", gamma), ("beta", beta)] {
        if t.dims() != [n] {
            return Err(KernelError::Shape {
                op,
                message: format!(
                    "`{arg}` must have shape [{n}] to match the last dimension of `x` {:?}, got {:?}",
                    x.dims(),
                    t.dims()
                ),
            });
        }
    }
    Ok(n)
}

/// What [`bias_residual_layer_norm_in_place`] adds and normalises with.
#[derive(Clone, Copy)]
pub(crate) struct AddNorm<'a> {
    pub bias: Option<&'a [f32]>,
    /// The residual rows, aligned with the rows being normalised.
    pub residual: &'a [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
}

/// rows = LayerNorm(rows + bias + residual), row by row, on the calling thread: the epilogue of a dense layer
/// followed by BERT's add & norm, run on a block of matmul output while it is still in cache.
pub(crate) fn bias_residual_layer_norm_in_place(rows: &mut [f32], add: AddNorm) {
    dispatch(AddNormInPlace { rows, add });
}

struct AddNormInPlace<'a> {
    rows: &'a mut [f32],
    add: AddNorm<'a>,
}

impl Kernel for AddNormInPlace<'_> {
    type Output = ();
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let AddNorm {
            bias,
            residual,
            gamma,
            beta,
            eps,
        } = self.add;
        let n = gamma.len();
        for (row, r) in self.rows.chunks_exact_mut(n).zip(residual.chunks_exact(n)) {
            match bias {
                Some(bias) => {
                    for ((v, &r), &b) in row.iter_mut().zip(r).zip(bias) {
                        *v += r + b;
                    }
                }
                None => {
                    for (v, &r) in row.iter_mut().zip(r) {
                        *v += r;
                    }
                }
            }
            let stats = RowStats::of::<FMA>(row, eps);
            for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = fmadd::<FMA>(stats.normalize::<FMA>(*v), g, b);
            }
        }
    }
}

/// LayerNorm(x + residual) of whole rows into `dst`, writing every element.
struct LayerNormRows<'a> {
    x: &'a [f32],
    residual: Option<&'a [f32]>,
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
    dst: &'a mut [MaybeUninit<f32>],
}

impl Kernel for LayerNormRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let n = self.gamma.len();
        let rows = self.dst.chunks_exact_mut(n).zip(self.x.chunks_exact(n));
        match self.residual {
            None => {
                for (dst, x) in rows {
                    let stats = RowStats::of::<FMA>(x, self.eps);
                    for (((d, &v), &g), &b) in dst.iter_mut().zip(x).zip(self.gamma).zip(self.beta) {
                        d.write(fmadd::<FMA>(stats.normalize::<FMA>(v), g, b));
                    }
                }
            }
            Some(residual) => {
                for ((dst, x), r) in rows.zip(residual.chunks_exact(n)) {
                    for ((d, &a), &b) in dst.iter_mut().zip(x).zip(r) {
                        d.write(a + b);
                    }
                    // SAFETY: the loop above wrote the whole row.
                    let dst = unsafe { assume_init(dst) };
                    let stats = RowStats::of::<FMA>(dst, self.eps);
                    for ((d, &g), &b) in dst.iter_mut().zip(self.gamma).zip(self.beta) {
                        *d = fmadd::<FMA>(stats.normalize::<FMA>(*d), g, b);
                    }
                }
            }
        }
    }
}

/// What normalising one row needs: (x − mean) / √(var + eps), with the mean kept in two parts.
///
/// Corrected two-pass algorithm (Chan, Golub & LeVeque): the deviations from a first, rounded mean also yield that
/// mean's rounding error, `correction`. It is far below the mean's last bit, so it is subtracted from each deviation
/// rather than added to the mean (where it would vanish). This keeps rows whose spread is tiny next to their mean
/// accurate — exactly where E[x²] − E[x]² loses every digit.
struct RowStats {
    mean: f32,
    inv_std: f32,
    /// −correction / std, added after scaling the deviation.
    shift: f32,
}

impl RowStats {
    #[inline(always)]
    fn of<const FMA: bool>(row: &[f32], eps: f32) -> RowStats {
        let n = row.len() as f32;
        let mean = sum(row) / n;
        let mut squares = [0f32; BLOCK];
        let mut deviations = [0f32; BLOCK];
        let mut blocks = row.chunks_exact(BLOCK);
        for block in &mut blocks {
            for ((sq, dev), &v) in squares.iter_mut().zip(deviations.iter_mut()).zip(block) {
                let d = v - mean;
                *sq = fmadd::<FMA>(d, d, *sq);
                *dev += d;
            }
        }
        let (mut sum_squares, mut sum_deviations) = (horizontal_sum(squares), horizontal_sum(deviations));
        for &v in blocks.remainder() {
            let d = v - mean;
            sum_squares += d * d;
            sum_deviations += d;
        }
        let correction = sum_deviations / n;
        let var = (sum_squares / n - correction * correction).max(0.0);
        let inv_std = 1.0 / (var + eps).sqrt();
        RowStats {
            mean,
            inv_std,
            shift: -correction * inv_std,
        }
    }

    #[inline(always)]
    fn normalize<const FMA: bool>(&self, v: f32) -> f32 {
        fmadd::<FMA>(v - self.mean, self.inv_std, self.shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{dispatch_on, Isa};
    use crate::test_support::{exact_layer_norm, max_abs_diff, random, written, zeroed};
    use proptest::prelude::*;

    fn stock_layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Tensor {
        candle_nn::ops::layer_norm(x, gamma, beta, eps).unwrap()
    }

    #[test]
    fn layer_norm_matches_candle_nn_on_bert_shapes_and_odd_sizes() {
        for dims in [
            vec![32, 128, 384],
            vec![3, 5, 7],
            vec![1, 1],
            vec![4, 17],
            vec![2, 33],
            vec![9, 1000],
        ] {
            let n = *dims.last().unwrap();
            let x = (random(&dims, 10) * 3.0).unwrap();
            let (gamma, beta) = (random(&[n], 11), random(&[n], 12));
            for eps in [1e-12, 1e-5] {
                let diff = max_abs_diff(
                    &layer_norm(&x, &gamma, &beta, eps).unwrap(),
                    &stock_layer_norm(&x, &gamma, &beta, eps),
                );
                assert!(diff <= 1e-5, "{dims:?} eps {eps}: max abs diff {diff}");
            }
        }
    }

    #[test]
    fn add_layer_norm_matches_candle_add_then_layer_norm() {
        for dims in [vec![32, 128, 384], vec![2, 3, 19], vec![1, 5]] {
            let n = *dims.last().unwrap();
            let x = random(&dims, 13);
            let residual = (random(&dims, 14) * 2.0).unwrap();
            let (gamma, beta) = (random(&[n], 15), random(&[n], 16));
            let ours = add_layer_norm(&x, &residual, &gamma, &beta, 1e-12).unwrap();
            let stock = stock_layer_norm(&(&x + &residual).unwrap(), &gamma, &beta, 1e-12);
            let diff = max_abs_diff(&ours, &stock);
            assert!(diff <= 1e-5, "{dims:?}: max abs diff {diff}");
        }
    }

    #[test]
    fn every_isa_normalises_rows_to_zero_mean_and_unit_variance() {
        let (rows, n) = (7, 45);
        let x: Vec<f32> = (0..rows * n)
            .map(|i| 100.0 + (i as f32 * 0.71).sin() * (1 + i % 5) as f32)
            .collect();
        let (gamma, beta) = (vec![1f32; n], vec![0f32; n]);
        for &isa in Isa::supported() {
            let mut buffer = zeroed(x.len());
            let kernel = LayerNormRows {
                x: &x,
                residual: None,
                gamma: &gamma,
                beta: &beta,
                eps: 0.0,
                dst: &mut buffer,
            };
            dispatch_on(isa, kernel);
            for row in written(&buffer).chunks_exact(n) {
                let mean = row.iter().sum::<f32>() / n as f32;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n as f32;
                assert!(
                    mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                    "{isa:?}: mean {mean}, var {var}"
                );
            }
        }
    }

    #[test]
    fn mismatched_parameters_are_rejected_with_the_expected_shape() {
        let x = random(&[4, 8], 17);
        let err = layer_norm(&x, &random(&[8], 1), &random(&[9], 2), 1e-12)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`beta` must have shape [8]"), "{err}");
        let err = add_layer_norm(&x, &random(&[4, 9], 3), &random(&[8], 1), &random(&[8], 2), 1e-12)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`residual` must have the shape of `x`"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn layer_norm_matches_candle_for_any_shape(rows in 1usize..90, n in 2usize..600, seed in 0u64..1000) {
            let x = random(&[rows, n], seed);
            let (gamma, beta) = (random(&[n], seed + 1), random(&[n], seed + 2));
            let ours = layer_norm(&x, &gamma, &beta, 1e-12).unwrap();
            let diff = max_abs_diff(&ours, &exact_layer_norm(&x, &gamma, &beta, 1e-12));
            prop_assert!(diff <= 1e-5, "max abs diff {}", diff);
        }

        #[test]
        fn add_layer_norm_matches_candle_for_any_shape(rows in 1usize..90, n in 2usize..600, seed in 0u64..1000) {
            let x = random(&[rows, n], seed);
            let residual = random(&[rows, n], seed + 3);
            let (gamma, beta) = (random(&[n], seed + 1), random(&[n], seed + 2));
            let exact = exact_layer_norm(&(&x + &residual).unwrap(), &gamma, &beta, 1e-12);
            let diff = max_abs_diff(&add_layer_norm(&x, &residual, &gamma, &beta, 1e-12).unwrap(), &exact);
            prop_assert!(diff <= 1e-5, "max abs diff {}", diff);
        }
    }
}
