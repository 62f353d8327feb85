//! Softmax over the last dimension, plain and fused with attention's scaling and padding mask.

use std::mem::MaybeUninit;

use candle_core::Tensor;

use crate::error::{KernelError, Result};
use crate::simd::{
    dispatch, exp, fmadd, from_order_key, horizontal_max_key, horizontal_sum, max, order_key, Kernel, BLOCK,
    NEG_INFINITY_KEY,
};
use crate::tensors::{assume_init, cpu_tensor, for_each_row_block, last_dim, output_buffer, CpuF32};

/// Softmax over the last dimension of an f32 CPU tensor of any shape.
///
/// Numerically safe (the row maximum is subtracted first); a row containing +∞ or NaN gives NaN, as in PyTorch.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax_last_dim";
    let n = last_dim(OP, "x", x.dims())?;
    let src = CpuF32::borrow(OP, "x", x)?;
    let src = src.contiguous(OP, "x")?;
    // SAFETY: the row blocks cover the whole buffer and SoftmaxRows writes every element of its block.
    let dst = unsafe {
        output_buffer(src.len(), |dst| {
            for_each_row_block(src, dst, n, |_, src, dst| {
                dispatch(SoftmaxRows {
                    src,
                    dst,
                    row_len: n,
                    scale: 1.0,
                    mask: None,
                    first_row: 0,
                })
            })
        })
    };
    cpu_tensor(dst, x.dims())
}

/// softmax(scores · scale + mask) over the last dimension: attention probabilities in one pass.
///
/// `scores` has shape `[batch, ..., k]` (for BERT `[batch, heads, q, k]`); `mask`, when given, is an additive mask
/// holding one row of `k` values per batch item — shape `[batch, k]` or the `[batch, 1, 1, k]` Hugging Face
/// builds — typically 0 for real tokens and a large negative number (`f32::MIN` or −10000) for padding. It is
/// broadcast over every other dimension. With `f32::MIN`, a fully padded row becomes uniform rather than NaN,
/// exactly as in PyTorch.
pub fn masked_softmax(scores: &Tensor, scale: f32, mask: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "masked_softmax";
    let dims = scores.dims();
    let k = last_dim(OP, "scores", dims)?;
    let src = CpuF32::borrow(OP, "scores", scores)?;
    let src = src.contiguous(OP, "scores")?;
    let mask_guard = mask.map(|m| CpuF32::borrow(OP, "mask", m)).transpose()?;
    let mask = match (&mask_guard, mask) {
        (Some(guard), Some(tensor)) => {
            let batch = dims[0];
            let fits = tensor.dims().first() == Some(&batch)
                && tensor.dims().last() == Some(&k)
                && tensor.elem_count() == batch * k
                && dims.len() >= 2;
            if !fits {
                return Err(KernelError::Shape {
                    op: OP,
                    message: format!(
                        "`mask` must hold one row of {k} values per batch item ([{batch}, {k}] or [{batch}, 1, 1, {k}]) \
                         for `scores` {dims:?}, got {:?}",
                        tensor.dims()
                    ),
                });
            }
            let rows_per_batch = scores.elem_count() / (batch * k);
            Some(MaskRows {
                values: guard.contiguous(OP, "mask")?,
                rows_per_batch,
            })
        }
        _ => None,
    };
    // SAFETY: the row blocks cover the whole buffer and SoftmaxRows writes every element of its block.
    let dst = unsafe {
        output_buffer(src.len(), |dst| {
            for_each_row_block(src, dst, k, |first_row, src, dst| {
                dispatch(SoftmaxRows {
                    src,
                    dst,
                    row_len: k,
                    scale,
                    mask,
                    first_row,
                })
            })
        })
    };
    cpu_tensor(dst, dims)
}

/// e^(row + mask − max) in place for each row of `rows` (rows of `row_len`, all taking the same `mask` row), with
/// 1 / Σ of each row written to `inv_sums`: the softmax without its final division. Attention applies that
/// division to the context rows (head_dim wide) instead of the probabilities (kv_len wide), which is cheaper.
pub(crate) fn unnormalized_softmax_in_place(
    rows: &mut [f32],
    row_len: usize,
    mask: Option<&[f32]>,
    inv_sums: &mut [f32],
) {
    dispatch(UnnormalizedRows {
        rows,
        row_len,
        mask,
        inv_sums,
    });
}

