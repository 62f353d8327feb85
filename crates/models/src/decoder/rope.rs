//! Rotary position embeddings (RoPE, rotate-half layout, as transformers' Llama) as one op with its backward pass.
//!
//! Each feature pair `(i, i + d/2)` of a query or key at position `t` is rotated by the angle `t · inv_freq[i]`.
//! Written with candle's ops (two concatenations, a negation, two products and a sum) a training graph keeps about
//! five activation-sized tensors per call; this op keeps none but its input. A rotation's gradient is the inverse
//! rotation, so the backward pass is the same op with the angle negated.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Rotates `x: [batch, heads, seq, d]` (f32, contiguous, on the CPU) by the angles whose cosines and sines are
/// `cos, sin: [seq, d/2]`.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Rope {
        cos: cos.contiguous()?,
        sin: sin.contiguous()?,
        inverse: false,
    })
}

#[derive(Clone)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
    /// Rotate by the negated angles (the backward pass).
    inverse: bool,
}

fn table(tensor: &Tensor) -> Result<Vec<f32>> {
    let (storage, layout) = tensor.storage_and_layout();
    match &*storage {
        Storage::Cpu(storage) => Ok(super::contiguous_f32(storage, layout, "rope", "cos/sin")?.to_vec()),
        _ => candle_core::bail!("rope: the cos/sin tables are not on the CPU"),
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, _, seq, dim) = layout.shape().dims4()?;
        let half = dim / 2;
        let x = super::contiguous_f32(storage, layout, "rope", "x")?;
        let (cos, sin) = (table(&self.cos)?, table(&self.sin)?);
        if dim % 2 != 0 || cos.len() != seq * half || sin.len() != seq * half {
            candle_core::bail!(
                "rope: x is {:?} but the tables are {:?} and {:?}",
                layout.shape().dims(),
                self.cos.dims(),
                self.sin.dims()
            );
        }
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(dim)
            .zip(x.par_chunks(dim))
            .enumerate()
            .for_each(|(row, (out, x))| {
                let position = row % seq;
                let (cos, sin) = (&cos[position * half..][..half], &sin[position * half..][..half]);
                let (x_low, x_high) = x.split_at(half);
                let (out_low, out_high) = out.split_at_mut(half);
                for i in 0..half {
                    let sin = sign * sin[i];
                    out_low[i] = x_low[i] * cos[i] - x_high[i] * sin;
                    out_high[i] = x_high[i] * cos[i] + x_low[i] * sin;
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _rotated: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let inverse = Rope {
            inverse: !self.inverse,
            ..self.clone()
        };
        Ok(Some(grad.contiguous()?.apply_op1(inverse)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::max_abs_diff as max_diff;
    use candle_core::{Device, Var, D};

    /// transformers' formula: `x · cos + rotate_half(x) · sin`, with the tables repeated over both halves.
    fn reference(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let half = x.dim(D::Minus1).unwrap() / 2;
        let cos = Tensor::cat(&[cos, cos], D::Minus1).unwrap();
        let sin = Tensor::cat(&[sin, sin], D::Minus1).unwrap();
        let high = x.narrow(D::Minus1, half, half).unwrap();
        let rotated = Tensor::cat(
            &[&high.neg().unwrap(), &x.narrow(D::Minus1, 0, half).unwrap()],
            D::Minus1,
        )
        .unwrap();
        (x.broadcast_mul(&cos).unwrap() + rotated.broadcast_mul(&sin).unwrap()).unwrap()
    }

    #[test]
    fn matches_rotate_half_and_its_gradient() {
        let device = Device::Cpu;
        let angles = Tensor::randn(0f32, 2.0, (5, 4), &device).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let x = Var::randn(0f32, 1.0, (2, 3, 5, 8), &device).unwrap();
        let upstream = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &device).unwrap();
        let fused = rope(x.as_tensor(), &cos, &sin).unwrap();
        let plain = reference(x.as_tensor(), &cos, &sin);
        assert!(max_diff(&fused, &plain) < 1e-6);
        assert!(max_diff(&candle_nn::rotary_emb::rope(x.as_tensor(), &cos, &sin).unwrap(), &fused) < 1e-6);

        let fused_grads = (fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let plain_grads = (plain * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(fused_grads.get(&x).unwrap(), plain_grads.get(&x).unwrap()) < 1e-5);
    }

    #[test]
    fn tables_that_do_not_fit_are_an_error() {
        let x = Tensor::zeros((1, 1, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let table = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(rope(&x, &table, &table).is_err());
    }
}
