//! Neural models on candle, written here rather than taken from a framework: sentence embedders and cross-encoders
//! of the BERT family (BERT, RoBERTa, XLM-RoBERTa), decoder-only language models with LoRA, and the chat templates
//! that turn conversations into their prompts, checked against sentence-transformers, Hugging Face transformers
//! and PEFT.
//!
//! - [`SentenceEmbedder`]: a sentence-transformers folder (all-MiniLM-L6-v2, bge, e5, gte) → one vector per text.
//! - [`CrossEncoder`]: a sequence-classification folder (ms-marco-MiniLM, bge-reranker) → one logit per
//!   (query, passage) pair.
//! - [`bert`]: the encoder itself, which runs packed batches (no padding); its arithmetic goes through `ops`, one
//!   function per operation, so that faster kernels can replace them.
//! - [`decoder`]: [`Decoder`], Llama 2/3, Mistral and Qwen2 for generation ([`decoder::generate`]) and LoRA
//!   training with PEFT's semantics and folders ([`decoder::peft`]).
//! - [`chat_template`]: [`ChatTemplate`], a model's Hugging Face chat template rendered as transformers'
//!   `apply_chat_template` renders it.
//!
//! Everything runs in f32 on the CPU, on candle's thread pool (rayon; `RAYON_NUM_THREADS` sets its size).

pub mod bert;
pub mod chat_template;
mod cross_encoder;
pub mod decoder;
mod error;
mod ops;
mod pooling;
mod sentence;
mod tokenize;

pub use chat_template::{ChatTemplate, ChatTemplateError};
pub use cross_encoder::CrossEncoder;
pub use decoder::{Decoder, DecoderConfig, KvCache, LoraConfig};
pub use error::Error;
pub use pooling::{l2_normalize, Pooling};
pub use sentence::{ModelInfo, SentenceEmbedder};

/// How to load a [`SentenceEmbedder`] or [`CrossEncoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Texts (or pairs) per forward pass. Batches are packed without padding, so this bounds memory and work per
    /// step rather than wasting any. Default 32.
    pub batch_size: usize,
    /// Overrides the model's own input limit (tokens, special tokens included); must not exceed what its position
    /// embeddings cover. Default: the model's `max_seq_length` (sentence-transformers) or the tokenizer's
    /// `model_max_length`, else the position embeddings' limit.
    pub max_seq_length: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            batch_size: 32,
            max_seq_length: None,
        }
    }
}

impl LoadOptions {
    fn check(&self) -> Result<(), Error> {
        if self.batch_size == 0 {
            return Err(Error::Option {
                option: "batch_size",
                problem: "must be at least 1".to_owned(),
            });
        }
        Ok(())
    }

    /// The input limit: this option if set, else what the model declares, never more than `limit` (what its
    /// position embeddings cover).
    fn resolve_max_length(&self, declared: Option<usize>, limit: usize) -> Result<usize, Error> {
        match self.max_seq_length {
            Some(length) if length < 1 || length > limit => Err(Error::Option {
                option: "max_seq_length",
                problem: format!("is {length}; this model takes 1 to {limit} tokens"),
            }),
            Some(length) => Ok(length),
            None => Ok(declared.map_or(limit, |declared| declared.min(limit))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<SentenceEmbedder>();
        shareable::<CrossEncoder>();
    }

    #[test]
    fn max_length_option_is_checked_against_the_model() {
        let options = |max_seq_length| LoadOptions {
            max_seq_length,
            ..LoadOptions::default()
        };
        assert_eq!(options(None).resolve_max_length(Some(256), 512).unwrap(), 256);
        assert_eq!(options(None).resolve_max_length(Some(8192), 512).unwrap(), 512);
        assert_eq!(options(None).resolve_max_length(None, 512).unwrap(), 512);
        assert_eq!(options(Some(128)).resolve_max_length(Some(256), 512).unwrap(), 128);
        let err = options(Some(1000)).resolve_max_length(Some(256), 512).unwrap_err();
        assert!(
            matches!(&err, Error::Option { option: "max_seq_length", problem } if problem.contains("1 to 512")),
            "{err}"
        );
        let zero_batch = LoadOptions {
            batch_size: 0,
            ..LoadOptions::default()
        };
        let err = zero_batch.check().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Option {
                    option: "batch_size",
                    ..
                }
            ),
            "{err}"
        );
    }
}
