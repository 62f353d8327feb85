//! Dense layers, y = x·Wᵀ + b, optionally followed by GELU, computed with the `gemm` crate.
//!
//! Why not `Tensor::matmul`: it already calls the same `gemm` and is as fast on the product itself (about 100
//! GFLOP/s per core on this AVX-512 machine, level with PyTorch's MKL). What it cannot do is the rest of the layer:
//! the bias add and the GELU are separate passes over a 25 MB output (for 4096 tokens × 1536), each allocating a new
//! tensor. Here the output is split into blocks of rows, one rayon task each; a task multiplies its block and then
//! finishes it while it is still in cache — bias, then GELU or residual + LayerNorm — writing the output buffer
//! exactly once.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::gelu::bias_gelu_in_place;
use crate::matmul::{gemm_parallel, gemm_serial, MatMut, MatRef};
use crate::norm::{bias_residual_layer_norm_in_place, AddNorm};
use crate::simd::{dispatch, Kernel};
use crate::tensors::{cpu_tensor, last_dim, CpuF32};

/// A dense layer whose weight was transposed once, at load, into the `[in, out]` layout `gemm` reads fastest
/// (its micro-kernel wants the weight's output dimension contiguous; from PyTorch's `[out, in]` layout it repacks
/// the weight on every call, which halved the speed of 96-row blocks of the 1536 → 384 layer here).
///
/// ```
/// # use candle_core::{Device, Tensor};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let weight = Tensor::randn(0f32, 1.0, (1536, 384), &Device::Cpu)?; // [out, in], as in safetensors
/// let bias = Tensor::randn(0f32, 1.0, 1536, &Device::Cpu)?;
/// let intermediate = knowhow_kernels::PackedLinear::new(&weight, Some(&bias))?;
/// let hidden = Tensor::randn(0f32, 1.0, (2, 7, 384), &Device::Cpu)?;
/// let activated = intermediate.forward_gelu(&hidden)?; // gelu_erf(hidden·Wᵀ + b)
/// assert_eq!(activated.dims(), &[2, 7, 1536]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PackedLinear {
    /// Wᵀ, row-major `[in_features, out_features]`.
    weight_t: Vec<f32>,
    bias: Option<Vec<f32>>,
    in_features: usize,
    out_features: usize,
}

