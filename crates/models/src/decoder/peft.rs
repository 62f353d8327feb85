//! Adapters in PEFT's folder format, so that Python's `PeftModel.from_pretrained` reads what knowhow trains and
//! knowhow reads what `save_pretrained` writes:
//!
//! - `adapter_config.json`: `peft_type` "LORA", `task_type` "CAUSAL_LM", `r`, `lora_alpha`, `lora_dropout`,
//!   `target_modules`, `use_rslora`, `bias` "none", ...
//! - `adapter_model.safetensors`: `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` (`[r, in]`) and
//!   `...lora_B.weight` (`[out, r]`) per adapted layer.
//!
//! [`merge_adapter`] writes base + adapter as one full model folder (`W' = W + scaling · B A`), as
//! `merge_and_unload` + `save_pretrained` would.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::Deserialize;
use serde_json::json;

use super::lora::{lora_scaling, Lora, LoraConfig, ALL_TARGETS};
use super::model::{check_lora_config, Decoder};
use super::weight_files;
use crate::error::{config_error, read_json, Error};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The fields of `adapter_config.json` that change the arithmetic; the others (revision, peft_version, ...) are
/// bookkeeping.
#[derive(Debug, Deserialize)]
struct AdapterConfig {
    peft_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f64,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    lora_bias: bool,
    bias: Option<String>,
    #[serde(default)]
    rank_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    alpha_pattern: BTreeMap<String, serde_json::Value>,
    modules_to_save: Option<Vec<String>>,
}

/// An adapter read from a folder: its settings and its factors by (layer, module path).
struct Adapter {
    config: LoraConfig,
    /// `((layer, "self_attn.q_proj"), (A, B))`, in PEFT's order.
    factors: Vec<((usize, String), (Tensor, Tensor))>,
}

