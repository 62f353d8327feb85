//! GELU with the exact error function — BERT's `"gelu"` activation (`hidden_act` in its config).

use std::mem::MaybeUninit;

use candle_core::Tensor;

use crate::error::{KernelError, Result};
use crate::simd::{dispatch, erf, fmadd, map_in_place, map_into, Kernel};
use crate::tensors::{assume_init, cpu_tensor, for_each_row_block, last_dim, output_buffer, CpuF32};

/// GELU(x) = x · Φ(x) = ½·x·(1 + erf(x/√2)), element-wise, for f32 CPU tensors of any shape.
///
/// Matches `candle_core::Tensor::gelu_erf` and PyTorch's `F.gelu(x)` (approximate="none") to about 1e−6 absolute —
/// not the tanh approximation (`Tensor::gelu`, HF's `"gelu_new"`). Large tensors are split across rayon's threads.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "gelu_erf";
    let src = CpuF32::borrow(OP, "x", x)?;
    let src = src.contiguous(OP, "x")?;
    let row_len = x.dims().last().copied().unwrap_or(1).max(1);
    // SAFETY: the row blocks cover the whole buffer and GeluInto writes every element of its block.
    let dst = unsafe {
        output_buffer(src.len(), |dst| {
            for_each_row_block(src, dst, row_len, |_, src, dst| {
                dispatch(GeluInto { src, bias: None, dst })
            })
        })
    };
    cpu_tensor(dst, x.dims())
}

/// GELU(x + bias) in one pass, `bias` (shape `[n]`) added to every row of `x` (shape `[..., n]`).
///
/// The epilogue of BERT's intermediate dense layer when the matmul itself does not add the bias
/// ([`crate::PackedLinear::forward_gelu`] fuses all three).
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    const OP: &str = "bias_gelu";
    let n = last_dim(OP, "x", x.dims())?;
    if bias.dims() != [n] {
        return Err(KernelError::Shape {
            op: OP,
            message: format!(
                "`bias` must have shape [{n}] to match the last dimension of `x` {:?}, got {:?}",
                x.dims(),
                bias.dims()
            ),
        });
    }
    let src = CpuF32::borrow(OP, "x", x)?;
    let src = src.contiguous(OP, "x")?;
    let bias = CpuF32::borrow(OP, "bias", bias)?;
    let bias = bias.contiguous(OP, "bias")?;
    // SAFETY: the row blocks cover the whole buffer and GeluInto writes every element of its block.
    let dst = unsafe {
        output_buffer(src.len(), |dst| {
            for_each_row_block(src, dst, n, |_, src, dst| {
                dispatch(GeluInto {
                    src,
                    bias: Some(bias),
                    dst,
                })
            })
        })
    };
    cpu_tensor(dst, x.dims())
}

/// Replaces each value v of `rows` (rows of `bias.len()` values, if a bias is given) with GELU(v + bias),
/// on the calling thread: the epilogue for a block of matmul output that is still in cache.
pub(crate) fn bias_gelu_in_place(rows: &mut [f32], bias: Option<&[f32]>) {
    dispatch(GeluInPlace { values: rows, bias });
}

#[inline(always)]
fn gelu<const FMA: bool>(x: f32) -> f32 {
    let half_x = 0.5 * x;
    fmadd::<FMA>(half_x, erf::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2), half_x)
}

/// GELU(src + bias) into `dst`, writing every element.
struct GeluInto<'a> {
    src: &'a [f32],
    bias: Option<&'a [f32]>,
    dst: &'a mut [MaybeUninit<f32>],
}

impl Kernel for GeluInto<'_> {
    type Output = ();
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        match self.bias {
            None => map_into(self.src, self.dst, gelu::<FMA>),
            Some(bias) => {
                for (dst, src) in self
                    .dst
                    .chunks_exact_mut(bias.len())
                    .zip(self.src.chunks_exact(bias.len()))
                {
                    for ((d, &s), &b) in dst.iter_mut().zip(src).zip(bias) {
                        d.write(s + b);
                    }
                    // SAFETY: the loop above wrote the whole row.
                    map_in_place(unsafe { assume_init(dst) }, gelu::<FMA>);
                }
            }
        }
    }
}

struct GeluInPlace<'a> {
    values: &'a mut [f32],
    bias: Option<&'a [f32]>,
}