/// An additive mask: row `r` of the scores takes mask row `r / rows_per_batch`.
#[derive(Clone, Copy)]
struct MaskRows<'a> {
    values: &'a [f32],
    rows_per_batch: usize,
}

/// Softmax of whole rows of `src` into `dst`. `first_row` is the index of `dst`'s first row in the whole tensor
/// (it selects the mask rows).
struct SoftmaxRows<'a> {
    src: &'a [f32],
    /// Written in full.
    dst: &'a mut [MaybeUninit<f32>],
    row_len: usize,
    scale: f32,
    mask: Option<MaskRows<'a>>,
    first_row: usize,
}

impl Kernel for SoftmaxRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let n = self.row_len;
        let scale = self.scale;
        for (i, (dst, src)) in self.dst.chunks_exact_mut(n).zip(self.src.chunks_exact(n)).enumerate() {
            let row_max = match self.mask {
                Some(m) => {
                    let batch = (self.first_row + i) / m.rows_per_batch;
                    let mask = &m.values[batch * n..(batch + 1) * n];
                    map_and_max(dst, src, mask, |s, m| fmadd::<FMA>(s, scale, m))
                }
                None => map_and_max(dst, src, src, |s, _| s * scale),
            };
            // SAFETY: `map_and_max` wrote the whole row.
            let dst = unsafe { assume_init(dst) };
            let inv_total = 1.0 / exp_and_sum::<FMA>(dst, row_max);
            for d in dst.iter_mut() {
                *d *= inv_total;
            }
        }
    }
}

struct UnnormalizedRows<'a> {
    rows: &'a mut [f32],
    row_len: usize,
    mask: Option<&'a [f32]>,
    inv_sums: &'a mut [f32],
}

impl Kernel for UnnormalizedRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        for (row, inv_sum) in self.rows.chunks_exact_mut(self.row_len).zip(self.inv_sums.iter_mut()) {
            let row_max = match self.mask {
                Some(mask) => add_and_max(row, mask),
                None => max(row),
            };
            *inv_sum = 1.0 / exp_and_sum::<FMA>(row, row_max);
        }
    }
}

/// `dst[i] = f(a[i], b[i])`, returning the maximum of the new values (see [`max`] for why it compares keys).
#[inline(always)]
fn map_and_max(dst: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [NEG_INFINITY_KEY; BLOCK];
    let mut dst_blocks = dst.chunks_exact_mut(BLOCK);
    let (mut a_blocks, mut b_blocks) = (a.chunks_exact(BLOCK), b.chunks_exact(BLOCK));
    for ((d, a), b) in (&mut dst_blocks).zip(&mut a_blocks).zip(&mut b_blocks) {
        for (((m, d), &a), &b) in acc.iter_mut().zip(d.iter_mut()).zip(a).zip(b) {
            let v = f(a, b);
            d.write(v);
            *m = (*m).max(order_key(v));
        }
    }
    let mut tail = NEG_INFINITY_KEY;
    for ((d, &a), &b) in dst_blocks
        .into_remainder()
        .iter_mut()
        .zip(a_blocks.remainder())
        .zip(b_blocks.remainder())
    {
        let v = f(a, b);
        d.write(v);
        tail = tail.max(order_key(v));
    }
    from_order_key(horizontal_max_key(acc).max(tail))
}

/// `row[i] += mask[i]`, returning the maximum of the sums.
#[inline(always)]
fn add_and_max(row: &mut [f32], mask: &[f32]) -> f32 {
    let mut acc = [NEG_INFINITY_KEY; BLOCK];
    let mut row_blocks = row.chunks_exact_mut(BLOCK);
    let mut mask_blocks = mask.chunks_exact(BLOCK);
    for (r, m) in (&mut row_blocks).zip(&mut mask_blocks) {
        for ((acc, r), &m) in acc.iter_mut().zip(r.iter_mut()).zip(m) {
            *r += m;
            *acc = (*acc).max(order_key(*r));
        }
    }
    let mut tail = NEG_INFINITY_KEY;
    for (r, &m) in row_blocks.into_remainder().iter_mut().zip(mask_blocks.remainder()) {
        *r += m;
        tail = tail.max(order_key(*r));
    }
    from_order_key(horizontal_max_key(acc).max(tail))
}