/// Reads and checks a PEFT LoRA folder. Anything knowhow would silently compute differently (DoRA, per-module
/// ranks, bias training, extra saved modules) is refused with the field named.
fn read_adapter(dir: &Path) -> Result<Adapter, Error> {
    let config_path = dir.join(ADAPTER_CONFIG);
    let raw: AdapterConfig = read_json(&config_path)?;
    let refuse = |field: &str, problem: &str| Err(config_error(&config_path, field, problem));
    if raw.peft_type.as_deref().is_some_and(|kind| kind != "LORA") {
        return refuse("peft_type", "must be \"LORA\"; other PEFT methods are not supported");
    }
    if raw.use_dora {
        return refuse("use_dora", "is true; DoRA adapters are not supported");
    }
    if raw.fan_in_fan_out {
        return refuse(
            "fan_in_fan_out",
            "is true; only nn.Linear layouts (Llama, Mistral, Qwen2) are supported",
        );
    }
    if raw.lora_bias || raw.bias.as_deref().is_some_and(|bias| bias != "none") {
        return refuse("bias", "must be \"none\"; trained biases are not supported");
    }
    if !raw.rank_pattern.is_empty() || !raw.alpha_pattern.is_empty() {
        return refuse(
            "rank_pattern",
            "and alpha_pattern must be empty; per-module ranks are not supported",
        );
    }
    if raw.modules_to_save.as_ref().is_some_and(|modules| !modules.is_empty()) {
        return refuse(
            "modules_to_save",
            "must be empty; fully trained extra modules are not supported",
        );
    }
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(|source| Error::Weights {
        path: weights_path.clone(),
        source,
    })?;
    let mut pairs: BTreeMap<(usize, usize), (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (key, tensor) in tensors {
        let (layer, module, factor) = parse_key(&key).ok_or_else(|| {
            config_error(
                &weights_path,
                &key,
                "is not a LoRA factor of a decoder layer's q/k/v/o/gate/up/down projection",
            )
        })?;
        let entry = pairs.entry((layer, module)).or_default();
        let tensor = tensor.to_dtype(DType::F32)?;
        if factor == 'A' {
            entry.0 = Some(tensor);
        } else {
            entry.1 = Some(tensor);
        }
    }
    let mut factors = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for ((layer, module), pair) in pairs {
        let path = module_path(module);
        let (Some(a), Some(b)) = pair else {
            return Err(config_error(
                &weights_path,
                &format!("layers.{layer}.{path}"),
                "has only one of lora_A and lora_B",
            ));
        };
        let target = ALL_TARGETS[module].to_owned();
        if !targets.contains(&target) {
            targets.push(target);
        }
        factors.push(((layer, path), (a, b)));
    }
    if factors.is_empty() {
        return Err(config_error(&weights_path, "tensors", "holds no LoRA factors"));
    }
    targets.sort_by_key(|target| ALL_TARGETS.iter().position(|t| t == target));
    Ok(Adapter {
        config: LoraConfig {
            r: raw.r,
            alpha: raw.lora_alpha,
            dropout: raw.lora_dropout,
            targets,
            use_rslora: raw.use_rslora,
        },
        factors,
    })
}

/// `base_model.model.model.layers.3.mlp.down_proj.lora_B.weight` → `(3, index of down_proj, 'B')`. PEFT's in-memory
/// names (with `.default`) are accepted too.
fn parse_key(key: &str) -> Option<(usize, usize, char)> {
    let rest = key.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    let rest = rest.strip_suffix(".weight")?;
    let rest = rest.strip_suffix(".default").unwrap_or(rest);
    let (path, factor) = rest.rsplit_once(".lora_")?;
    let factor = match factor {
        "A" => 'A',
        "B" => 'B',
        _ => return None,
    };
    let module = ALL_TARGETS.iter().position(|target| module_path_of(target) == path)?;
    Some((layer, module, factor))
}

fn module_path_of(target: &str) -> String {
    let block = if ["gate_proj", "up_proj", "down_proj"].contains(&target) {
        "mlp"
    } else {
        "self_attn"
    };
    format!("{block}.{target}")
}

fn module_path(module: usize) -> String {
    module_path_of(ALL_TARGETS[module])
}

/// Attaches the adapter in `dir` (as written by `save_pretrained` or [`save_adapter`]) to `decoder`, replacing any
/// adapter it had. Its factors become trainable `Var`s, so training can resume from it.
pub fn load_adapter(decoder: &mut Decoder, dir: &Path) -> Result<(), Error> {
    let adapter = read_adapter(dir)?;
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let error = |source| Error::Weights {
        path: weights_path.clone(),
        source,
    };
    check_lora_config(&adapter.config).map_err(error)?;
    let scaling = adapter.config.scaling();
    decoder.remove_lora();
    for (index, ((layer, path), (a, b))) in adapter.factors.into_iter().enumerate() {
        if a.dim(0).map_err(error)? != adapter.config.r {
            return Err(config_error(
                &weights_path,
                &format!("layers.{layer}.{path}.lora_A"),
                format!(
                    "has rank {:?}, but adapter_config.json says r = {}",
                    a.dims(),
                    adapter.config.r
                ),
            ));
        }
        let lora = Lora::new(
            Var::from_tensor(&a).map_err(error)?,
            Var::from_tensor(&b).map_err(error)?,
            scaling,
            adapter.config.dropout,
            index as u64,
        );
        decoder.set_lora(layer, &path, lora).map_err(error)?;
    }
    decoder.set_lora_config(adapter.config);
    Ok(())
}

/// Writes `decoder`'s adapter as a PEFT folder (created if needed). `base_model_name_or_path` is recorded for
/// `PeftModel.from_pretrained` users (a Hub id or the base model's folder).
pub fn save_adapter(decoder: &Decoder, dir: &Path, base_model_name_or_path: &str) -> Result<(), Error> {
    let config = decoder.lora_config().ok_or_else(|| Error::Option {
        option: "adapter",
        problem: "the model has no LoRA adapter to save; call add_lora or load_adapter first".to_owned(),
    })?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })?;
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let tensors: HashMap<String, Tensor> = decoder
        .lora_vars()
        .into_iter()
        .map(|(key, var)| (key, var.as_detached_tensor()))
        .collect();
    candle_core::safetensors::save(&tensors, &weights_path).map_err(|source| Error::Weights {
        path: weights_path.clone(),
        source,
    })?;
    write_json(
        &dir.join(ADAPTER_CONFIG),
        &adapter_config_json(config, base_model_name_or_path),
    )
}

