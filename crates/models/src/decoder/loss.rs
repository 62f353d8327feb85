//! The causal language-modelling loss as transformers computes it: position `t` predicts label `t + 1`, labels of
//! -100 are ignored (prompt tokens, padding), and the loss is the mean cross-entropy over the remaining tokens.

use candle_core::{DType, Result, Tensor, D};

use super::Decoder;

/// Label value that takes no part in the loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits: [batch, seq, vocab]` against `labels: [batch, seq]` (i64, -100 = ignored),
/// shifted by one position like transformers. Fails when every label is ignored (the mean would be NaN).
pub fn causal_lm_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (sum, count) = causal_lm_loss_sum(logits, labels)?;
    if count == 0 {
        candle_core::bail!("causal_lm_loss: every label is -100, so there is nothing to learn from in this batch");
    }
    sum / count as f64
}

/// The summed cross-entropy and the number of tokens it covers, for averaging over several micro-batches (gradient
/// accumulation weighted by tokens). The sum is a 0-d tensor (zero when `count` is 0).
pub fn causal_lm_loss_sum(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, usize)> {
    let (batch, seq, vocab) = logits.dims3()?;
    let (positions, targets) = kept_positions(labels, batch, seq, vocab)?;
    if positions.is_empty() {
        return Ok((Tensor::zeros((), DType::F32, logits.device())?, 0));
    }
    // Only the rows that predict a kept label go through log-softmax: prompts and padding cost nothing.
    let positions = Tensor::from_vec(positions, targets.len(), logits.device())?;
    let picked = logits.reshape((batch * seq, vocab))?.index_select(&positions, 0)?;
    cross_entropy_sum(&picked, targets)
}

/// [`causal_lm_loss_sum`] of `decoder` on `input_ids`, computing logits only at the positions that predict a kept
/// label ([`Decoder::forward_positions`]): the same loss and gradients, without projecting prompts and padding onto
/// the vocabulary. This is the training loss.
pub fn decoder_loss_sum(decoder: &Decoder, input_ids: &Tensor, labels: &Tensor) -> Result<(Tensor, usize)> {
    let (batch, seq) = input_ids.dims2()?;
    let (positions, targets) = kept_positions(labels, batch, seq, decoder.config().vocab_size)?;
    if positions.is_empty() {
        return Ok((Tensor::zeros((), DType::F32, input_ids.device())?, 0));
    }
    let positions = Tensor::from_vec(positions, targets.len(), input_ids.device())?;
    cross_entropy_sum(&decoder.forward_positions(input_ids, &positions)?, targets)
}

/// The flattened positions `b · seq + t - 1` that predict a kept label `labels[b, t]`, and those labels.
fn kept_positions(labels: &Tensor, batch: usize, seq: usize, vocab: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let label_rows = labels.to_dtype(DType::I64)?.to_vec2::<i64>()?;
    if label_rows.len() != batch || label_rows.iter().any(|row| row.len() != seq) {
        candle_core::bail!("labels {:?} do not match a [{batch}, {seq}] batch", labels.dims());
    }
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (b, row) in label_rows.iter().enumerate() {
        for (t, &label) in row.iter().enumerate().skip(1) {
            if label == IGNORE_INDEX {
                continue;
            }
            if label < 0 || label as usize >= vocab {
                candle_core::bail!("label {label} at [{b}, {t}] is outside the vocabulary (0..{vocab}) and not -100");
            }
            positions.push((b * seq + t - 1) as u32);
            targets.push(label as u32);
        }
    }
    Ok((positions, targets))
}

/// `-Σ log softmax(logits[i])[targets[i]]` for `logits: [n, vocab]`.
fn cross_entropy_sum(logits: &Tensor, targets: Vec<u32>) -> Result<(Tensor, usize)> {
    let count = targets.len();
    let log_probabilities = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let targets = Tensor::from_vec(targets, (count, 1), logits.device())?;
    let sum = log_probabilities.gather(&targets, 1)?.sum_all()?.neg()?;
    Ok((sum, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_a_hand_computed_cross_entropy_and_skips_ignored_labels() {
        let device = Device::Cpu;
        // Two positions per sequence, vocabulary of 3: only position 0 of each row predicts (label at t = 1).
        let logits = Tensor::new(&[[[1f32, 2., 3.], [9., 9., 9.]], [[0., 0., 0.], [5., 5., 5.]]], &device).unwrap();
        let labels = Tensor::new(&[[-100i64, 2], [7, -100]], &device).unwrap();
        let loss = causal_lm_loss(&logits, &labels).unwrap().to_scalar::<f32>().unwrap();
        let expected = -(3f32.exp() / (1f32.exp() + 2f32.exp() + 3f32.exp())).ln();
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");

        let all_ignored = Tensor::new(&[[-100i64, -100], [1, -100]], &device).unwrap();
        assert!(causal_lm_loss(&logits, &all_ignored).is_err());
        let out_of_vocabulary = Tensor::new(&[[0i64, 3], [0, 0]], &device).unwrap();
        assert!(causal_lm_loss(&logits, &out_of_vocabulary).is_err());
    }
}