impl PackedLinear {
    /// Packs a weight in PyTorch's layout `[out_features, in_features]` (what safetensors and `candle_nn::Linear`
    /// hold) and an optional bias `[out_features]`. Both must be f32 CPU tensors; any strides are accepted.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        const OP: &str = "PackedLinear::new";
        let (out_features, in_features) = match weight.dims() {
            &[out_features, in_features] => (out_features, in_features),
            dims => {
                return Err(KernelError::Shape {
                    op: OP,
                    message: format!("`weight` must be [out_features, in_features], got {dims:?}"),
                })
            }
        };
        CpuF32::borrow(OP, "weight", weight)?;
        let weight_t = weight.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let bias = match bias {
            None => None,
            Some(bias) => {
                if bias.dims() != [out_features] {
                    return Err(KernelError::Shape {
                        op: OP,
                        message: format!(
                            "`bias` must be [{out_features}] for `weight` {:?}, got {:?}",
                            weight.dims(),
                            bias.dims()
                        ),
                    });
                }
                CpuF32::borrow(OP, "bias", bias)?;
                Some(bias.flatten_all()?.to_vec1::<f32>()?)
            }
        };
        Ok(PackedLinear {
            weight_t,
            bias,
            in_features,
            out_features,
        })
    }

    /// One layer computing all of `layers` side by side: output columns are `layers[0]`'s, then `layers[1]`'s…
    ///
    /// For projections that read the same input, such as attention's query, key and value: one matmul with
    /// 3× the columns runs faster than three, and its output can go straight to [`crate::attention`] as three
    /// `narrow`ed views. A layer without bias contributes zeros to the fused bias.
    pub fn concat(layers: &[PackedLinear]) -> Result<Self> {
        const OP: &str = "PackedLinear::concat";
        let Some(first) = layers.first() else {
            return Err(KernelError::Shape {
                op: OP,
                message: "needs at least one layer".to_string(),
            });
        };
        let in_features = first.in_features;
        if let Some(other) = layers.iter().find(|l| l.in_features != in_features) {
            return Err(KernelError::Shape {
                op: OP,
                message: format!(
                    "all layers must read {in_features} features, one reads {}",
                    other.in_features
                ),
            });
        }
        let out_features = layers.iter().map(|l| l.out_features).sum();
        let mut weight_t = Vec::with_capacity(in_features * out_features);
        for row in 0..in_features {
            for layer in layers {
                weight_t.extend_from_slice(&layer.weight_t[row * layer.out_features..(row + 1) * layer.out_features]);
            }
        }
        let bias = layers.iter().any(|l| l.bias.is_some()).then(|| {
            layers
                .iter()
                .flat_map(|l| l.bias.clone().unwrap_or_else(|| vec![0.0; l.out_features]))
                .collect()
        });
        Ok(PackedLinear {
            weight_t,
            bias,
            in_features,
            out_features,
        })
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// x·Wᵀ + b for `x` of shape `[..., in_features]` (f32, CPU, contiguous); returns `[..., out_features]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with("PackedLinear::forward", x, Epilogue::Bias)
    }

    /// gelu_erf(x·Wᵀ + b) in one pass: BERT's intermediate layer (`intermediate.dense` + `"gelu"`).
    pub fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with("PackedLinear::forward_gelu", x, Epilogue::BiasGelu)
    }

    /// LayerNorm(x·Wᵀ + b + residual) in one pass: BERT's `attention.output` and `output` blocks (dense, then
    /// add & norm). `residual` has the output's shape `[..., out_features]`; `gamma`, `beta` are `[out_features]`.
    pub fn forward_add_layer_norm(
        &self,
        x: &Tensor,
        residual: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        const OP: &str = "PackedLinear::forward_add_layer_norm";
        let n = self.out_features;
        let mut out_dims = x.dims().to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = n;
        }
        if residual.dims() != out_dims.as_slice() {
            return Err(KernelError::Shape {
                op: OP,
                message: format!(
                    "`residual` must have the output's shape {out_dims:?}, got {:?}",
                    residual.dims()
                ),
            });
        }
        for (arg, t) in [("gamma", gamma), ("beta", beta)] {
            if t.dims() != [n] {
                return Err(KernelError::Shape {
                    op: OP,
                    message: format!("`{arg}` must be [{n}] (out_features), got {:?}", t.dims()),
                });
            }
        }
        let residual = CpuF32::borrow(OP, "residual", residual)?;
        let (gamma, beta) = (CpuF32::borrow(OP, "gamma", gamma)?, CpuF32::borrow(OP, "beta", beta)?);
        let residual = residual.contiguous(OP, "residual")?;
        let (gamma, beta) = (gamma.contiguous(OP, "gamma")?, beta.contiguous(OP, "beta")?);
        self.forward_with(OP, x, |bias| {
            Epilogue::BiasResidualNorm(AddNorm {
                bias,
                residual,
                gamma,
                beta,
                eps,
            })
        })
    }

    fn forward_with<'a>(
        &'a self,
        op: &'static str,
        x: &Tensor,
        epilogue: impl FnOnce(Option<&'a [f32]>) -> Epilogue<'a>,
    ) -> Result<Tensor> {
        let k = last_dim(op, "x", x.dims())?;
        if k != self.in_features {
            return Err(KernelError::Shape {
                op,
                message: format!("`x` {:?} must end in in_features = {}", x.dims(), self.in_features),
            });
        }
        let src = CpuF32::borrow(op, "x", x)?;
        let src = src.contiguous(op, "x")?;
        let weight = MatRef {
            ptr: self.weight_t.as_ptr(),
            row_stride: self.out_features,
            col_stride: 1,
        };
        let out = multiply_rows(src, k, weight, self.out_features, epilogue(self.bias.as_deref()));
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("x has a last dimension") = self.out_features;
        cpu_tensor(out, &dims)
    }
}

