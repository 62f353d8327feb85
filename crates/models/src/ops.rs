//! The numeric operations of the encoders, one function each.
//!
//! The model code calls only these for its arithmetic, so a faster kernel (fused, vectorised) can replace any one of
//! them here without touching the model. They are stock candle for now. Inputs are f32 tensors on the CPU; row-wise
//! operations work along the last dimension.

use candle_core::{Result, Tensor};
use candle_nn::{LayerNorm, Linear, Module};

/// `x · Wᵀ + b` for `x` of shape `[tokens, in]` and a weight of shape `[out, in]`.
pub fn linear(x: &Tensor, layer: &Linear) -> Result<Tensor> {
    layer.forward(x)
}

/// Batched matrix product `a · b` over a leading batch dimension (attention heads). The inputs may be strided views
/// (a head's slice of the fused query/key/value projection): the matmul reads them in place.
pub fn batched_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.matmul(b)
}

/// `softmax(scores · scale)` along the last dimension: attention probabilities from raw query-key scores.
pub fn scaled_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
    candle_nn::ops::softmax_last_dim(&(scores * scale)?)
}

/// GELU with the exact error function, `x · Φ(x)`: Hugging Face's `"gelu"`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// GELU with the tanh approximation: Hugging Face's `"gelu_new"` and `"gelu_pytorch_tanh"`.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.relu()
}

/// Layer normalisation of each row.
pub fn layer_norm(x: &Tensor, norm: &LayerNorm) -> Result<Tensor> {
    norm.forward(x)
}

/// `LayerNorm(x + residual)`: BERT's post-norm residual connection (a candidate for one fused pass).
pub fn add_layer_norm(x: &Tensor, residual: &Tensor, norm: &LayerNorm) -> Result<Tensor> {
    layer_norm(&(x + residual)?, norm)
}

/// Element-wise `tanh`, used by the classification heads.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    x.tanh()
}
