//! `config.json` of a Llama, Mistral or Qwen2 checkpoint, as transformers 4 and 5 write it, resolved into the few
//! numbers the model needs.

use std::path::Path;

use serde::Deserialize;

use crate::error::{config_error, read_json, read_optional_json, Error};

/// The decoder families this crate implements. They share one block (pre-norm attention + SwiGLU MLP with RoPE);
/// they differ in which projections carry a bias and whether attention is windowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

/// How rotary position embeddings turn a position into angles.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// `inv_freq[i] = theta^(-2i/d)`.
    None,
    /// Llama 3.1's: long wavelengths divided by `factor`, short ones kept, a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// Everything the decoder needs, checked. Build one with [`DecoderConfig::from_file`] or directly (the tune crate
/// makes tiny ones to pre-train from scratch).
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Fewer than `num_attention_heads` for grouped-query attention; each key/value head serves a group.
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    /// The output projection reuses the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// Bias on q, k and v (Qwen2, or Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama's `attention_bias`).
    pub o_bias: bool,
    /// Bias on gate, up and down (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Per layer: `Some(w)` when a query sees only the `w` most recent positions (itself included).
    pub sliding_windows: Vec<Option<usize>>,
    /// Generation ends at any of these (config.json's, joined with generation_config.json's).
    pub eos_token_ids: Vec<u32>,
}

/// `eos_token_id` is an int or a list of ints in Hugging Face configs.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    fn into_vec(self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![id],
            TokenIds::Many(ids) => ids,
        }
    }
}

/// The fields of config.json we read; serde names the file's line when one is mistyped.
#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    rms_norm_eps: f64,
    hidden_act: Option<String>,
    rope_theta: Option<f64>,
    /// transformers 4: `rope_scaling`; transformers 5: `rope_parameters` (which also holds `rope_theta`).
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
    eos_token_id: Option<TokenIds>,
}

#[derive(Debug, Deserialize)]
struct RawGenerationConfig {
    eos_token_id: Option<TokenIds>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn default_max_positions() -> usize {
    2048
}

impl DecoderConfig {
    /// Reads `config.json` (and `generation_config.json` beside it, for more end-of-sequence ids).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let raw: RawConfig = read_json(path)?;
        let mut config = resolve(raw, path)?;
        let generation_path = path.with_file_name("generation_config.json");
        if let Some(generation) = read_optional_json::<RawGenerationConfig>(&generation_path)? {
            for id in generation.eos_token_id.map(TokenIds::into_vec).unwrap_or_default() {
                if !config.eos_token_ids.contains(&id) {
                    config.eos_token_ids.push(id);
                }
            }
        }
        Ok(config)
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

/// `num_key_value_heads` must divide the query heads, `head_dim` must be even (rotary pairs) and a set
/// `sliding_window` must be positive.
fn resolve(raw: RawConfig, path: &Path) -> Result<DecoderConfig, Error> {
    let architecture = architecture(&raw, path)?;
    if let Some(act) = raw.hidden_act.as_deref().filter(|act| *act != "silu") {
        return Err(config_error(
            path,
            "hidden_act",
            format!("is {act:?}; only \"silu\" is supported"),
        ));
    }
    let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
    if num_key_value_heads == 0 || raw.num_attention_heads % num_key_value_heads != 0 {
        return Err(config_error(
            path,
            "num_key_value_heads",
            format!(
                "is {num_key_value_heads}; it must divide num_attention_heads ({})",
                raw.num_attention_heads
            ),
        ));
    }
    let head_dim = match raw.head_dim {
        Some(dim) => dim,
        None if raw.num_attention_heads > 0 && raw.hidden_size % raw.num_attention_heads == 0 => {
            raw.hidden_size / raw.num_attention_heads
        }
        None => return Err(config_error(path, "num_attention_heads", "must divide hidden_size")),
    };
    if head_dim % 2 != 0 {
        return Err(config_error(path, "head_dim", "must be even for rotary embeddings"));
    }
    let (rope_theta, rope_scaling) = rope(&raw, path)?;
    let sliding_windows = sliding_windows(&raw, architecture, path)?;
    let is_qwen2 = architecture == Architecture::Qwen2;
    Ok(DecoderConfig {
        architecture,
        vocab_size: raw.vocab_size,
        hidden_size: raw.hidden_size,
        intermediate_size: raw.intermediate_size,
        num_hidden_layers: raw.num_hidden_layers,
        num_attention_heads: raw.num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: raw.rms_norm_eps,
        rope_theta,
        rope_scaling,
        max_position_embeddings: raw.max_position_embeddings,
        // transformers' default is to tie, except where a model class says otherwise.
        tie_word_embeddings: raw
            .tie_word_embeddings
            .unwrap_or(!matches!(architecture, Architecture::Llama)),
        qkv_bias: is_qwen2 || raw.attention_bias,
        o_bias: !is_qwen2 && raw.attention_bias,
        mlp_bias: !is_qwen2 && raw.mlp_bias,
        sliding_windows,
        eos_token_ids: raw.eos_token_id.map(TokenIds::into_vec).unwrap_or_default(),
    })
}

fn architecture(raw: &RawConfig, path: &Path) -> Result<Architecture, Error> {
    let by_class = raw.architectures.iter().find_map(|name| match name.as_str() {
        "LlamaForCausalLM" => Some(Architecture::Llama),
        "MistralForCausalLM" => Some(Architecture::Mistral),
        "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
        _ => None,
    });
    let by_type = match raw.model_type.as_deref() {
        Some("llama") => Some(Architecture::Llama),
        Some("mistral") => Some(Architecture::Mistral),
        Some("qwen2") => Some(Architecture::Qwen2),
        _ => None,
    };
    by_class.or(by_type).ok_or_else(|| {
        config_error(
            path,
            "architectures",
            format!(
                "is {:?} (model_type {:?}); supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM",
                raw.architectures, raw.model_type
            ),
        )
    })
}

/// `rope_theta` and the scaling rule, from transformers 5's `rope_parameters` or transformers 4's `rope_theta` +
/// `rope_scaling`.
fn rope(raw: &RawConfig, path: &Path) -> Result<(f64, RopeScaling), Error> {
    let (field, parameters) = match (&raw.rope_parameters, &raw.rope_scaling) {
        (Some(parameters), _) => ("rope_parameters", Some(parameters)),
        (None, scaling) => ("rope_scaling", scaling.as_ref()),
    };
    let parameters = parameters.filter(|value| !value.is_null());
    let number = |key: &str| -> Result<Option<f64>, Error> {
        match parameters.and_then(|p| p.get(key)) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| config_error(path, &format!("{field}.{key}"), "must be a number")),
        }
    };
    let theta = number("rope_theta")?.or(raw.rope_theta).unwrap_or(10_000.0);
    let kind = parameters
        .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
        .and_then(|kind| kind.as_str())
        .unwrap_or("default");
    let scaling = match kind {
        "default" => RopeScaling::None,
        "llama3" => {
            let required = |key: &str| {
                number(key)?.ok_or_else(|| config_error(path, &format!("{field}.{key}"), "is required for llama3 rope"))
            };
            RopeScaling::Llama3 {
                factor: required("factor")?,
                low_freq_factor: required("low_freq_factor")?,
                high_freq_factor: required("high_freq_factor")?,
                original_max_position_embeddings: number("original_max_position_embeddings")?
                    .unwrap_or(raw.max_position_embeddings as f64),
            }
        }
        other => {
            return Err(config_error(
                path,
                &format!("{field}.rope_type"),
                format!("is {other:?}; supported: \"default\", \"llama3\""),
            ))
        }
    };
    Ok((theta, scaling))
}

