//! A tiny Llama, pre-trained from scratch in seconds, for demonstrations and tests where no pretrained LLM can be
//! downloaded: a dev-dependency only, never in the binary.
//!
//! The task is single-digit addition answered in words: the prompt `3+4` is rendered `<s>3+4=` and the answer
//! `seven` is followed by `</s>`. The tokenizer is character-level (printable ASCII plus `<unk> <pad> <s> </s>`),
//! the chat template is the one above, and every weight is trained ([`Decoder::new`] over a `VarMap`). [`pretrain`]
//! writes a complete Hugging Face folder (`config.json`, `model.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json` with the chat template) that `knowhow tune` and `knowhow eval tune` load like any other
//! base model.
//!
//! It is a crate of its own, apart from `knowhow-testkit`, because it links candle, `knowhow-models` and
//! `knowhow-tune`: only the tests that train a decoder pay for building them, not every test that needs the HTTP
//! server or an environment switch.
//!
//! ```no_run
//! use knowhow_testkit_tiny::{self as tiny, TinyOptions};
//!
//! let dir = std::env::temp_dir().join("tiny-base");
//! let report = tiny::pretrain(&dir, &tiny::addition_pairs(), &TinyOptions::default()).unwrap();
//! eprintln!("{} parameters, final loss {:.4}", report.parameters, report.final_loss);
//! // `dir` is now a base model folder, for `knowhow_tune::base::Base::load` or `knowhow tune --base DIR`.
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;

use knowhow_models::decoder::{Decoder, DecoderConfig};
use knowhow_tune::base::Base;
use knowhow_tune::batch::{batch_loss_sum, make_batches};
use knowhow_tune::data::{self, Conversation, Message, Row, Shape};
use knowhow_tune::error::TuneError;
use knowhow_tune::schedule::Warmup;
use knowhow_tune::train::{self, TrainConfig};

const SPECIALS: [&str; 4] = ["<unk>", "<pad>", "<s>", "</s>"];

/// `<s>PROMPT=ANSWER</s>`: the user turn ends with `=`, so the generation prompt adds nothing.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if message.role == 'user' %}{{ bos_token }}\
{{ message.content }}={% elif message.role == 'assistant' %}{{ message.content }}{{ eos_token }}{% endif %}\
{% endfor %}";

/// Sizes of the tiny model and its pre-training.
#[derive(Debug, Clone)]
pub struct TinyOptions {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub steps: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for TinyOptions {
    fn default() -> Self {
        TinyOptions {
            hidden_size: 64,
            intermediate_size: 128,
            layers: 2,
            heads: 4,
            steps: 400,
            lr: 1e-2,
            seed: 7,
        }
    }
}

/// What pre-training did.
#[derive(Debug, Clone)]
pub struct TinyReport {
    pub parameters: usize,
    pub steps: usize,
    pub final_loss: f64,
    pub elapsed: Duration,
}

const NUMBER_WORDS: [&str; 19] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
];

/// `(prompt, answer)` for every `a+b` with single digits `a` and `b`, in order; the answer is the sum in words
/// (`3+4` → `seven`), so a plain answer is never valid JSON.
pub fn addition_pairs() -> Vec<(String, String)> {
    (0..10usize)
        .flat_map(|a| (0..10usize).map(move |b| (format!("{a}+{b}"), NUMBER_WORDS[a + b].to_string())))
        .collect()
}

/// `{"answer": "WORD"}`: the format the adapter is to teach.
pub fn json_answer(word: &str) -> String {
    format!("{{\"answer\": \"{word}\"}}")
}

/// General knowledge the base gets besides the task, as a pretrained LLM knows JSON: `json:WORD` →
/// `{"answer": "WORD"}` for every number word. The base never sees an addition answered this way.
pub fn json_echo_pairs() -> Vec<(String, String)> {
    NUMBER_WORDS
        .iter()
        .map(|word| (format!("json:{word}"), json_answer(word)))
        .collect()
}

/// One JSONL line of prompt/completion.
pub fn jsonl_line(prompt: &str, completion: &str) -> String {
    json!({"prompt": prompt, "completion": completion}).to_string()
}

