//! Decoder-only language models (Llama 2/3, Mistral, Qwen2) on candle, for generation and for LoRA training.
//!
//! - [`Decoder`]: the transformer, from a Hugging Face folder ([`Decoder::load`]) or any `VarBuilder`
//!   ([`Decoder::new`], e.g. a `VarMap` to train from scratch); `forward` gives logits, with an optional
//!   [`KvCache`]; `forward_last` gives only the last position's logits (generation).
//! - LoRA with PEFT's semantics: [`Decoder::add_lora`], [`Decoder::lora_vars`] (the trainable variables with
//!   PEFT's key names), [`Decoder::set_training`] (dropout), [`Decoder::remove_lora`]; [`causal_lm_loss`] is
//!   transformers' shifted cross-entropy, and [`decoder_loss_sum`] the same loss computed from the decoder with
//!   logits only where a label is kept (the training loss).
//! - PEFT folders ([`peft`]): save and load `adapter_config.json` + `adapter_model.safetensors`, and merge an adapter
//!   into a full model folder.
//! - [`generate`]: greedy or temperature/top-p sampling (seeded), EOS and stop strings, streaming text that never
//!   splits a UTF-8 character nor shows the start of a stop string before it is decided.
//!
//! Base weights are plain tensors (no gradient storage, and their products skip the weight gradient that candle's
//! matmul would compute); adapters are `Var`s. All compute is f32.

mod causal_softmax;
mod config;
pub mod generate;
mod lora;
mod loss;
mod model;
pub mod peft;
mod rms_norm;
mod rng;
mod rope;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::error::{config_error, read_json, Error};

pub use config::{Architecture, DecoderConfig, RopeScaling};
pub use generate::{generate, FinishReason, GenerateOptions, Generation};
pub use lora::{LoraConfig, ALL_TARGETS};
pub use loss::{causal_lm_loss, causal_lm_loss_sum, decoder_loss_sum};
pub use model::{Decoder, KvCache};

/// The contiguous f32 values a custom op reads (`op` and `name` for the error).
fn contiguous_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
    name: &str,
) -> candle_core::Result<&'a [f32]> {
    use candle_core::backend::BackendStorage;
    match (storage, layout.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(values), Some((start, end))) => Ok(&values[start..end]),
        (candle_core::CpuStorage::F32(_), None) => candle_core::bail!("{op}: {name} must be contiguous"),
        _ => candle_core::bail!("{op}: {name} must be f32, got {:?}", storage.dtype()),
    }
}

/// The largest absolute difference between two f32 tensors of one shape (the custom ops' tests).
#[cfg(test)]
fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

impl Decoder {
    /// Loads `config.json` (+ `generation_config.json`) and the weights (`model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`) of a Hugging Face folder, as frozen f32 tensors.
    pub fn load(dir: &Path) -> Result<Decoder, Error> {
        let config = DecoderConfig::from_file(&dir.join("config.json"))?;
        let files = weight_files(dir)?;
        let weights_error = |source| Error::Weights {
            path: files.first().cloned().unwrap_or_else(|| dir.to_owned()),
            source,
        };
        // SAFETY: the files are mapped read-only and must not be truncated while mapped; knowhow never writes model
        // files in place, and candle copies every tensor out of the mapping as it loads it.
        let weights =
            unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu) }.map_err(weights_error)?;
        Decoder::new(config, weights).map_err(weights_error)
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

/// The safetensors files of a model folder: the shards named by `model.safetensors.index.json`, else
/// `model.safetensors`.
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let index: ShardIndex = read_json(&index_path)?;
        let mut files: Vec<PathBuf> = index.weight_map.values().map(|file| dir.join(file)).collect();
        files.sort();
        files.dedup();
        if let Some(missing) = files.iter().find(|file| !file.is_file()) {
            return Err(config_error(
                &index_path,
                "weight_map",
                format!("names {}, which is missing", missing.display()),
            ));
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(Error::Read {
        path: single,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no model.safetensors nor model.safetensors.index.json in the folder",
        ),
    })
}

/// Loads `tokenizer.json` from a model folder.
pub fn load_tokenizer(dir: &Path) -> Result<tokenizers::Tokenizer, Error> {
    let path = dir.join("tokenizer.json");
    tokenizers::Tokenizer::from_file(&path).map_err(|error| Error::TokenizerLoad {
        message: if path.is_file() {
            error.to_string()
        } else {
            "no such file (the model folder needs a tokenizer.json)".to_owned()
        },
        path,
    })
}
