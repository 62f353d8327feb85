//! Multi-head scaled-dot-product attention for encoders, without the transposes.
//!
//! The textbook candle version reshapes the projections to `[batch, heads, seq, head_dim]`, makes them contiguous
//! (a copy each for Q, K, V and the context), materialises a `[batch, heads, seq, seq]` score tensor, scales it,
//! adds the mask, softmaxes it (three more passes over 25 MB at batch 32 × 128 tokens) and multiplies. Here one
//! rayon task per (batch item, head) reads its head's columns straight out of the projection outputs, keeps its
//! `seq × seq` scores in a cache-resident scratch buffer, and writes its slice of the context directly in the
//! `[batch, seq, hidden]` layout the output projection reads.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::matmul::{gemm_serial, MatMut, MatRef};
use crate::softmax::unnormalized_softmax_in_place;
use crate::tensors::{cpu_tensor, CpuF32};

/// softmax(Q·Kᵀ/√d + mask)·V per head, for `q` `[batch, q_len, hidden]` and `k`, `v` `[batch, kv_len, hidden]`.
///
/// Heads are the `num_heads` consecutive column groups of `hidden` (d = hidden / num_heads), as in BERT.
/// The three inputs need only a unit stride in their last dimension, so they can be separate tensors or
/// `narrow`ed views of one fused QKV projection ([`crate::PackedLinear::concat`]). `mask` is additive, one row of
/// `kv_len` values per batch item (`[batch, kv_len]` or `[batch, 1, 1, kv_len]`): 0 for tokens, a large negative
/// number (`f32::MIN`, −10000) for padding. Returns the context `[batch, q_len, hidden]`, heads side by side.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, num_heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "attention";
    let shape = AttentionShape::check(q, k, v, num_heads, mask)?;
    let (q, k, v) = (
        CpuF32::borrow(OP, "q", q)?,
        CpuF32::borrow(OP, "k", k)?,
        CpuF32::borrow(OP, "v", v)?,
    );
    let mask_guard = mask.map(|m| CpuF32::borrow(OP, "mask", m)).transpose()?;
    let mask = mask_guard.as_ref().map(|m| m.contiguous(OP, "mask")).transpose()?;
    let [q_view, k_view, v_view] = [&q, &k, &v].map(|t| HeadView::of(t));

    let AttentionShape {
        batch,
        q_len,
        kv_len,
        hidden,
        ..
    } = shape;
    let head_dim = hidden / num_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let len = batch * q_len * hidden;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let out_ptr = SendPtr(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());

    let head = |scratch: &mut Scratch, task: usize| {
        let (b, h) = (task / num_heads, task % num_heads);
        let column = h * head_dim;
        let q_head = q_view.head(b, column);
        let k_head = k_view.head(b, column);
        let v_head = v_view.head(b, column);
        // Kᵀ: walking down a column of Kᵀ is walking along a row of K.
        let k_t = MatRef {
            ptr: k_head.ptr,
            row_stride: 1,
            col_stride: k_head.row_stride,
        };
        let scores = MatMut {
            ptr: scratch.scores.as_mut_ptr(),
            row_stride: kv_len,
            col_stride: 1,
        };
        let context_offset = b * q_len * hidden + column;
        let context = MatMut {
            ptr: out_ptr.at(context_offset),
            row_stride: hidden,
            col_stride: 1,
        };
        let mask = mask.map(|m| &m[b * kv_len..(b + 1) * kv_len]);
        // SAFETY: the head views stay inside the borrowed buffers (checked by `AttentionShape::check` and
        // `HeadView::of`); `scores` holds q_len × kv_len; `context` is this task's own q_len × head_dim block of
        // `out`, disjoint from every other task's (different batch item or different columns).
        unsafe {
            // The 1/√d scale rides on the product, and the softmax's division waits for the narrower context.
            gemm_serial(q_len, kv_len, head_dim, scores, q_head, k_t, scale);
            unnormalized_softmax_in_place(&mut scratch.scores, kv_len, mask, &mut scratch.inv_sums);
            let probs = MatRef {
                ptr: scratch.scores.as_ptr(),
                row_stride: kv_len,
                col_stride: 1,
            };
            gemm_serial(q_len, head_dim, kv_len, context, probs, v_head, 1.0);
            for (i, &inv_sum) in scratch.inv_sums.iter().enumerate() {
                let row = std::slice::from_raw_parts_mut(out_ptr.at(context_offset + i * hidden), head_dim);
                for v in row {
                    *v *= inv_sum;
                }
            }
        }
    };
    let tasks = batch * num_heads;
    let work = tasks * q_len * kv_len * head_dim;
    let scratch = || Scratch {
        scores: vec![0f32; q_len * kv_len],
        inv_sums: vec![0f32; q_len],
    };
    if work >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1 {
        (0..tasks).into_par_iter().for_each_init(scratch, head);
    } else {
        let mut memory = scratch();
        (0..tasks).for_each(|task| head(&mut memory, task));
    }
    // SAFETY: the (batch item, head) tasks together wrote every element of the first `len`.
    unsafe { out.set_len(len) };
    cpu_tensor(out, &[batch, q_len, hidden])
}