/// x·Wᵀ + b without packing: `weight` `[out, in]` in any layout (strides are passed to `gemm` as they are), for
/// one-off products. A model that applies the same weight repeatedly should build a [`PackedLinear`] once.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "linear";
    let (n, k) = match weight.dims() {
        &[n, k] => (n, k),
        dims => {
            return Err(KernelError::Shape {
                op: OP,
                message: format!("`weight` must be [out, in], got {dims:?}"),
            })
        }
    };
    if last_dim(OP, "x", x.dims())? != k {
        return Err(KernelError::Shape {
            op: OP,
            message: format!(
                "`x` {:?} must end in the weight's in-dimension {k} (weight {:?})",
                x.dims(),
                weight.dims()
            ),
        });
    }
    if let Some(bias) = bias {
        if bias.dims() != [n] {
            return Err(KernelError::Shape {
                op: OP,
                message: format!("`bias` must be [{n}], got {:?}", bias.dims()),
            });
        }
    }
    let src = CpuF32::borrow(OP, "x", x)?;
    let src = src.contiguous(OP, "x")?;
    let w = CpuF32::borrow(OP, "weight", weight)?;
    let (w_layout, w_buffer) = (w.layout(), w.buffer());
    // rhs[i][j] = weight[j][i]: the weight's column stride walks rhs rows.
    let rhs = MatRef {
        ptr: w_buffer[w_layout.start_offset()..].as_ptr(),
        row_stride: w_layout.stride()[1],
        col_stride: w_layout.stride()[0],
    };
    let bias_guard = bias.map(|b| CpuF32::borrow(OP, "bias", b)).transpose()?;
    let bias = bias_guard.as_ref().map(|b| b.contiguous(OP, "bias")).transpose()?;
    let out = multiply_rows(src, k, rhs, n, Epilogue::Bias(bias));
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("x has a last dimension") = n;
    cpu_tensor(out, &dims)
}

/// What happens to a block of product rows while it is still in cache.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    Bias(Option<&'a [f32]>),
    BiasGelu(Option<&'a [f32]>),
    /// Bias, plus the residual rows (of the whole output), then LayerNorm.
    BiasResidualNorm(AddNorm<'a>),
}

impl Epilogue<'_> {
    /// Finishes `rows`, the output rows starting at row `first_row`.
    fn apply(&self, first_row: usize, rows: &mut [f32]) {
        match *self {
            Epilogue::Bias(None) => {}
            Epilogue::Bias(Some(bias)) => dispatch(AddBias { rows, bias }),
            Epilogue::BiasGelu(bias) => bias_gelu_in_place(rows, bias),
            Epilogue::BiasResidualNorm(add) => {
                let n = add.gamma.len();
                let residual = &add.residual[first_row * n..first_row * n + rows.len()];
                bias_residual_layer_norm_in_place(rows, AddNorm { residual, ..add });
            }
        }
    }
}

/// Below this many multiply-adds a product runs on the calling thread: waking a second one costs more.
const PARALLEL_MIN_WORK: usize = 1 << 20;
/// Row blocks are at most this tall: 256 rows of 1536 outputs (1.5 MB) is about where the block stops fitting in
/// L2 and the epilogue starts to re-read memory; smaller blocks cost `gemm` more per-call overhead.
const MAX_BLOCK_ROWS: usize = 256;
/// And at least this tall, so each `gemm` call has enough rows to amortise its set-up.
const MIN_BLOCK_ROWS: usize = 64;