/// The character-level tokenizer as `tokenizer.json`.
pub fn tokenizer_json() -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    let printable = (0x20u8..0x7f).map(|b| (b as char).to_string());
    for (id, token) in SPECIALS.iter().map(|s| s.to_string()).chain(printable).enumerate() {
        vocab.insert(token, id.into());
    }
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(id, content)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "added_tokens": added,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "."}, "behavior": "Isolated", "invert": false},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
        "decoder": {"type": "Fuse"},
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), TuneError> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    std::fs::write(path, text).map_err(|source| TuneError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the folder's `config.json`, `tokenizer.json` and `tokenizer_config.json`; returns the model config.
fn write_folder_files(dir: &Path, options: &TinyOptions) -> Result<DecoderConfig, TuneError> {
    std::fs::create_dir_all(dir).map_err(|source| TuneError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let vocab_size = SPECIALS.len() + (0x7f - 0x20);
    write_json(
        &dir.join("config.json"),
        &json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": options.hidden_size,
            "intermediate_size": options.intermediate_size,
            "num_hidden_layers": options.layers,
            "num_attention_heads": options.heads,
            "num_key_value_heads": options.heads,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "max_position_embeddings": 64,
            "tie_word_embeddings": false,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "pad_token_id": 1,
        }),
    )?;
    write_json(&dir.join("tokenizer.json"), &tokenizer_json())?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"chat_template": CHAT_TEMPLATE, "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}),
    )?;
    Ok(DecoderConfig::from_file(&dir.join("config.json"))?)
}

/// Rows of a prompt/completion task, as the data module would parse them.
pub fn rows(pairs: &[(String, String)]) -> Vec<Row> {
    pairs
        .iter()
        .enumerate()
        .map(|(index, (prompt, completion))| Row {
            line: index + 1,
            shape: Shape::PromptCompletion,
            conversation: Conversation {
                messages: vec![Message::user(prompt.as_str()), Message::assistant(completion.as_str())],
            },
        })
        .collect()
}

/// Builds the tiny model in `dir` and trains every weight on `pairs` (`prompt`, `completion`), full batch, AdamW
/// with a cosine schedule; then saves `model.safetensors`.
pub fn pretrain(dir: &Path, pairs: &[(String, String)], options: &TinyOptions) -> Result<TinyReport, TuneError> {
    let config = write_folder_files(dir, options)?;
    let varmap = VarMap::new();
    let decoder = Decoder::new(config, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let mut params: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .expect("no thread panicked holding the var map")
        .iter()
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let parameters = params.iter().map(|(_, var)| var.elem_count()).sum();

    let tokenizer = knowhow_models::decoder::load_tokenizer(dir)?;
    let template = knowhow_models::ChatTemplate::from_str(CHAT_TEMPLATE, Some("<s>"), Some("</s>"))?;
    let render = |messages: &[Message], generation: bool| {
        let values: Vec<serde_json::Value> = messages.iter().map(Message::to_template_value).collect();
        template.render(&values, None, generation).map_err(|e| e.to_string())
    };
    let (encoded, _) = data::encode_rows(&rows(pairs), &render, &tokenizer, &data::EncodeOptions::default());
    let batches = make_batches(encoded, usize::MAX, 1);

    let scratch = dir.join(".pretrain");
    let train_config = TrainConfig {
        epochs: options.steps,
        lr: options.lr,
        warmup: Warmup::Ratio(0.05),
        max_grad_norm: Some(1.0),
        keep_checkpoints: Some(1),
        seed: options.seed,
        output_dir: scratch.clone(),
        ..TrainConfig::default()
    };
    let loss = |batch: &data::Batch, _training: bool| {
        let (sum, count) = batch_loss_sum(&decoder, batch)?;
        Ok(((sum / count.max(1) as f64)?, count))
    };
    let started = Instant::now();
    let report = train::train(&params, &batches, &[], &loss, &train_config, None, &mut |_| {})?;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&scratch);
    let weights = dir.join("model.safetensors");
    varmap
        .save(&weights)
        .map_err(|source| knowhow_models::Error::Weights { path: weights, source })?;
    Ok(TinyReport {
        parameters,
        steps: report.steps,
        final_loss: report.last_loss.unwrap_or(f64::NAN),
        elapsed,
    })
}

/// Greedy answers of `base` to each prompt, as plain text.
pub fn answers(base: &Base, prompts: &[&str]) -> Result<Vec<String>, TuneError> {
    let options = knowhow_models::decoder::GenerateOptions {
        max_new_tokens: 24,
        eos_token_ids: base.stop_ids(),
        ..Default::default()
    };
    prompts
        .iter()
        .map(|prompt| {
            let text = base
                .render(&[Message::user(*prompt)], true)
                .map_err(TuneError::Invalid)?;
            let ids = base
                .tokenizer
                .encode(text.as_str(), false)
                .map_err(|e| TuneError::Invalid(e.to_string()))?
                .get_ids()
                .to_vec();
            let generation =
                knowhow_models::decoder::generate(&base.decoder, &base.tokenizer, &ids, &options, &mut |_| {})?;
            Ok(generation.text)
        })
        .collect()
}