/// One task's working memory: a head's scores (q_len × kv_len, cache-resident) and the softmax's row sums.
struct Scratch {
    scores: Vec<f32>,
    inv_sums: Vec<f32>,
}

/// Below this many multiply-adds (per product) attention runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// The output pointer, shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each task writes only its own (batch item, head) block; see `attention`.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The address `offset` elements on (a method, so closures capture the whole `Send` wrapper, not the field).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

struct AttentionShape {
    batch: usize,
    q_len: usize,
    kv_len: usize,
    hidden: usize,
}

impl AttentionShape {
    fn check(q: &Tensor, k: &Tensor, v: &Tensor, num_heads: usize, mask: Option<&Tensor>) -> Result<Self> {
        let shape_error = |message: String| KernelError::Shape {
            op: "attention",
            message,
        };
        let &[batch, q_len, hidden] = q.dims() else {
            return Err(shape_error(format!(
                "`q` must be [batch, seq, hidden], got {:?}",
                q.dims()
            )));
        };
        let kv_len = k.dims().get(1).copied().unwrap_or(0);
        for (arg, t) in [("k", k), ("v", v)] {
            if t.dims() != [batch, kv_len, hidden] {
                return Err(shape_error(format!(
                    "`{arg}` must be [batch, kv_len, hidden] = [{batch}, {kv_len}, {hidden}] to match `q` {:?} \
                     and `k` {:?}, got {:?}",
                    q.dims(),
                    k.dims(),
                    t.dims()
                )));
            }
        }
        if kv_len == 0 {
            return Err(shape_error(format!(
                "`k` and `v` need at least one position to attend to, got {:?}",
                k.dims()
            )));
        }
        if num_heads == 0 || hidden % num_heads != 0 {
            return Err(shape_error(format!(
                "hidden size {hidden} is not a multiple of num_heads = {num_heads}"
            )));
        }
        for (arg, t) in [("q", q), ("k", k), ("v", v)] {
            if t.stride()[2] != 1 && hidden > 1 {
                return Err(shape_error(format!(
                    "`{arg}` must have unit stride in its last dimension (strides {:?}); call `.contiguous()` first",
                    t.stride()
                )));
            }
        }
        if let Some(mask) = mask {
            let fits = mask.dims().first() == Some(&batch)
                && mask.dims().last() == Some(&kv_len)
                && mask.elem_count() == batch * kv_len;
            if !fits {
                return Err(shape_error(format!(
                    "`mask` must hold one row of {kv_len} values per batch item ([{batch}, {kv_len}] or \
                     [{batch}, 1, 1, {kv_len}]), got {:?}",
                    mask.dims()
                )));
            }
        }
        Ok(AttentionShape {
            batch,
            q_len,
            kv_len,
            hidden,
        })
    }
}

/// Where the heads of a `[batch, seq, hidden]` tensor live in its buffer.
struct HeadView {
    base: *const f32,
    batch_stride: usize,
    row_stride: usize,
}

// SAFETY: read-only addresses into buffers the caller keeps borrowed for the whole call.
unsafe impl Send for HeadView {}
unsafe impl Sync for HeadView {}

impl HeadView {
    /// SAFETY of later `head` calls rests on this: the layout's offsets for every in-range index lie inside the
    /// buffer, which candle guarantees for any tensor it created.
    fn of(tensor: &CpuF32) -> HeadView {
        let layout = tensor.layout();
        HeadView {
            base: tensor.buffer()[layout.start_offset()..].as_ptr(),
            batch_stride: layout.stride()[0],
            row_stride: layout.stride()[1],
        }
    }

