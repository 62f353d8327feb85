//! The BERT encoder (Devlin et al., 2019) and its RoBERTa / XLM-RoBERTa variant, for inference on packed batches.
//!
//! A batch is several tokenized sequences laid end to end with no padding ([`PackedBatch`]). Every position-wise step
//! (embeddings, the linear layers, GELU, LayerNorm) runs once over all the batch's tokens as one `[tokens, hidden]`
//! matrix; only attention looks across positions, and it runs per sequence over that sequence's own tokens. So there
//! are no padding rows and no attention mask, and each token's output equals Hugging Face's on a padded, masked batch.
//!
//! Each layer is the post-norm Transformer block of the paper:
//!
//! ```text
//! a = LayerNorm(x + Attention(x) · W_o)          attention.output.{dense, LayerNorm}
//! y = LayerNorm(a + GELU(a · W_1) · W_2)         intermediate.dense, output.{dense, LayerNorm}
//! ```
//!
//! Weights come from a Hugging Face `model.safetensors`, with or without the `bert.` / `roberta.` prefix that the
//! task checkpoints (`…ForSequenceClassification`) put in front of the encoder's tensors.

use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::error::{config_error, read_json, Error};
use crate::ops;

/// Which member of the BERT family a checkpoint is; they differ only in their embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT: positions count from 0; token types come from the tokenizer (0 for the first text, 1 for the second).
    Bert,
    /// RoBERTa and XLM-RoBERTa: positions count from `pad_token_id + 1` and skip padding tokens; token types are all 0
    /// (their tokenizers do not produce them and `type_vocab_size` is 1).
    Roberta,
}

/// The activation between the two linear layers of the feed-forward block (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `"gelu"`: exact GELU with erf.
    GeluErf,
    /// `"gelu_new"`, `"gelu_fast"`, `"gelu_pytorch_tanh"`: the tanh approximation.
    GeluTanh,
    /// `"relu"`.
    Relu,
}

/// The encoder's hyper-parameters, from a Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// `model_type` as written: `"bert"`, `"roberta"` or `"xlm-roberta"`.
    pub model_type: String,
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub activation: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// The padding token; RoBERTa positions are counted from it.
    pub pad_token_id: u32,
}

/// `config.json` as Hugging Face writes it, before validation.
#[derive(Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default = "default_position_embedding_type")]
    position_embedding_type: String,
}

// The defaults of transformers' BertConfig for keys that older config files leave out.
fn default_hidden_act() -> String {
    "gelu".to_owned()
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".to_owned()
}

impl BertConfig {
    /// Reads and checks a `config.json`; errors name the file and the field.
    pub fn read(path: &Path) -> std::result::Result<Self, Error> {
        let raw: RawConfig = read_json(path)?;
        let family = match raw.model_type.as_str() {
            "bert" => Family::Bert,
            "roberta" | "xlm-roberta" => Family::Roberta,
            other => {
                return Err(config_error(
                    path,
                    "model_type",
                    format!("is {other:?}; supported encoders are \"bert\", \"roberta\" and \"xlm-roberta\""),
                ))
            }
        };
        let activation = match raw.hidden_act.as_str() {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(config_error(
                    path,
                    "hidden_act",
                    format!("is {other:?}; supported: \"gelu\", \"gelu_new\", \"gelu_pytorch_tanh\", \"relu\""),
                ))
            }
        };
        if raw.position_embedding_type != "absolute" {
            return Err(config_error(
                path,
                "position_embedding_type",
                format!("is {:?}; only \"absolute\" is supported", raw.position_embedding_type),
            ));
        }
        if raw.num_attention_heads == 0 || raw.hidden_size % raw.num_attention_heads != 0 {
            return Err(config_error(
                path,
                "num_attention_heads",
                format!(
                    "({}) must divide hidden_size ({})",
                    raw.num_attention_heads, raw.hidden_size
                ),
            ));
        }
        let pad_token_id = match (family, raw.pad_token_id) {
            (_, Some(id)) => id,
            (Family::Bert, None) => 0,
            (Family::Roberta, None) => {
                return Err(config_error(
                    path,
                    "pad_token_id",
                    "is required for RoBERTa models (positions start after it)",
                ))
            }
        };
        let config = BertConfig {
            model_type: raw.model_type,
            family,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            activation,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
            pad_token_id,
        };
        if config.max_tokens() == 0 {
            return Err(config_error(
                path,
                "max_position_embeddings",
                "leaves no room for a single token",
            ));
        }
        Ok(config)
    }

    /// The longest sequence (special tokens included) that the position embeddings cover. RoBERTa spends the first
    /// `pad_token_id + 1` positions on padding, so XLM-R's 514 positions hold 512 tokens.
    pub fn max_tokens(&self) -> usize {
        match self.family {
            Family::Bert => self.max_position_embeddings,
            Family::Roberta => self
                .max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1),
        }
    }
}

