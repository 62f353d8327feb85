//! Deterministic random tensors for the tests (candle's `randn` cannot be seeded).

use std::mem::MaybeUninit;

use candle_core::{DType, Device, Tensor};

/// A tensor of roughly standard-normal values (sum of four uniforms, rescaled), reproducible from `seed`.
pub(crate) fn random(dims: &[usize], seed: u64) -> Tensor {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    let count = dims.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| (uniform() + uniform() + uniform() + uniform() - 2.0) * 1.732)
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu).expect("element count matches dims")
}

/// Largest absolute element-wise difference between two tensors of the same shape (∞ where only one is NaN).
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("f32 tensor");
    let b = b.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("f32 tensor");
    a.iter()
        .zip(&b)
        .map(|(x, y)| {
            if x.is_nan() != y.is_nan() {
                f32::INFINITY
            } else if x.is_nan() {
                0.0
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max)
}

/// LayerNorm by candle's two-pass `layer_norm_slow`, in f64. candle's fast f32 `layer_norm` computes the variance
/// as E[x²] − E[x]², which loses most of its digits on nearly constant rows (proptest finds such rows when the last
/// dimension is 2 or 3), so property tests compare against this exact reference instead.
pub(crate) fn exact_layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Tensor {
    let f64 = |t: &Tensor| t.to_dtype(DType::F64).expect("f32 to f64");
    candle_nn::ops::layer_norm_slow(&f64(x), &f64(gamma), &f64(beta), eps)
        .and_then(|t| t.to_dtype(DType::F32))
        .expect("layer_norm_slow on matching shapes")
}

/// An output buffer for calling a kernel directly, initialised (to zeros) so that [`written`] may read it whatever
/// the kernel did.
pub(crate) fn zeroed(len: usize) -> Vec<MaybeUninit<f32>> {
    vec![MaybeUninit::new(0.0); len]
}

/// The values in a buffer made by [`zeroed`].
pub(crate) fn written(buffer: &[MaybeUninit<f32>]) -> Vec<f32> {
    // SAFETY: `zeroed` initialised every element, and kernels only ever write initialised values.
    buffer.iter().map(|v| unsafe { v.assume_init() }).collect()
}
