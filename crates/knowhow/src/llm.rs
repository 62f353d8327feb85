//! `--llm SPEC`: which chat model writes answers, and how it samples.

use std::path::Path;

use knowhow_rag::llm::local::LocalChatModel;
use knowhow_rag::llm::openai::{OpenAiChat, OpenAiChatConfig};
use knowhow_rag::llm::{ChatModel, GenerationOptions};

use crate::Context;

/// Sampling and model options shared by `ask` and `quickstart`.
#[derive(clap::Args, Clone)]
pub struct GenerationArgs {
    /// Most tokens in the answer (also reserved out of the model's context)
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_tokens: usize,
    /// Sampling temperature; 0 always takes the most likely token
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens up to this probability mass
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub top_p: f32,
    /// Seed for repeatable sampling
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Stop the answer before this text (repeatable)
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Context window of a remote model, in tokens (servers do not report it)
    #[arg(long, default_value_t = 8192, value_name = "TOKENS")]
    pub context_tokens: usize,
    /// Fine-tuned adapter for a local model: a name from `knowhow adapters list`, or a PEFT adapter folder
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
}

impl GenerationArgs {
    pub fn options(&self) -> GenerationOptions {
        GenerationOptions {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.clone(),
            ..GenerationOptions::default()
        }
    }

    /// The adapter as the audit log records it.
    pub fn adapter_name(&self) -> Option<String> {
        self.adapter.clone()
    }
}

/// The chat model `spec` names; `None` (or `extractive`) means no model: the
/// extractive answerer.
pub fn load(
    context: &Context,
    spec: Option<&str>,
    args: &GenerationArgs,
) -> anyhow::Result<Option<Box<dyn ChatModel + Send>>> {
    let Some(spec) = spec.filter(|s| !s.is_empty() && *s != "extractive") else {
        if args.adapter.is_some() {
            anyhow::bail!("--adapter needs a local model: add --llm local:MODEL_FOLDER");
        }
        return Ok(None);
    };
    if let Some(folder) = spec.strip_prefix("local:") {
        let adapter = args
            .adapter
            .as_deref()
            .map(|adapter| knowhow_tune::registry::resolve_adapter(context.home.root(), adapter))
            .transpose()?;
        let model = LocalChatModel::load(Path::new(folder), adapter.as_deref())?;
        return Ok(Some(Box::new(model)));
    }
    if args.adapter.is_some() {
        anyhow::bail!("--adapter needs a local model (--llm local:MODEL_FOLDER); a server applies its own adapters");
    }
    if spec.starts_with("openai:") {
        let mut config = OpenAiChatConfig::from_spec(spec)?;
        config.context_tokens = args.context_tokens;
        return Ok(Some(Box::new(OpenAiChat::new(config)?)));
    }
    anyhow::bail!("unknown --llm {spec:?}: use openai:BASE_URL#MODEL, local:MODEL_FOLDER or extractive")
}