impl Kernel for GeluInPlace<'_> {
    type Output = ();
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        match self.bias {
            None => map_in_place(self.values, gelu::<FMA>),
            Some(bias) => {
                for row in self.values.chunks_exact_mut(bias.len()) {
                    for (v, &b) in row.iter_mut().zip(bias) {
                        *v += b;
                    }
                    map_in_place(row, gelu::<FMA>);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{dispatch_on, Isa};
    use crate::test_support::{max_abs_diff, random, written, zeroed};
    use proptest::prelude::*;

    #[test]
    fn gelu_erf_matches_candle_on_bert_intermediate_shape_and_odd_sizes() {
        for dims in [vec![4, 128, 1536], vec![3, 7, 13], vec![1], vec![5, 1], vec![17, 33]] {
            let x = (random(&dims, 1) * 4.0).unwrap();
            let ours = gelu_erf(&x).unwrap();
            let stock = x.gelu_erf().unwrap();
            assert_eq!(ours.dims(), x.dims());
            let diff = max_abs_diff(&ours, &stock);
            assert!(diff <= 1e-5, "{dims:?}: max abs diff {diff}");
        }
    }

    #[test]
    fn gelu_erf_is_accurate_over_the_whole_range_on_every_isa() {
        let xs: Vec<f32> = (0..=40_000).map(|i| -20.0 + i as f32 * 1e-3).collect();
        for &isa in Isa::supported() {
            let mut buffer = zeroed(xs.len());
            dispatch_on(
                isa,
                GeluInto {
                    src: &xs,
                    bias: None,
                    dst: &mut buffer,
                },
            );
            for (&x, &y) in xs.iter().zip(&written(&buffer)) {
                let x64 = x as f64;
                let exact = 0.5 * x64 * (1.0 + candle_core::cpu::erf::erf_f64(x64 / std::f64::consts::SQRT_2));
                assert!(
                    (y as f64 - exact).abs() <= 2e-6 * x64.abs().max(1e-3),
                    "{isa:?}: gelu({x}) = {y}, exact {exact}"
                );
            }
        }
    }

    #[test]
    fn extreme_inputs_behave_like_candle() {
        let values = vec![f32::NAN, 1e30, -1e30, 10.0, -10.0, 0.0, -0.0, 1e-30];
        let x = Tensor::from_vec(values.clone(), values.len(), &candle_core::Device::Cpu).unwrap();
        let ours = gelu_erf(&x).unwrap().to_vec1::<f32>().unwrap();
        let stock = x.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        assert!(ours[0].is_nan(), "{ours:?}");
        for (i, (a, b)) in ours.iter().zip(&stock).enumerate().skip(1) {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "gelu({}) = {a}, candle {b}",
                values[i]
            );
        }
    }

    #[test]
    fn bias_gelu_equals_gelu_of_the_broadcast_sum() {
        for dims in [vec![2, 64, 1536], vec![9, 5], vec![3, 2, 17]] {
            let x = random(&dims, 2);
            let bias = random(&dims[dims.len() - 1..], 3);
            let ours = bias_gelu(&x, &bias).unwrap();
            let stock = x.broadcast_add(&bias).unwrap().gelu_erf().unwrap();
            let diff = max_abs_diff(&ours, &stock);
            assert!(diff <= 1e-5, "{dims:?}: max abs diff {diff}");
        }
    }

    #[test]
    fn bias_gelu_in_place_matches_bias_gelu() {
        let x = random(&[6, 19], 4);
        let bias = random(&[19], 5);
        let mut values = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        bias_gelu_in_place(&mut values, Some(&bias.to_vec1::<f32>().unwrap()));
        let expected = bias_gelu(&x, &bias)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(values, expected);
    }

    #[test]
    fn bad_inputs_are_errors_that_say_what_to_do() {
        let x = random(&[4, 8], 6);
        let wrong_bias = random(&[7], 7);
        let err = bias_gelu(&x, &wrong_bias).unwrap_err().to_string();
        assert!(err.contains("`bias` must have shape [8]"), "{err}");

        let f64_x = x.to_dtype(candle_core::DType::F64).unwrap();
        let err = gelu_erf(&f64_x).unwrap_err().to_string();
        assert!(err.contains("expected f32") && err.contains("to_dtype"), "{err}");

        let transposed = x.t().unwrap();
        let err = gelu_erf(&transposed).unwrap_err().to_string();
        assert!(err.contains(".contiguous()"), "{err}");
    }

    #[test]
    fn works_on_a_narrowed_contiguous_view() {
        let x = random(&[10, 16], 8);
        let view = x.narrow(0, 3, 4).unwrap();
        let diff = max_abs_diff(&gelu_erf(&view).unwrap(), &view.gelu_erf().unwrap());
        assert!(diff <= 1e-5, "max abs diff {diff}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn gelu_erf_matches_candle_for_any_shape(rows in 1usize..70, cols in 1usize..300, seed in 0u64..1000) {
            let x = (random(&[rows, cols], seed) * 3.0).unwrap();
            let diff = max_abs_diff(&gelu_erf(&x).unwrap(), &x.gelu_erf().unwrap());
            prop_assert!(diff <= 1e-5, "max abs diff {}", diff);
        }

        #[test]
        fn bias_gelu_matches_candle_for_any_shape(rows in 1usize..70, cols in 1usize..300, seed in 0u64..1000) {
            let x = random(&[rows, cols], seed);
            let bias = random(&[cols], seed + 1);
            let stock = x.broadcast_add(&bias).unwrap().gelu_erf().unwrap();
            let diff = max_abs_diff(&bias_gelu(&x, &bias).unwrap(), &stock);
            prop_assert!(diff <= 1e-5, "max abs diff {}", diff);
        }
    }
}