/// `x` (rows of `k`) times `rhs` (`k × n`), then the epilogue; returns the `rows × n` output, written once.
fn multiply_rows(x: &[f32], k: usize, rhs: MatRef, n: usize, epilogue: Epilogue) -> Vec<f32> {
    let m = x.len() / k;
    let len = m * n;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let threads = rayon::current_num_threads();
    let work = m * n * k;
    let spare = &mut out.spare_capacity_mut()[..len];
    if threads > 1 && work >= PARALLEL_MIN_WORK && m >= threads * MIN_BLOCK_ROWS {
        // Enough rows for every thread: independent row blocks, each with its own fused epilogue.
        let block_rows = (m / (threads * 4)).clamp(MIN_BLOCK_ROWS, MAX_BLOCK_ROWS);
        spare
            .par_chunks_mut(block_rows * n)
            .zip(x.par_chunks(block_rows * k))
            .enumerate()
            .for_each(|(i, (dst, x))| {
                // SAFETY: `dst` is this task's own block of `out`'s capacity, `x.len() / k` rows of `n`.
                let rows = unsafe { multiply_block(x, k, rhs, n, dst) };
                epilogue.apply(i * block_rows, rows);
            });
    } else if threads > 1 && work >= PARALLEL_MIN_WORK {
        // Few rows but a wide product (one long text): let gemm split the columns, then a parallel epilogue.
        let dst = MatMut {
            ptr: spare.as_mut_ptr().cast::<f32>(),
            row_stride: n,
            col_stride: 1,
        };
        // SAFETY: `dst` addresses exactly `out`'s first `len` elements of capacity; `x` is `m × k`; `rhs` is the
        // caller's `k × n` matrix.
        unsafe {
            gemm_parallel(
                m,
                n,
                k,
                dst,
                MatRef {
                    ptr: x.as_ptr(),
                    row_stride: k,
                    col_stride: 1,
                },
                rhs,
            )
        };
        // SAFETY: gemm has written all `len` elements.
        let written = unsafe { std::slice::from_raw_parts_mut(dst.ptr, len) };
        let rows_per_task = (16_384 / n).max(1);
        written
            .par_chunks_mut(rows_per_task * n)
            .enumerate()
            .for_each(|(i, rows)| epilogue.apply(i * rows_per_task, rows));
    } else {
        // SAFETY: `spare` is all of `out`'s first `len` elements of capacity, `m` rows of `n`.
        let rows = unsafe { multiply_block(x, k, rhs, n, spare) };
        epilogue.apply(0, rows);
    }
    // SAFETY: every branch above has written all `len` elements.
    unsafe { out.set_len(len) };
    out
}

/// Writes `x · rhs` into `dst` on the calling thread and returns it as initialised rows.
///
/// # Safety
/// `dst` must hold exactly `x.len() / k` rows of `n` and `rhs` must address a valid `k × n` matrix.
unsafe fn multiply_block<'a>(
    x: &[f32],
    k: usize,
    rhs: MatRef,
    n: usize,
    dst: &'a mut [std::mem::MaybeUninit<f32>],
) -> &'a mut [f32] {
    let rows = x.len() / k;
    let out = MatMut {
        ptr: dst.as_mut_ptr().cast::<f32>(),
        row_stride: n,
        col_stride: 1,
    };
    gemm_serial(
        rows,
        n,
        k,
        out,
        MatRef {
            ptr: x.as_ptr(),
            row_stride: k,
            col_stride: 1,
        },
        rhs,
        1.0,
    );
    std::slice::from_raw_parts_mut(out.ptr, dst.len())
}

struct AddBias<'a> {
    rows: &'a mut [f32],
    bias: &'a [f32],
}