/// A Hugging Face `model.safetensors` holding a BERT-family encoder, perhaps under a task model's prefix.
pub struct Checkpoint {
    /// The file's tensors, by their full names.
    pub weights: VarBuilder<'static>,
    /// What comes before the encoder's tensor names: `""` for a bare `BertModel` / `XLMRobertaModel`, `"bert."` or
    /// `"roberta."` for the task checkpoints built on one.
    pub encoder_prefix: &'static str,
    /// The file, for error messages.
    pub path: PathBuf,
}

impl Checkpoint {
    /// Opens the file, memory-mapped; tensors are converted to f32 on the CPU as they are read.
    pub fn open(path: &Path) -> std::result::Result<Self, Error> {
        if !path.is_file() {
            return Err(Error::Read {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file (knowhow reads safetensors only; a pytorch_model.bin can be converted with \
                     transformers' save_pretrained(..., safe_serialization=True))",
                ),
            });
        }
        // SAFETY: the file is mapped read-only and must not be truncated while mapped; knowhow never writes model
        // files in place, and candle copies every tensor out of the mapping as it loads it.
        let weights =
            unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }.map_err(|source| {
                Error::Weights {
                    path: path.to_owned(),
                    source,
                }
            })?;
        const PREFIXES: [&str; 3] = ["", "bert.", "roberta."];
        let encoder_prefix = PREFIXES
            .into_iter()
            .find(|prefix| weights.contains_tensor(&format!("{prefix}embeddings.word_embeddings.weight")))
            .ok_or_else(|| {
                config_error(
                    path,
                    "embeddings.word_embeddings.weight",
                    "is not in the file, with or without a \"bert.\" or \"roberta.\" prefix; \
                     is this a BERT-family checkpoint?",
                )
            })?;
        Ok(Checkpoint {
            weights,
            encoder_prefix,
            path: path.to_owned(),
        })
    }

    /// Builds the encoder described by `config` from the file's tensors.
    pub fn load_encoder(&self, config: &BertConfig) -> std::result::Result<BertModel, Error> {
        let weights = match self.encoder_prefix.strip_suffix('.') {
            Some(prefix) => self.weights.pp(prefix),
            None => self.weights.clone(),
        };
        BertModel::load(config, weights).map_err(|source| self.error(source))
    }

    /// A loading error (missing tensor, wrong shape) attributed to this file.
    pub fn error(&self, source: candle_core::Error) -> Error {
        Error::Weights {
            path: self.path.clone(),
            source,
        }
    }
}

/// Several tokenized sequences laid end to end, with no padding between them.
#[derive(Debug, Clone, Default)]
pub struct PackedBatch {
    input_ids: Vec<u32>,
    token_type_ids: Vec<u32>,
    sequences: Vec<Range<usize>>,
}