/// `row[i] = e^(row[i] − row_max)`, returning the sum of the new values.
#[inline(always)]
fn exp_and_sum<const FMA: bool>(row: &mut [f32], row_max: f32) -> f32 {
    let mut acc = [0f32; BLOCK];
    let mut blocks = row.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for (a, d) in acc.iter_mut().zip(block.iter_mut()) {
            let e = exp::<FMA>(*d - row_max);
            *d = e;
            *a += e;
        }
    }
    let mut total = horizontal_sum(acc);
    for d in blocks.into_remainder() {
        let e = exp::<FMA>(*d - row_max);
        *d = e;
        total += e;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{dispatch_on, Isa};
    use crate::test_support::{max_abs_diff, random, written, zeroed};
    use candle_core::{Device, D};
    use proptest::prelude::*;

    /// BERT's additive mask for `lengths` real tokens per batch item out of `k`.
    fn padding_mask(lengths: &[usize], k: usize, padded: f32) -> Tensor {
        let values: Vec<f32> = lengths
            .iter()
            .flat_map(|&len| (0..k).map(move |j| if j < len { 0.0 } else { padded }))
            .collect();
        Tensor::from_vec(values, (lengths.len(), k), &Device::Cpu).unwrap()
    }

    #[test]
    fn softmax_matches_candle_nn_on_attention_shapes_and_odd_sizes() {
        for dims in [
            vec![32, 12, 128, 128],
            vec![2, 3, 5, 7],
            vec![1, 1],
            vec![3, 17],
            vec![2, 1000],
        ] {
            let x = (random(&dims, 20) * 4.0).unwrap();
            let stock = candle_nn::ops::softmax_last_dim(&x).unwrap();
            let diff = max_abs_diff(&softmax_last_dim(&x).unwrap(), &stock);
            assert!(diff <= 1e-5, "{dims:?}: max abs diff {diff}");
        }
    }

    #[test]
    fn masked_softmax_matches_scale_add_softmax_in_candle() {
        let (b, h, q, k) = (4, 3, 5, 37);
        let scores = (random(&[b, h, q, k], 21) * 5.0).unwrap();
        for padded in [f32::MIN, -10_000.0] {
            let mask = padding_mask(&[37, 20, 1, 36], k, padded);
            for mask_shape in [vec![b, k], vec![b, 1, 1, k]] {
                let mask = mask.reshape(mask_shape.as_slice()).unwrap();
                let ours = masked_softmax(&scores, 0.125, Some(&mask)).unwrap();
                let logits = (&scores * 0.125)
                    .unwrap()
                    .broadcast_add(&mask.reshape((b, 1, 1, k)).unwrap())
                    .unwrap();
                let stock = candle_nn::ops::softmax_last_dim(&logits).unwrap();
                let diff = max_abs_diff(&ours, &stock);
                assert!(diff <= 1e-5, "mask {mask_shape:?} padded {padded}: max abs diff {diff}");
                // Padding gets no attention and each row still sums to one.
                let row_sums = ours
                    .sum(D::Minus1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert!(row_sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{row_sums:?}");
                let padded_prob = ours
                    .get(2)
                    .unwrap()
                    .narrow(D::Minus1, 1, k - 1)
                    .unwrap()
                    .max_all()
                    .unwrap();
                assert!(padded_prob.to_scalar::<f32>().unwrap() < 1e-30);
            }
        }
    }

    #[test]
    fn masked_softmax_without_mask_is_scaled_softmax() {
        let scores = random(&[6, 50], 22);
        let ours = masked_softmax(&scores, 0.3, None).unwrap();
        let stock = candle_nn::ops::softmax_last_dim(&(&scores * 0.3).unwrap()).unwrap();
        assert!(max_abs_diff(&ours, &stock) <= 1e-6);
    }

    #[test]
    fn unnormalized_rows_times_their_inverse_sums_are_the_softmax_on_every_isa() {
        let (rows, k) = (9, 23);
        let logits = random(&[rows, k], 23).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mask: Vec<f32> = (0..k).map(|j| if j % 4 == 3 { f32::MIN } else { 0.0 }).collect();
        let mask_tensor = Tensor::from_vec(mask.clone(), (1, k), &Device::Cpu).unwrap();
        let scores = Tensor::from_vec(logits.clone(), (1, rows, k), &Device::Cpu).unwrap();
        for (mask, mask_tensor) in [(Some(&mask[..]), Some(&mask_tensor)), (None, None)] {
            let expected = masked_softmax(&scores, 1.0, mask_tensor)
                .unwrap()
                .flatten_all()
                .unwrap();
            let expected = expected.to_vec1::<f32>().unwrap();
            for &isa in Isa::supported() {
                let mut values = logits.clone();
                let mut inv_sums = vec![0f32; rows];
                dispatch_on(
                    isa,
                    UnnormalizedRows {
                        rows: &mut values,
                        row_len: k,
                        mask,
                        inv_sums: &mut inv_sums,
                    },
                );
                let probs = values
                    .chunks(k)
                    .zip(&inv_sums)
                    .flat_map(|(row, inv)| row.iter().map(move |v| v * inv));
                let diff = probs.zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(diff <= 1e-6, "{isa:?}, mask {}: max abs diff {diff}", mask.is_some());
            }
        }
    }

    #[test]
    fn every_isa_gives_the_same_softmax() {
        let (rows, k) = (5, 77);
        let logits = random(&[rows, k], 26).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mask: Vec<f32> = (0..k).map(|j| if j > 60 { f32::MIN } else { 0.0 }).collect();
        let outputs: Vec<Vec<f32>> = Isa::supported()
            .iter()
            .map(|&isa| {
                let mut buffer = zeroed(logits.len());
                let mask = Some(MaskRows {
                    values: &mask,
                    rows_per_batch: usize::MAX,
                });
                let kernel = SoftmaxRows {
                    src: &logits,
                    dst: &mut buffer,
                    row_len: k,
                    scale: 0.3,
                    mask,
                    first_row: 0,
                };
                dispatch_on(isa, kernel);
                written(&buffer)
            })
            .collect();
        for (isa, output) in Isa::supported().iter().zip(&outputs) {
            let diff = output
                .iter()
                .zip(&outputs[0])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff <= 1e-6, "{isa:?} differs from {:?} by {diff}", Isa::supported()[0]);
        }
    }

    #[test]
    fn nan_in_a_row_poisons_only_that_row() {
        let mut values = vec![0.5f32; 40];
        values[3] = f32::NAN;
        let x = Tensor::from_vec(values, (2, 20), &Device::Cpu).unwrap();
        let out = softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
        assert!(out[0].iter().all(|v| v.is_nan()));
        assert!(out[1].iter().all(|v| (v - 0.05).abs() < 1e-6));
    }

    #[test]
    fn a_mask_for_the_wrong_batch_is_rejected() {
        let scores = random(&[2, 3, 4, 5], 24);
        let err = masked_softmax(&scores, 1.0, Some(&random(&[3, 5], 25)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("one row of 5 values per batch item ([2, 5]"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn softmax_matches_candle_for_any_shape(rows in 1usize..90, n in 1usize..400, seed in 0u64..1000) {
            let x = (random(&[rows, n], seed) * 6.0).unwrap();
            let stock = candle_nn::ops::softmax_last_dim(&x).unwrap();
            let diff = max_abs_diff(&softmax_last_dim(&x).unwrap(), &stock);
            prop_assert!(diff <= 1e-5, "max abs diff {}", diff);
        }

        #[test]
        fn masked_softmax_matches_candle_for_any_shape(
            b in 1usize..5, h in 1usize..4, q in 1usize..20, k in 1usize..150, seed in 0u64..1000
        ) {
            let scores = (random(&[b, h, q, k], seed) * 8.0).unwrap();
            let lengths: Vec<usize> = (0..b).map(|i| 1 + (seed as usize + 7 * i) % k).collect();
            let mask = padding_mask(&lengths, k, f32::MIN);
            let logits = (&scores * 0.17).unwrap().broadcast_add(&mask.reshape((b, 1, 1, k)).unwrap()).unwrap();
            let stock = candle_nn::ops::softmax_last_dim(&logits).unwrap();
            let diff = max_abs_diff(&masked_softmax(&scores, 0.17, Some(&mask)).unwrap(), &stock);
            prop_assert!(diff <= 1e-5, "max abs diff {}", diff);
        }
    }
}
