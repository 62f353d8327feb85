//! The numeric operations of the encoders, one function or type each.
//!
//! The model code calls only these for its arithmetic. Linear layers, attention and LayerNorm are knowhow-kernels'
//! fused, vectorised kernels (one pass for bias + GELU, for bias + residual + LayerNorm, for a head's whole
//! attention), which take CPU tensors only and refuse others with an error, so the encoders load onto the CPU;
//! tanh-GELU, ReLU and tanh are candle's own ops. Inputs are f32; row-wise operations work along the last
//! dimension.

use candle_core::{Result, Tensor};
use knowhow_kernels::PackedLinear;

/// A linear layer `x · Wᵀ + b`, its weight packed once at load for the CPU matmul, with fused epilogues.
pub struct Dense {
    packed: PackedLinear,
}

/// A LayerNorm's parameters.
pub struct Norm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub eps: f32,
}

impl Dense {
    /// From a `[out, in]` weight and an optional `[out]` bias.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        Ok(Dense {
            packed: PackedLinear::new(weight, bias)?,
        })
    }

    /// `x · Wᵀ + b` for `x` of shape `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.packed.forward(x)?)
    }

    /// `gelu_erf(x · Wᵀ + b)` in one pass (BERT's intermediate layer).
    pub fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.packed.forward_gelu(x)?)
    }

    /// `LayerNorm(x · Wᵀ + b + residual)` in one pass: BERT's post-norm residual blocks.
    pub fn forward_add_layer_norm(&self, x: &Tensor, residual: &Tensor, norm: &Norm) -> Result<Tensor> {
        Ok(self
            .packed
            .forward_add_layer_norm(x, residual, &norm.gamma, &norm.beta, norm.eps)?)
    }
}

/// `softmax(Q·Kᵀ/√d)·V` per head for one sequence: `q`, `k`, `v` are `[positions, hidden]` views (unit stride in
/// the last dimension), heads are consecutive column groups; returns `[positions, hidden]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let context = knowhow_kernels::attention(&q.unsqueeze(0)?, &k.unsqueeze(0)?, &v.unsqueeze(0)?, heads, None)?;
    context.squeeze(0)
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
pub fn layer_norm(x: &Tensor, norm: &Norm) -> Result<Tensor> {
    Ok(knowhow_kernels::layer_norm(x, &norm.gamma, &norm.beta, norm.eps)?)
}

/// Element-wise `tanh`, used by the classification heads.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    x.tanh()
}