    /// The `seq × head_dim` matrix of batch item `b` starting at column `column`.
    fn head(&self, b: usize, column: usize) -> MatRef {
        MatRef {
            ptr: self.base.wrapping_add(b * self.batch_stride + column),
            row_stride: self.row_stride,
            col_stride: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{max_abs_diff, random};
    use candle_core::{Device, D};
    use proptest::prelude::*;

    /// Attention the way a candle model writes it with stock ops.
    fn stock(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Tensor {
        let (b, q_len, hidden) = q.dims3().unwrap();
        let d = hidden / heads;
        let split = |t: &Tensor| {
            let (_, len, _) = t.dims3().unwrap();
            t.reshape((b, len, heads, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(q), split(k), split(v));
        let mut scores = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
        if let Some(mask) = mask {
            let kv_len = mask.dims()[mask.rank() - 1];
            scores = scores.broadcast_add(&mask.reshape((b, 1, 1, kv_len)).unwrap()).unwrap();
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        probs
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, q_len, hidden))
            .unwrap()
    }

    fn padding_mask(lengths: &[usize], len: usize) -> Tensor {
        let values: Vec<f32> = lengths
            .iter()
            .flat_map(|&l| (0..len).map(move |j| if j < l { 0.0 } else { f32::MIN }))
            .collect();
        Tensor::from_vec(values, (lengths.len(), len), &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_stock_candle_attention_on_a_bert_shape_with_padding() {
        let (b, s, hidden, heads) = (8, 128, 384, 12);
        let qkv = random(&[b, s, 3 * hidden], 70);
        let [q, k, v] = [0, 1, 2].map(|i| qkv.narrow(D::Minus1, i * hidden, hidden).unwrap());
        let mask = padding_mask(&[128, 100, 1, 64, 128, 127, 2, 90], s);
        let ours = attention(&q, &k, &v, heads, Some(&mask)).unwrap();
        let expected = stock(&q, &k, &v, heads, Some(&mask));
        let diff = max_abs_diff(&ours, &expected);
        assert!(diff <= 1e-5, "max abs diff {diff}");
    }

    #[test]
    fn separate_and_fused_inputs_agree_and_the_mask_is_optional() {
        let (b, s, hidden, heads) = (3, 17, 30, 5);
        let (q, k, v) = (
            random(&[b, s, hidden], 71),
            random(&[b, s, hidden], 72),
            random(&[b, s, hidden], 73),
        );
        let separate = attention(&q, &k, &v, heads, None).unwrap();
        let diff = max_abs_diff(&separate, &stock(&q, &k, &v, heads, None));
        assert!(diff <= 1e-5, "no mask: max abs diff {diff}");
        let fused = Tensor::cat(&[&q, &k, &v], D::Minus1).unwrap();
        let views: Vec<Tensor> = (0..3)
            .map(|i| fused.narrow(D::Minus1, i * hidden, hidden).unwrap())
            .collect();
        let from_views = attention(&views[0], &views[1], &views[2], heads, None).unwrap();
        assert!(max_abs_diff(&separate, &from_views) == 0.0);
    }

    #[test]
    fn cross_attention_lengths_and_4d_masks_work() {
        let (b, q_len, kv_len, hidden, heads) = (2, 5, 9, 8, 2);
        let q = random(&[b, q_len, hidden], 74);
        let (k, v) = (random(&[b, kv_len, hidden], 75), random(&[b, kv_len, hidden], 76));
        let mask = padding_mask(&[9, 4], kv_len).reshape((b, 1, 1, kv_len)).unwrap();
        let diff = max_abs_diff(
            &attention(&q, &k, &v, heads, Some(&mask)).unwrap(),
            &stock(&q, &k, &v, heads, Some(&mask)),
        );
        assert!(diff <= 1e-5, "max abs diff {diff}");
    }

    #[test]
    fn bad_shapes_are_explained() {
        let x = random(&[2, 4, 6], 77);
        let err = attention(&x, &x, &x, 4, None).unwrap_err().to_string();
        assert!(err.contains("not a multiple of num_heads = 4"), "{err}");
        let err = attention(&x, &random(&[2, 4, 5], 78), &x, 2, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`k` must be [batch, kv_len, hidden]"), "{err}");
        let err = attention(&x, &x, &x, 2, Some(&random(&[2, 5], 79)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`mask` must hold one row of 4 values"), "{err}");
        let strided = random(&[2, 6, 4], 80).transpose(1, 2).unwrap();
        let err = attention(&strided, &strided, &strided, 2, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unit stride"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_stock_candle_for_any_shape(
            b in 1usize..5, s in 1usize..70, heads in 1usize..5, head_dim in 1usize..40, masked: bool,
            seed in 0u64..1000
        ) {
            let hidden = heads * head_dim;
            let [q, k, v] = [0, 1, 2].map(|i| random(&[b, s, hidden], seed + i));
            let lengths: Vec<usize> = (0..b).map(|i| 1 + (seed as usize + 5 * i) % s).collect();
            let mask = masked.then(|| padding_mask(&lengths, s));
            let ours = attention(&q, &k, &v, heads, mask.as_ref()).unwrap();
            let diff = max_abs_diff(&ours, &stock(&q, &k, &v, heads, mask.as_ref()));
            prop_assert!(diff <= 1e-5, "max abs diff {}", diff);
        }
    }
}
