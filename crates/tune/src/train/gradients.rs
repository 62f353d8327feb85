//! The arithmetic of one step, as torch does it: gradients accumulated over micro-batches weighted by their
//! tokens, the global gradient norm and its clipping, and the validation loss.

use candle_core::{DType, Tensor, Var};

use super::{LossFn, TrainError};

/// The gradients of one optimizer step, one slot per parameter (`None`: the loss does not depend on it).
pub struct AccumulatedStep {
    pub grads: Vec<Option<Tensor>>,
    /// The mean loss over all the tokens of the micro-batches.
    pub loss: f64,
    pub tokens: usize,
}

/// Forward and backward over `micro_batches`, one at a time, summing the gradients of `params`.
///
/// Each micro-batch's mean loss is weighted by its token count and the sum divided by the total, so loss and
/// gradients are those of the token mean over the union — what one batch holding all of them would give.
/// Micro-batches with no tokens are skipped.
pub fn accumulate_gradients<B>(
    params: &[(String, Var)],
    micro_batches: &[&B],
    loss: &LossFn<'_, B>,
) -> Result<AccumulatedStep, TrainError> {
    let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
    let mut weighted_loss = 0.0f64;
    let mut tokens = 0usize;
    for batch in micro_batches {
        let (batch_loss, batch_tokens) = loss(batch, true)?;
        if batch_tokens == 0 {
            continue;
        }
        let batch_loss = batch_loss.to_dtype(DType::F32)?;
        weighted_loss += batch_loss.to_scalar::<f32>()? as f64 * batch_tokens as f64;
        tokens += batch_tokens;
        let store = batch_loss.affine(batch_tokens as f64, 0.0)?.backward()?;
        for (slot, (_, var)) in grads.iter_mut().zip(params) {
            if let Some(grad) = store.get(var.as_tensor()) {
                *slot = Some(match slot.take() {
                    Some(sum) => (sum + grad)?,
                    None => grad.clone(),
                });
            }
        }
    }
    if tokens > 0 {
        let scale = 1.0 / tokens as f64;
        for grad in grads.iter_mut().flatten() {
            *grad = grad.affine(scale, 0.0)?;
        }
    }
    let loss = if tokens > 0 {
        weighted_loss / tokens as f64
    } else {
        f64::NAN
    };
    Ok(AccumulatedStep { grads, loss, tokens })
}

/// The L2 norm of all the gradients taken as one vector, computed as torch does: the norm of the per-tensor norms,
/// in f32.
pub fn global_grad_norm(grads: &[Option<Tensor>]) -> Result<f64, TrainError> {
    let norms = grads
        .iter()
        .flatten()
        .map(|grad| grad.to_dtype(DType::F32)?.sqr()?.sum_all()?.sqrt())
        .collect::<candle_core::Result<Vec<_>>>()?;
    if norms.is_empty() {
        return Ok(0.0);
    }
    let total = Tensor::stack(&norms, 0)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    Ok(total as f64)
}

/// torch's `clip_grad_norm_`: scales all gradients by `max_norm / (norm + 1e-6)` when that is below 1.
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64, TrainError> {
    let norm = global_grad_norm(grads)?;
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        for grad in grads.iter_mut().flatten() {
            *grad = grad.affine(coefficient, 0.0)?;
        }
    }
    Ok(norm)
}

/// The token-weighted mean loss over `batches`, with the closure told it is not training.
pub fn evaluate<B>(batches: &[B], loss: &LossFn<'_, B>) -> Result<f64, TrainError> {
    let mut weighted = 0.0f64;
    let mut tokens = 0usize;
    for batch in batches {
        let (batch_loss, batch_tokens) = loss(batch, false)?;
        if batch_tokens == 0 {
            continue;
        }
        weighted += batch_loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64 * batch_tokens as f64;
        tokens += batch_tokens;
    }
    Ok(if tokens > 0 { weighted / tokens as f64 } else { f64::NAN })
}
