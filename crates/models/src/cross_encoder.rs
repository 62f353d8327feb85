//! Cross-encoders: a BERT-family encoder reads a query and a passage together and a classification head turns the
//! first token's vector into one relevance logit. Two head layouts exist in the wild:
//!
//! ```text
//! BertForSequenceClassification (cross-encoder/ms-marco-MiniLM-L-6-v2):
//!     logit = classifier(tanh(bert.pooler.dense([CLS])))
//! XLMRobertaForSequenceClassification (BAAI/bge-reranker-base):
//!     logit = classifier.out_proj(tanh(classifier.dense(<s>)))
//! ```
//!
//! Both are "dense, tanh, dense" on the first token; only the tensor names differ.

use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::bert::{BertConfig, BertModel, Checkpoint, Family, PackedBatch};
use crate::error::{config_error, read_json, Error};
use crate::ops;
use crate::tokenize::{batches_longest_first, declared_max_length, TextTokenizer, SORT_WINDOW};
use crate::LoadOptions;

/// A query-passage relevance model. Safe to share between threads.
pub struct CrossEncoder {
    model: BertModel,
    head: ClassificationHead,
    tokenizer: TextTokenizer,
    max_seq_length: usize,
    batch_size: usize,
}

/// The label count that `config.json` declares; transformers defaults to 2 when neither key is present.
#[derive(Deserialize)]
struct LabelConfig {
    num_labels: Option<usize>,
    id2label: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Dense layer, tanh, then a one-output layer, applied to each pair's first token.
struct ClassificationHead {
    dense: ops::Dense,
    out: ops::Dense,
}

impl ClassificationHead {
    fn load(weights: &VarBuilder, hidden: usize, dense: &str, out: &str) -> candle_core::Result<Self> {
        Ok(ClassificationHead {
            dense: ops::Dense::new(
                &weights.pp(dense).get((hidden, hidden), "weight")?,
                Some(&weights.pp(dense).get(hidden, "bias")?),
            )?,
            out: ops::Dense::new(
                &weights.pp(out).get((1, hidden), "weight")?,
                Some(&weights.pp(out).get(1, "bias")?),
            )?,
        })
    }

    /// `[pairs, hidden]` first-token vectors to `[pairs, 1]` logits.
    fn forward(&self, first_tokens: &Tensor) -> candle_core::Result<Tensor> {
        let pooled = ops::tanh(&self.dense.forward(&first_tokens.contiguous()?)?)?;
        self.out.forward(&pooled)
    }
}

impl CrossEncoder {
    /// Loads a `BertForSequenceClassification` or `XLMRobertaForSequenceClassification` folder (`config.json`,
    /// `model.safetensors`, `tokenizer.json`) with a single output label.
    pub fn load(dir: &Path, options: LoadOptions) -> Result<Self, Error> {
        options.check()?;
        let config_path = dir.join("config.json");
        let config = BertConfig::read(&config_path)?;
        let labels: LabelConfig = read_json(&config_path)?;
        let num_labels = labels
            .num_labels
            .or(labels.id2label.map(|labels| labels.len()))
            .unwrap_or(2);
        if num_labels != 1 {
            return Err(config_error(
                &config_path,
                "id2label",
                format!("declares {num_labels} labels; a cross-encoder here must output one relevance logit"),
            ));
        }
        let max_seq_length = options.resolve_max_length(declared_max_length(dir)?, config.max_tokens())?;

        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"))?;
        let checkpoint = Checkpoint::open(&dir.join("model.safetensors"))?;
        let model = checkpoint.load_encoder(&config)?;
        let head = match config.family {
            Family::Bert => {
                let pooler = format!("{}pooler.dense", checkpoint.encoder_prefix);
                ClassificationHead::load(&checkpoint.weights, config.hidden_size, &pooler, "classifier")
            }
            Family::Roberta => ClassificationHead::load(
                &checkpoint.weights,
                config.hidden_size,
                "classifier.dense",
                "classifier.out_proj",
            ),
        }
        .map_err(|source| checkpoint.error(source))?;
        Ok(CrossEncoder {
            model,
            head,
            tokenizer,
            max_seq_length,
            batch_size: options.batch_size,
        })
    }

    /// The relevance logit of each passage for `query` (higher is more relevant; not a probability), in the order of
    /// `passages`. Each pair is read as `query, passage` and cut to [`Self::max_seq_length`] tokens, the passage first.
    pub fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, Error> {
        let mut scores = Vec::with_capacity(passages.len());
        for window in passages.chunks(SORT_WINDOW) {
            scores.extend(self.score_window(query, window)?);
        }
        Ok(scores)
    }

    fn score_window(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, Error> {
        let pairs = self.tokenizer.encode_pairs(query, passages, self.max_seq_length)?;
        let mut scores = vec![0.0; pairs.len()];
        for indices in batches_longest_first(&pairs, self.batch_size) {
            let mut batch = PackedBatch::new();
            for &index in &indices {
                batch.push(&pairs[index].ids, &pairs[index].type_ids);
            }
            let hidden = self.model.forward(&batch)?;
            let first_rows: Vec<u32> = batch.sequences().iter().map(|tokens| tokens.start as u32).collect();
            let first_rows = Tensor::from_vec(first_rows, indices.len(), hidden.device())?;
            let logits = self
                .head
                .forward(&hidden.index_select(&first_rows, 0)?)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for (&index, logit) in indices.iter().zip(logits) {
                scores[index] = logit;
            }
        }
        Ok(scores)
    }

    /// Longest pair in tokens, special tokens included.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }
}