/// `adapter_config.json` with the fields (and defaults) peft 0.21 writes for a plain LoRA.
fn adapter_config_json(config: &LoraConfig, base_model_name_or_path: &str) -> serde_json::Value {
    json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base_model_name_or_path,
        "bias": "none",
        "exclude_modules": null,
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layer_replication": null,
        "layers_pattern": null,
        "layers_to_transform": null,
        "loftq_config": {},
        "lora_alpha": config.alpha,
        "lora_bias": false,
        "lora_dropout": config.dropout,
        "megatron_config": null,
        "megatron_core": "megatron.core",
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": config.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": config.targets,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": config.use_rslora,
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

/// Files of a model folder that a merged folder keeps as they are.
const COPIED_FILES: [&str; 8] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
];

/// Writes `out_dir` as a full model folder: the base weights of `base_dir` with the adapter of `adapter_dir` folded
/// in (`W + scaling · B A`, in f32, stored back in each weight's own dtype) as one `model.safetensors`, plus the
/// config and tokenizer files. The result loads anywhere a base model does, with no adapter support needed.
pub fn merge_adapter(base_dir: &Path, adapter_dir: &Path, out_dir: &Path) -> Result<(), Error> {
    if out_dir.exists() && same_folder(out_dir, base_dir) {
        return Err(Error::Option {
            option: "out_dir",
            problem: format!(
                "{} is the base model's folder; merge into a new folder",
                out_dir.display()
            ),
        });
    }
    let adapter = read_adapter(adapter_dir)?;
    let scaling = lora_scaling(adapter.config.alpha, adapter.config.r, adapter.config.use_rslora);
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for file in weight_files(base_dir)? {
        let tensors = candle_core::safetensors::load(&file, &Device::Cpu).map_err(|source| Error::Weights {
            path: file.clone(),
            source,
        })?;
        weights.extend(tensors);
    }
    for ((layer, path), (a, b)) in &adapter.factors {
        let key = format!("model.layers.{layer}.{path}.weight");
        let weight = weights.get(&key).ok_or_else(|| {
            config_error(
                &adapter_dir.join(ADAPTER_WEIGHTS),
                &key,
                format!("adapts a weight that {} does not have", base_dir.display()),
            )
        })?;
        let merged = (weight.to_dtype(DType::F32)? + (b.matmul(a)? * scaling)?)?.to_dtype(weight.dtype())?;
        weights.insert(key, merged);
    }
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Write {
        path: out_dir.to_owned(),
        source,
    })?;
    let weights_path = out_dir.join("model.safetensors");
    candle_core::safetensors::save(&weights, &weights_path).map_err(|source| Error::Weights {
        path: weights_path,
        source,
    })?;
    for name in COPIED_FILES {
        let from = base_dir.join(name);
        if from.is_file() {
            std::fs::copy(&from, out_dir.join(name)).map_err(|source| Error::Write {
                path: out_dir.join(name),
                source,
            })?;
        }
    }
    Ok(())
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peft_keys_saved_and_in_memory() {
        let q = ALL_TARGETS.iter().position(|t| *t == "q_proj").unwrap();
        let down = ALL_TARGETS.iter().position(|t| *t == "down_proj").unwrap();
        assert_eq!(
            parse_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"),
            Some((0, q, 'A'))
        );
        assert_eq!(
            parse_key("base_model.model.model.layers.12.mlp.down_proj.lora_B.default.weight"),
            Some((12, down, 'B'))
        );
        assert_eq!(parse_key("base_model.model.lm_head.lora_A.weight"), None);
        assert_eq!(
            parse_key("base_model.model.model.layers.0.mlp.q_proj.lora_A.weight"),
            None
        );
    }
}