/// Which layers use windowed attention: transformers 5 lists `layer_types`; before that, Mistral windows every layer
/// and Qwen2 the layers from `max_window_layers` on when `use_sliding_window` is set.
fn sliding_windows(raw: &RawConfig, architecture: Architecture, path: &Path) -> Result<Vec<Option<usize>>, Error> {
    let layers = raw.num_hidden_layers;
    let window = || {
        raw.sliding_window.filter(|w| *w > 0).ok_or_else(|| {
            config_error(
                path,
                "sliding_window",
                "must be a positive number for sliding attention",
            )
        })
    };
    if let Some(types) = &raw.layer_types {
        if types.len() != layers {
            return Err(config_error(path, "layer_types", "must list one type per hidden layer"));
        }
        return types
            .iter()
            .map(|kind| match kind.as_str() {
                "full_attention" => Ok(None),
                "sliding_attention" => window().map(Some),
                other => Err(config_error(path, "layer_types", format!("has unsupported {other:?}"))),
            })
            .collect();
    }
    Ok(match architecture {
        Architecture::Qwen2 if raw.use_sliding_window == Some(true) => {
            let first = raw.max_window_layers.unwrap_or(layers);
            (0..layers)
                .map(|layer| if layer >= first { window().map(Some) } else { Ok(None) })
                .collect::<Result<_, _>>()?
        }
        Architecture::Qwen2 => vec![None; layers],
        _ => vec![raw.sliding_window.filter(|w| *w > 0); layers],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DecoderConfig, Error> {
        resolve(serde_json::from_str(json).unwrap(), Path::new("config.json"))
    }

    const BASE: &str = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 2"#;

    #[test]
    fn reads_transformers_4_rope_scaling_and_eos_lists() {
        let config = parse(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "rope_theta": 500000.0, "eos_token_id": [5, 7],
            "rope_scaling": {{"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}}}"#
        ))
        .unwrap();
        assert_eq!(config.rope_theta, 500000.0);
        assert!(matches!(config.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(config.eos_token_ids, vec![5, 7]);
        assert_eq!(config.num_key_value_heads, 2);
        assert_eq!(config.head_dim, 4);
        assert!(!config.tie_word_embeddings);
    }

    #[test]
    fn qwen2_windows_only_from_max_window_layers() {
        let config = parse(&format!(
            r#"{{"model_type": "qwen2", {BASE}, "use_sliding_window": true, "sliding_window": 4,
            "max_window_layers": 1}}"#
        ))
        .unwrap();
        assert_eq!(config.sliding_windows, vec![None, Some(4)]);
        assert!(config.qkv_bias && !config.o_bias);
    }

    #[test]
    fn unsupported_settings_name_the_field() {
        let err = parse(&format!(r#"{{"model_type": "gpt2", {BASE}}}"#)).unwrap_err();
        assert!(
            matches!(&err, Error::Config { field, .. } if field == "architectures"),
            "{err}"
        );
        let err = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_parameters": {{"rope_type": "yarn", "rope_theta": 1.0}}}}"#
        ))
        .unwrap_err();
        assert!(
            matches!(&err, Error::Config { field, problem, .. }
                if field == "rope_parameters.rope_type" && problem.contains("yarn")),
            "{err}"
        );
    }
}