impl Kernel for AddBias<'_> {
    type Output = ();
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        for row in self.rows.chunks_exact_mut(self.bias.len()) {
            for (v, &b) in row.iter_mut().zip(self.bias) {
                *v += b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{exact_layer_norm, max_abs_diff, random};
    use candle_core::D;
    use proptest::prelude::*;

    fn stock(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        let y = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        match b {
            Some(b) => y.broadcast_add(b).unwrap(),
            None => y,
        }
    }

    /// A `[n, k]` weight scaled like a trained one (outputs of order 1 for unit inputs), so that a 1e-5 bound on
    /// the difference means the same thing for every `k`.
    fn weight(n: usize, k: usize, seed: u64) -> Tensor {
        (random(&[n, k], seed) / (k as f64).sqrt()).unwrap()
    }

    #[test]
    fn packed_linear_matches_candle_matmul_on_bert_shapes() {
        // Serial (3 rows), wide-and-short (100 rows: gemm splits columns), and row blocks (4096 rows).
        for (m, k, n) in [
            (3, 384, 384),
            (100, 384, 1536),
            (4096, 384, 384),
            (4096, 1536, 384),
            (300, 384, 1536),
        ] {
            let x = random(&[m, k], 30);
            let w = weight(n, k, 31);
            let b = random(&[n], 32);
            let ours = PackedLinear::new(&w, Some(&b)).unwrap().forward(&x).unwrap();
            let diff = max_abs_diff(&ours, &stock(&x, &w, Some(&b)));
            assert!(diff <= 1e-5, "{m}x{k}@{k}x{n}: max abs diff {diff}");
        }
    }

    #[test]
    fn forward_gelu_matches_candle_matmul_bias_gelu() {
        for m in [5, 200, 1024] {
            let x = random(&[2, m / 2 + 1, 96], 33);
            let w = weight(160, 96, 34);
            let b = random(&[160], 35);
            let ours = PackedLinear::new(&w, Some(&b)).unwrap().forward_gelu(&x).unwrap();
            let expected = stock(&x, &w, Some(&b)).gelu_erf().unwrap();
            assert_eq!(ours.dims(), expected.dims());
            let diff = max_abs_diff(&ours, &expected);
            assert!(diff <= 1e-5, "m {m}: max abs diff {diff}");
        }
    }

    #[test]
    fn forward_add_layer_norm_matches_candle_dense_add_layer_norm() {
        // Serial, wide-and-short and row-block paths, as above.
        for m in [3, 100, 300] {
            let x = random(&[m, 384], 80);
            let w = weight(384, 384, 81);
            let b = random(&[384], 82);
            let residual = random(&[m, 384], 83);
            let (gamma, beta) = (random(&[384], 84), random(&[384], 85));
            let layer = PackedLinear::new(&w, Some(&b)).unwrap();
            let ours = layer
                .forward_add_layer_norm(&x, &residual, &gamma, &beta, 1e-12)
                .unwrap();
            let summed = (stock(&x, &w, Some(&b)) + &residual).unwrap();
            let expected = candle_nn::ops::layer_norm(&summed, &gamma, &beta, 1e-12).unwrap();
            let diff = max_abs_diff(&ours, &expected);
            assert!(diff <= 1e-5, "m {m}: max abs diff {diff}");
        }
        let layer = PackedLinear::new(&weight(6, 4, 86), None).unwrap();
        let x = random(&[2, 3, 4], 87);
        let err = layer.forward_add_layer_norm(&x, &random(&[2, 3, 4], 88), &random(&[6], 89), &random(&[6], 90), 1e-5);
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("`residual` must have the output's shape [2, 3, 6]"));
    }

    #[test]
    fn linear_reads_any_weight_layout() {
        let x = random(&[3, 50, 40], 36);
        let w = weight(70, 40, 37);
        let b = random(&[70], 38);
        let expected = stock(&x, &w, Some(&b));
        let diff = max_abs_diff(&linear(&x, &w, Some(&b)).unwrap(), &expected);
        assert!(diff <= 1e-5, "contiguous weight: max abs diff {diff}");
        // The same weight stored transposed and viewed back: strides (1, 70) instead of (40, 1).
        let w_view = w.t().unwrap().contiguous().unwrap().t().unwrap();
        let diff = max_abs_diff(&linear(&x, &w_view, Some(&b)).unwrap(), &expected);
        assert!(diff <= 1e-5, "transposed weight: max abs diff {diff}");
        let diff = max_abs_diff(&linear(&x, &w, None).unwrap(), &stock(&x, &w, None));
        assert!(diff <= 1e-5, "no bias: max abs diff {diff}");
    }

    #[test]
    fn concat_computes_each_layer_side_by_side() {
        let x = random(&[4, 33, 24], 39);
        let layers: Vec<PackedLinear> = [(16, true), (8, false), (16, true)]
            .iter()
            .enumerate()
            .map(|(i, &(n, has_bias))| {
                let w = weight(n, 24, 40 + i as u64);
                let b = has_bias.then(|| random(&[n], 50 + i as u64));
                PackedLinear::new(&w, b.as_ref()).unwrap()
            })
            .collect();
        let fused = PackedLinear::concat(&layers).unwrap();
        assert_eq!((fused.in_features(), fused.out_features()), (24, 40));
        let out = fused.forward(&x).unwrap();
        let mut start = 0;
        for layer in &layers {
            let part = out
                .narrow(D::Minus1, start, layer.out_features())
                .unwrap()
                .contiguous()
                .unwrap();
            let diff = max_abs_diff(&part, &layer.forward(&x).unwrap());
            assert!(diff <= 1e-6, "columns {start}..: max abs diff {diff}");
            start += layer.out_features();
        }
    }

    #[test]
    fn empty_batches_give_empty_outputs() {
        let layer = PackedLinear::new(&random(&[5, 3], 60), Some(&random(&[5], 61))).unwrap();
        let x = Tensor::zeros((0, 3), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        assert_eq!(layer.forward(&x).unwrap().dims(), &[0, 5]);
    }

    #[test]
    fn shape_errors_name_the_expected_sizes() {
        let layer = PackedLinear::new(&random(&[5, 3], 62), None).unwrap();
        let err = layer.forward(&random(&[2, 4], 63)).unwrap_err().to_string();
        assert!(err.contains("must end in in_features = 3"), "{err}");
        let err = PackedLinear::new(&random(&[5, 3], 62), Some(&random(&[3], 64)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`bias` must be [5]"), "{err}");
        let err = PackedLinear::concat(&[layer.clone(), PackedLinear::new(&random(&[2, 4], 65), None).unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("all layers must read 3 features"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        // At least 8 outputs per row: LayerNorm divides by the spread of a row, so with 2 or 3 outputs that happen
        // to be nearly equal, the last-bit differences between two correct matmuls would be magnified beyond 1e-5.
        #[test]
        fn forward_add_layer_norm_matches_candle_for_any_shape(
            m in 1usize..300, k in 1usize..100, n in 8usize..100, seed in 0u64..1000
        ) {
            let x = random(&[m, k], seed);
            let w = weight(n, k, seed + 1);
            let residual = random(&[m, n], seed + 2);
            let (gamma, beta) = (random(&[n], seed + 3), random(&[n], seed + 4));
            let layer = PackedLinear::new(&w, None).unwrap();
            let ours = layer.forward_add_layer_norm(&x, &residual, &gamma, &beta, 1e-5).unwrap();
            let summed = (stock(&x, &w, None) + &residual).unwrap();
            let diff = max_abs_diff(&ours, &exact_layer_norm(&summed, &gamma, &beta, 1e-5));
            prop_assert!(diff <= 1e-5, "max abs diff {}", diff);
        }

        #[test]
        fn packed_linear_matches_candle_for_any_shape(
            m in 1usize..400, k in 1usize..130, n in 1usize..130, with_bias: bool, seed in 0u64..1000
        ) {
            let x = random(&[m, k], seed);
            let w = weight(n, k, seed + 1);
            let b = with_bias.then(|| random(&[n], seed + 2));
            let ours = PackedLinear::new(&w, b.as_ref()).unwrap().forward(&x).unwrap();
            let diff = max_abs_diff(&ours, &stock(&x, &w, b.as_ref()));
            prop_assert!(diff <= 1e-5, "max abs diff {}", diff);
        }
    }
}