impl PackedBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one sequence (special tokens included). Both slices come from the same tokenizer output.
    pub fn push(&mut self, input_ids: &[u32], token_type_ids: &[u32]) {
        assert_eq!(input_ids.len(), token_type_ids.len(), "one token type per token");
        let start = self.input_ids.len();
        self.input_ids.extend_from_slice(input_ids);
        self.token_type_ids.extend_from_slice(token_type_ids);
        self.sequences.push(start..self.input_ids.len());
    }

    /// Each sequence's rows in the packed `[tokens, hidden]` output, in the order they were pushed.
    pub fn sequences(&self) -> &[Range<usize>] {
        &self.sequences
    }

    /// Tokens in all sequences together.
    pub fn token_count(&self) -> usize {
        self.input_ids.len()
    }
}

/// The attention heads' layout: `count` heads of `dim` features each.
#[derive(Debug, Clone, Copy)]
struct Heads {
    count: usize,
    dim: usize,
}

/// Word, position and token-type embeddings, summed and normalised.
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: ops::Norm,
}

impl Embeddings {
    fn load(config: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let hidden = config.hidden_size;
        Ok(Embeddings {
            word: vb.get((config.vocab_size, hidden), "word_embeddings.weight")?,
            position: vb.get((config.max_position_embeddings, hidden), "position_embeddings.weight")?,
            token_type: vb.get((config.type_vocab_size, hidden), "token_type_embeddings.weight")?,
            norm: load_norm(config, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, input_ids: &Tensor, position_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        let words = self.word.index_select(input_ids, 0)?;
        let positions = self.position.index_select(position_ids, 0)?;
        let token_types = self.token_type.index_select(token_type_ids, 0)?;
        ops::layer_norm(&((words + positions)? + token_types)?, &self.norm)
    }
}

/// A LayerNorm's `weight` and `bias` under `vb`.
fn load_norm(config: &BertConfig, vb: VarBuilder) -> Result<ops::Norm> {
    Ok(ops::Norm {
        gamma: vb.get(config.hidden_size, "weight")?,
        beta: vb.get(config.hidden_size, "bias")?,
        eps: config.layer_norm_eps as f32,
    })
}

/// A linear layer's `weight` `[out, in]` and `bias` under `vb`, packed for the matmul.
fn load_dense(vb: VarBuilder, out: usize, input: usize) -> Result<ops::Dense> {
    ops::Dense::new(&vb.get((out, input), "weight")?, Some(&vb.get(out, "bias")?))
}

/// One Transformer block: self-attention, then the feed-forward network, each with a residual and LayerNorm.
struct Layer {
    /// The query, key and value projections stacked into one `[3·hidden, hidden]` layer, so that one matmul computes
    /// all three; attention then reads each head's columns in place.
    qkv: ops::Dense,
    attention_output: ops::Dense,
    attention_norm: ops::Norm,
    intermediate: ops::Dense,
    output: ops::Dense,
    output_norm: ops::Norm,
}

impl Layer {
    fn load(config: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let hidden = config.hidden_size;
        let projection = |name: &str| -> Result<(Tensor, Tensor)> {
            let vb = vb.pp("attention.self").pp(name);
            Ok((vb.get((hidden, hidden), "weight")?, vb.get(hidden, "bias")?))
        };
        let (query, key, value) = (projection("query")?, projection("key")?, projection("value")?);
        let qkv = ops::Dense::new(
            &Tensor::cat(&[&query.0, &key.0, &value.0], 0)?,
            Some(&Tensor::cat(&[&query.1, &key.1, &value.1], 0)?),
        )?;
        Ok(Layer {
            qkv,
            attention_output: load_dense(vb.pp("attention.output.dense"), hidden, hidden)?,
            attention_norm: load_norm(config, vb.pp("attention.output.LayerNorm"))?,
            intermediate: load_dense(vb.pp("intermediate.dense"), config.intermediate_size, hidden)?,
            output: load_dense(vb.pp("output.dense"), hidden, config.intermediate_size)?,
            output_norm: load_norm(config, vb.pp("output.LayerNorm"))?,
        })
    }

    fn forward(&self, x: &Tensor, sequences: &[Range<usize>], heads: Heads, activation: Activation) -> Result<Tensor> {
        let attention = self.self_attention(x, sequences, heads)?;
        let x = self
            .attention_output
            .forward_add_layer_norm(&attention, x, &self.attention_norm)?;
        let inner = match activation {
            Activation::GeluErf => self.intermediate.forward_gelu(&x)?,
            Activation::GeluTanh => ops::gelu_tanh(&self.intermediate.forward(&x)?)?,
            Activation::Relu => ops::relu(&self.intermediate.forward(&x)?)?,
        };
        self.output.forward_add_layer_norm(&inner, &x, &self.output_norm)
    }

    /// Multi-head scaled dot-product attention, `softmax(Q·Kᵀ/√d)·V` per head, each sequence attending to itself only.
    /// Returns the heads' outputs side by side, `[tokens, hidden]`, before the output projection.
    fn self_attention(&self, x: &Tensor, sequences: &[Range<usize>], heads: Heads) -> Result<Tensor> {
        let hidden = heads.count * heads.dim;
        let qkv = self.qkv.forward(x)?; // [tokens, 3·hidden]
        let mut per_sequence = Vec::with_capacity(sequences.len());
        for sequence in sequences.iter().filter(|sequence| !sequence.is_empty()) {
            let rows = qkv.narrow(0, sequence.start, sequence.len())?;
            // Views of the projection's columns: no copy.
            let part = |i: usize| rows.narrow(1, i * hidden, hidden);
            per_sequence.push(ops::attention(&part(0)?, &part(1)?, &part(2)?, heads.count)?);
        }
        match per_sequence.len() {
            1 => Ok(per_sequence.pop().expect("one sequence")),
            _ => Tensor::cat(&per_sequence, 0),
        }
    }
}

/// The BERT / XLM-RoBERTa encoder: token ids in, one contextual vector per token out.
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    family: Family,
    heads: Heads,
    activation: Activation,
    hidden_size: usize,
    pad_token_id: u32,
    /// False when the model has a single token type (XLM-R), whatever the tokenizer says.
    use_token_types: bool,
}

impl BertModel {
    /// Builds the encoder from `weights`, a VarBuilder already pointed at the encoder's tensors (see
    /// [`Checkpoint::load_encoder`]). Missing tensors and wrong shapes are errors naming the tensor.
    pub fn load(config: &BertConfig, weights: VarBuilder) -> Result<Self> {
        let embeddings = Embeddings::load(config, weights.pp("embeddings"))?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| Layer::load(config, weights.pp(format!("encoder.layer.{index}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel {
            embeddings,
            layers,
            family: config.family,
            heads: Heads {
                count: config.num_attention_heads,
                dim: config.hidden_size / config.num_attention_heads,
            },
            activation: config.activation,
            hidden_size: config.hidden_size,
            pad_token_id: config.pad_token_id,
            use_token_types: config.family == Family::Bert && config.type_vocab_size > 1,
        })
    }

    /// Width of the output vectors.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// The last layer's output for every token of the batch, `[tokens, hidden]`, in packed order: rows
    /// `batch.sequences()[i]` belong to sequence `i`.
    pub fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        let tokens = batch.token_count();
        let device = self.embeddings.word.device();
        if tokens == 0 {
            return Tensor::zeros((0, self.hidden_size), DType::F32, device);
        }
        let input_ids = Tensor::from_slice(&batch.input_ids, tokens, device)?;
        let position_ids = Tensor::from_vec(position_ids(batch, self.family, self.pad_token_id), tokens, device)?;
        let token_type_ids = if self.use_token_types {
            Tensor::from_slice(&batch.token_type_ids, tokens, device)?
        } else {
            Tensor::zeros(tokens, DType::U32, device)?
        };
        let mut hidden = self.embeddings.forward(&input_ids, &position_ids, &token_type_ids)?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &batch.sequences, self.heads, self.activation)?;
        }
        Ok(hidden)
    }
}

