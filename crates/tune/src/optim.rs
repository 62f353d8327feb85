//! AdamW, step for step the same arithmetic as `torch.optim.AdamW` (single-tensor path, `amsgrad=False`).
//!
//! Per parameter `p` with gradient `g`, at its own step `t` (counted per parameter, as torch does, so a parameter
//! that got no gradient is left alone, weight decay included):
//!
//! ```text
//! p ← p · (1 − lr·λ)                              decoupled weight decay
//! m ← m + (1 − β₁)(g − m)                         torch's lerp
//! v ← β₂·v + (1 − β₂)·g²
//! p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! Moments are kept in f32 whatever the parameter dtype. The state (per-parameter step, `exp_avg`, `exp_avg_sq`)
//! saves to and loads from one safetensors file keyed by the parameter names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

/// The hyper-parameters of AdamW except the learning rate, which the schedule gives each step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// torch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("optimizer: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: optimizer state has no tensor `{key}`; was it saved for the same trainable parameters?")]
    MissingState { path: PathBuf, key: String },
    #[error("{path}: optimizer state `{key}` has shape {found:?}, the parameter has {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("optimizer step: {given} gradients for {expected} parameters")]
    GradientCount { given: usize, expected: usize },
}

struct ParamState {
    name: String,
    var: Var,
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW over a fixed list of named `Var`s.
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<ParamState>,
}

impl AdamW {
    /// Zero moments for every parameter, on the parameter's device.
    pub fn new(params: &[(String, Var)], config: AdamWConfig) -> Result<Self, OptimError> {
        let params = params
            .iter()
            .map(|(name, var)| {
                let zeros = Tensor::zeros(var.shape(), DType::F32, var.device())?;
                Ok(ParamState {
                    name: name.clone(),
                    var: var.clone(),
                    step: 0,
                    exp_avg: zeros.clone(),
                    exp_avg_sq: zeros,
                })
            })
            .collect::<Result<Vec<_>, OptimError>>()?;
        Ok(Self { config, params })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The step count of each parameter, in the order given to [`AdamW::new`].
    pub fn steps(&self) -> Vec<u64> {
        self.params.iter().map(|p| p.step).collect()
    }

    /// One update with learning rate `lr`. `grads[i]` belongs to the i-th parameter; `None` skips it entirely.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<(), OptimError> {
        if grads.len() != self.params.len() {
            return Err(OptimError::GradientCount {
                given: grads.len(),
                expected: self.params.len(),
            });
        }
        let (beta1, beta2) = self.config.betas;
        let (eps, weight_decay) = (self.config.eps, self.config.weight_decay);
        for (state, grad) in self.params.iter_mut().zip(grads) {
            let Some(grad) = grad else { continue };
            let grad = grad.to_dtype(DType::F32)?;
            state.step += 1;
            let mut param = state.var.as_detached_tensor().to_dtype(DType::F32)?;
            if weight_decay != 0.0 {
                param = param.affine(1.0 - lr * weight_decay, 0.0)?;
            }
            // torch: exp_avg.lerp_(grad, 1 - beta1), which for a weight below 0.5 is m + w·(g − m).
            state.exp_avg = (&state.exp_avg + (grad.sub(&state.exp_avg)?.affine(1.0 - beta1, 0.0))?)?;
            // torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2), evaluated as (value·g)·g.
            state.exp_avg_sq = (state.exp_avg_sq.affine(beta2, 0.0)? + grad.affine(1.0 - beta2, 0.0)?.mul(&grad)?)?;
            let bias_correction1 = 1.0 - beta1.powf(state.step as f64);
            let bias_correction2_sqrt = (1.0 - beta2.powf(state.step as f64)).sqrt();
            let step_size = lr / bias_correction1;
            let divisor = Tensor::new(bias_correction2_sqrt as f32, param.device())?;
            let denom = state.exp_avg_sq.sqrt()?.broadcast_div(&divisor)?.affine(1.0, eps)?;
            let update = state.exp_avg.div(&denom)?.affine(-step_size, 0.0)?;
            state.var.set(&(param + update)?.to_dtype(state.var.dtype())?)?;
        }
        Ok(())
    }

    /// The state as tensors: `NAME.exp_avg`, `NAME.exp_avg_sq` (f32) and `NAME.step` (i64 scalar).
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>, OptimError> {
        let mut tensors = HashMap::new();
        for state in &self.params {
            tensors.insert(format!("{}.exp_avg", state.name), state.exp_avg.clone());
            tensors.insert(format!("{}.exp_avg_sq", state.name), state.exp_avg_sq.clone());
            let step = Tensor::new(state.step as i64, state.exp_avg.device())?;
            tensors.insert(format!("{}.step", state.name), step);
        }
        Ok(tensors)
    }

    /// Writes [`AdamW::state_tensors`] to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        candle_core::safetensors::save(&self.state_tensors()?, path)?;
        Ok(())
    }

    /// Replaces the state with the one saved at `path`; every parameter must be there, with its shape.
    pub fn load(&mut self, path: &Path) -> Result<(), OptimError> {
        let saved = candle_core::safetensors::load(path, &candle_core::Device::Cpu)?;
        let take = |key: String| -> Result<&Tensor, OptimError> {
            saved.get(&key).ok_or_else(|| OptimError::MissingState {
                path: path.to_path_buf(),
                key,
            })
        };
        for state in &mut self.params {
            let step = take(format!("{}.step", state.name))?
                .to_dtype(DType::I64)?
                .to_scalar::<i64>()?;
            let moment = |suffix: &str| -> Result<Tensor, OptimError> {
                let key = format!("{}.{suffix}", state.name);
                let tensor = take(key.clone())?;
                if tensor.dims() != state.var.dims() {
                    return Err(OptimError::ShapeMismatch {
                        path: path.to_path_buf(),
                        key,
                        expected: state.var.dims().to_vec(),
                        found: tensor.dims().to_vec(),
                    });
                }
                Ok(tensor.to_dtype(DType::F32)?.to_device(state.var.device())?)
            };
            let (exp_avg, exp_avg_sq) = (moment("exp_avg")?, moment("exp_avg_sq")?);
            state.exp_avg = exp_avg;
            state.exp_avg_sq = exp_avg_sq;
            state.step = step.max(0) as u64;
        }
        Ok(())
    }
}
