//! Encoded rows to padded batches, and a batch's loss under a decoder: what training, validation and evaluation
//! all compute the same way.

use candle_core::Tensor;

use knowhow_models::decoder::{decoder_loss_sum, Decoder};

use crate::data::{self, Batch, Encoded};

/// Groups encoded rows into padded batches of `batch_size`, similar lengths together (less padding; the training
/// loop shuffles the batches).
pub fn make_batches(mut rows: Vec<Encoded>, batch_size: usize, pad_id: u32) -> Vec<Batch> {
    rows.sort_by_key(|row| row.input_ids.len());
    rows.chunks(batch_size.max(1))
        .map(|chunk| data::pad_batch(chunk, pad_id))
        .collect()
}

/// The summed completion-token loss of a batch and its token count (see [`decoder_loss_sum`]).
pub fn batch_loss_sum(decoder: &Decoder, batch: &Batch) -> candle_core::Result<(Tensor, usize)> {
    let device = decoder.device();
    let input_ids = Tensor::from_slice(&batch.input_ids, (batch.rows, batch.seq_len), device)?;
    let labels = Tensor::from_slice(&batch.labels, (batch.rows, batch.seq_len), device)?;
    decoder_loss_sum(decoder, &input_ids, &labels)
}