/// Position of every token within its sequence, as the family numbers them.
fn position_ids(batch: &PackedBatch, family: Family, pad_token_id: u32) -> Vec<u32> {
    let mut positions = Vec::with_capacity(batch.token_count());
    for sequence in &batch.sequences {
        let ids = &batch.input_ids[sequence.clone()];
        match family {
            Family::Bert => positions.extend(0..ids.len() as u32),
            Family::Roberta => {
                // transformers' create_position_ids_from_input_ids: padding tokens keep position pad_token_id, the
                // others count up from pad_token_id + 1.
                let mut seen = 0;
                positions.extend(ids.iter().map(|&id| {
                    if id == pad_token_id {
                        pad_token_id
                    } else {
                        seen += 1;
                        pad_token_id + seen
                    }
                }));
            }
        }
    }
    positions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &Path, json: &str) -> std::path::PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    const MINILM_LIKE: &str = r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 12}"#;

    #[test]
    fn config_defaults_follow_transformers() {
        let dir = tempfile::tempdir().unwrap();
        let config = BertConfig::read(&write_config(dir.path(), MINILM_LIKE)).unwrap();
        assert_eq!(config.family, Family::Bert);
        assert_eq!(config.activation, Activation::GeluErf);
        assert_eq!(
            (config.type_vocab_size, config.pad_token_id, config.layer_norm_eps),
            (2, 0, 1e-12)
        );
        assert_eq!(config.max_tokens(), 12);
    }

    #[test]
    fn roberta_positions_leave_room_for_padding() {
        let dir = tempfile::tempdir().unwrap();
        let json = MINILM_LIKE
            .replace("\"bert\"", "\"xlm-roberta\"")
            .replace('}', r#", "pad_token_id": 1}"#);
        let config = BertConfig::read(&write_config(dir.path(), &json)).unwrap();
        assert_eq!(config.family, Family::Roberta);
        assert_eq!(config.max_tokens(), 12 - 2);
    }

    #[test]
    fn config_errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (MINILM_LIKE.replace("\"bert\"", "\"gpt2\""), "`model_type`"),
            (MINILM_LIKE.replace('}', r#", "hidden_act": "swish"}"#), "`hidden_act`"),
            (
                MINILM_LIKE.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3"),
                "`num_attention_heads`",
            ),
            (
                MINILM_LIKE.replace('}', r#", "position_embedding_type": "relative_key"}"#),
                "`position_embedding_type`",
            ),
            (MINILM_LIKE.replace("\"bert\"", "\"roberta\""), "`pad_token_id`"),
            (MINILM_LIKE.replace("\"hidden_size\": 8,", ""), "hidden_size"),
        ];
        for (json, field) in cases {
            let path = write_config(dir.path(), &json);
            let message = BertConfig::read(&path).unwrap_err().to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(field), "{message} should name {field}");
        }
    }

    #[test]
    fn roberta_positions_skip_padding_tokens() {
        let mut batch = PackedBatch::new();
        batch.push(&[0, 5, 1, 6, 2], &[0; 5]);
        batch.push(&[0, 2], &[0; 2]);
        assert_eq!(position_ids(&batch, Family::Bert, 1), [0, 1, 2, 3, 4, 0, 1]);
        assert_eq!(position_ids(&batch, Family::Roberta, 1), [2, 3, 1, 4, 5, 2, 3]);
    }

    #[test]
    fn packed_batch_records_each_sequence_rows() {
        let mut batch = PackedBatch::new();
        batch.push(&[7, 8, 9], &[0, 0, 0]);
        batch.push(&[4], &[0]);
        assert_eq!(batch.sequences(), [0..3, 3..4]);
        assert_eq!(batch.token_count(), 4);
    }
}
