//! Fast CPU kernels for candle: the ops of a BERT encoder, fused where BERT allows it.
//!
//! Every function takes and returns candle [`Tensor`](candle_core::Tensor)s — f32, on the CPU — and reads its
//! inputs in place (no copy): the only buffer written is the output, once. Work is split across rayon's global
//! thread pool when it is large enough to pay for it. Inner loops are compiled for AVX-512, AVX2+FMA and the
//! baseline target, and the best one for the CPU runs ([`Isa::detect`]).
//!
//! Results match candle's stock ops to ≤ 1e−5 absolute on BERT-sized inputs (the tests check each kernel against
//! them); these are inference kernels, so their outputs carry no gradient.
//!
//! # What a BERT encoder layer should call
//!
//! With `h` the layer input `[batch, seq, hidden]` and `mask` the additive padding mask `[batch, seq]`
//! (0 for tokens, `f32::MIN` for padding), and weights packed once at load:
//!
//! ```
//! # use candle_core::{Device, Tensor, D};
//! # use knowhow_kernels::{attention, PackedLinear};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (hidden, heads, inter, eps) = (8, 2, 16, 1e-12);
//! # let w = |o: usize, i: usize| Tensor::randn(0f32, 0.3, (o, i), &Device::Cpu);
//! # let v = |n: usize| Tensor::randn(0f32, 1.0, n, &Device::Cpu);
//! # let [w_q, w_k, w_v, w_o] = [0; 4].map(|_| w(hidden, hidden));
//! # let (w_q, w_k, w_v, w_o, w_up, w_down) = (w_q?, w_k?, w_v?, w_o?, w(inter, hidden)?, w(hidden, inter)?);
//! # let (b_q, b_k, b_v, b_o, b_up, b_down) = (v(hidden)?, v(hidden)?, v(hidden)?, v(hidden)?, v(inter)?, v(hidden)?);
//! # let (ln1_g, ln1_b, ln2_g, ln2_b) = (v(hidden)?, v(hidden)?, v(hidden)?, v(hidden)?);
//! # let h = Tensor::randn(0f32, 1.0, (2, 5, hidden), &Device::Cpu)?;
//! # let mask = Tensor::zeros((2, 5), candle_core::DType::F32, &Device::Cpu)?;
//! // At load: one [hidden, 3·hidden] projection for query, key and value.
//! let qkv = PackedLinear::concat(&[
//!     PackedLinear::new(&w_q, Some(&b_q))?,
//!     PackedLinear::new(&w_k, Some(&b_k))?,
//!     PackedLinear::new(&w_v, Some(&b_v))?,
//! ])?;
//! let output = PackedLinear::new(&w_o, Some(&b_o))?; // attention.output.dense
//! let up = PackedLinear::new(&w_up, Some(&b_up))?; // intermediate.dense
//! let down = PackedLinear::new(&w_down, Some(&b_down))?; // output.dense
//!
//! // Per layer:
//! let projected = qkv.forward(&h)?; // [batch, seq, 3·hidden]
//! let part = |i: usize| projected.narrow(D::Minus1, i * hidden, hidden);
//! let context = attention(&part(0)?, &part(1)?, &part(2)?, heads, Some(&mask))?;
//! let h1 = output.forward_add_layer_norm(&context, &h, &ln1_g, &ln1_b, eps)?;
//! let activated = up.forward_gelu(&h1)?;
//! let h2 = down.forward_add_layer_norm(&activated, &h1, &ln2_g, &ln2_b, eps)?;
//! # assert_eq!(h2.dims(), h.dims());
//! # Ok(()) }
//! ```
//!
//! On Linux with glibc, the binary should also call [`keep_freed_memory_for_reuse`] once at startup: without it,
//! malloc may return the layers' large temporaries to the kernel and page-fault them back in, which cost 20% of a
//! layer's time in the benchmark.
//!
//! The embeddings' LayerNorm (after adding word, position and token-type embeddings) is [`layer_norm`] or, with
//! the sum of two of them as `x` and the third as `residual`, [`add_layer_norm`]. The unfused [`gelu_erf`],
//! [`bias_gelu`], [`softmax_last_dim`], [`masked_softmax`] and [`linear`] are there for models with other shapes.

mod attention;
mod error;
mod gelu;
mod linear;
mod matmul;
mod memory;
mod norm;
mod simd;
mod softmax;
mod tensors;
#[cfg(test)]
mod test_support;

pub use attention::attention;
pub use error::{KernelError, Result};
pub use gelu::{bias_gelu, gelu_erf};
pub use linear::{linear, PackedLinear};
pub use memory::keep_freed_memory_for_reuse;
pub use norm::{add_layer_norm, layer_norm};
pub use simd::Isa;
pub use softmax::{masked_softmax, softmax_last_dim};
