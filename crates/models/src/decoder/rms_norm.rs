//! RMSNorm, `x / √(mean(x²) + ε) · w` over the last dimension, as one op with its backward pass.
//!
//! Written out with candle's ops it is five (square, mean, add, square root, divide) before the scaling, and a
//! training graph keeps two activation-sized tensors of them per norm until the backward pass. This op keeps its
//! input only; the backward pass recomputes the per-row `1/√(mean(x²) + ε)`.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// `x / √(mean(x²) + ε) · weight` for `x: [..., n]` and `weight: [n]` (f32, on the CPU).
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(weight, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = x_layout.shape().dims().last().copied().unwrap_or(0);
        let x = super::contiguous_f32(x, x_layout, "rms-norm", "x")?;
        let w = super::contiguous_f32(w, w_layout, "rms-norm", "weight")?;
        if w.len() != n || n == 0 {
            candle_core::bail!(
                "rms-norm: x is {:?} but the weight has {} values",
                x_layout.shape(),
                w.len()
            );
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(out, x)| {
            let mean_square = x.iter().map(|v| v * v).sum::<f32>() / n as f32;
            let inverse = 1.0 / (mean_square + self.eps).sqrt();
            for ((out, x), w) in out.iter_mut().zip(x).zip(w) {
                *out = x * inverse * w;
            }
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (needs_x, needs_w) = (x.track_op(), w.track_op());
        // Detached: a gradient must not carry a graph (see ARCHITECTURE's invariants).
        let (x, w) = (x.detach(), w.detach());
        let n = x.dim(D::Minus1)?;
        let inverse = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps as f64)?.sqrt()?.recip()?;
        let grad_x = if needs_x {
            // With h = ∂y ⊙ w and r = 1/√(mean(x²) + ε): ∂x = r·h − x · r³ · Σ(h ⊙ x) / n.
            let h = grad.broadcast_mul(&w)?;
            let dot = (&h * &x)?.sum_keepdim(D::Minus1)?;
            let correction = ((inverse.powf(3.0)? * dot)? / n as f64)?;
            Some((h.broadcast_mul(&inverse)? - x.broadcast_mul(&correction)?)?)
        } else {
            None
        };
        let grad_w = if needs_w {
            let normed = x.broadcast_mul(&inverse)?;
            Some((grad * normed)?.reshape(((), n))?.sum(0)?)
        } else {
            None
        };
        Ok((grad_x, grad_w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::max_abs_diff as max_diff;
    use candle_core::{Device, Var};

    #[test]
    fn matches_the_composed_norm_and_its_gradients() {
        let device = Device::Cpu;
        let x = Var::randn(0f32, 2.0, (2, 3, 8), &device).unwrap();
        let w = Var::randn(1f32, 0.3, 8, &device).unwrap();
        let upstream = Tensor::randn(0f32, 1.0, (2, 3, 8), &device).unwrap();
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        let mean_square = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let composed = x
            .broadcast_div(&(mean_square + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&w)
            .unwrap();
        assert!(max_diff(&fused, &composed) < 1e-5);
        let fused_grads = (fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let composed_grads = (composed * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        for var in [&x, &w] {
            let diff = max_diff(fused_grads.get(var).unwrap(), composed_grads.get(var).unwrap());
            assert!(diff < 1e-4, "{diff}");
        }
    }

    #[test]
    fn a_frozen_weight_gets_no_gradient() {
        let x = Var::randn(0f32, 1.0, (4, 8), &Device::Cpu).unwrap();
        let w = Tensor::ones(8, candle_core::DType::F32, &Device::Cpu).unwrap();
        let grads = rms_norm(x.as_tensor(), &w, 1e-6)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(&x).is_some());
        assert!(grads.get(&w).is_none());
    }
}
