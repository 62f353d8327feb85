//! Hugging Face chat templates, rendered as transformers' `apply_chat_template(..., tokenize=False)` renders them.
//!
//! A chat model's folder says how a conversation becomes the model's prompt text: a Jinja template, either in
//! `tokenizer_config.json` (`chat_template`: one string, or a list of `{name, template}` such as `default` and
//! `tool_use`) or, as newer transformers write it, in `chat_template.jinja` (with further named templates in
//! `additional_chat_templates/*.jinja`); the files win over the config entry. We run the template with minijinja,
//! set up to behave like transformers' Jinja2 environment:
//!
//! - `trim_blocks` and `lstrip_blocks` on, the template's final newline dropped (Jinja2's default);
//! - the template sees `messages`, `tools` (the list, or `none` when no tools are given), `documents` (`none`),
//!   `add_generation_prompt`, the special tokens of the folder (`bos_token`, `eos_token`, `unk_token`, `pad_token`,
//!   ...), `raise_exception(message)` and `strftime_now(format)`;
//! - `tojson` is Python's `json.dumps` with transformers' defaults (`", "` and `": "` separators, `","` between
//!   items once `indent` is given, non-ASCII kept, no HTML escaping), including `indent`, `separators`, `sort_keys`
//!   and `ensure_ascii`;
//! - values print as Python prints them (`None`, `True`, `['a', 1]`, `1e-05`), and Python's string, dict and list
//!   methods (`.strip()`, `.split()`, `.items()`, ...) come from minijinja-contrib's `pycompat`;
//! - `{% generation %}...{% endgeneration %}` (transformers' assistant-mask tag) renders its body unchanged.
//!
//! Messages are prepared the way transformers prepares them: keys whose value is `null` are dropped, and a message
//! with `reasoning_content`, `thinking` or `reasoning` gets the first of them under both `thinking` and
//! `reasoning_content`. One step goes beyond transformers, as vLLM does: a tool call's `function.arguments` given as
//! a JSON string (the OpenAI wire format) is parsed into the object that templates expect; otherwise templates
//! would print it as a quoted string.

mod environment;
mod error;
mod files;
mod messages;
mod repr;
mod strftime;
#[cfg(test)]
mod tests;
mod tojson;

use std::path::Path;

use minijinja::value::Value;
use minijinja::Environment;
use serde_json::{Map, Value as Json};

pub use error::ChatTemplateError;

use environment::{error_message, jinja2_like_environment, render_error, to_value, without_generation_tags};
use files::{config_templates, read_optional_json_object, special_token, template_files};
use messages::prepare_messages;

/// The special tokens transformers hands to every template (its `SPECIAL_TOKENS_ATTRIBUTES`).
const SPECIAL_TOKENS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// One template of a model, compiled into the environment under `name`.
#[derive(Debug, Clone)]
struct Named {
    name: String,
    /// Where the text came from, for error messages: a file, or a field of `tokenizer_config.json`.
    origin: String,
}

/// A model's chat template(s) with its special tokens, ready to render conversations.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    templates: Vec<Named>,
    /// `(name, token)` for each special token the folder declares, in [`SPECIAL_TOKENS`] order.
    special_tokens: Vec<(String, String)>,
}

impl ChatTemplate {
    /// Reads the chat template of a Hugging Face model folder: `chat_template.jinja` and
    /// `additional_chat_templates/*.jinja` when present, else `chat_template` in `tokenizer_config.json`; the
    /// special tokens come from `tokenizer_config.json`, completed by `special_tokens_map.json`. `Ok(None)` when the
    /// folder has no chat template (a base model).
    pub fn from_model_dir(dir: &Path) -> Result<Option<ChatTemplate>, ChatTemplateError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = read_optional_json_object(&config_path)?;
        let mut sources = template_files(dir)?;
        if sources.is_empty() {
            if let Some(config) = &config {
                sources = config_templates(&config_path, config)?;
            }
        }
        if sources.is_empty() {
            return Ok(None);
        }
        let mut special_tokens = Vec::new();
        let map_path = dir.join("special_tokens_map.json");
        let special_map = read_optional_json_object(&map_path)?;
        for key in SPECIAL_TOKENS {
            let declared = match config.as_ref().and_then(|config| config.get(key)) {
                Some(value) => special_token(&config_path, key, value)?,
                None => None,
            };
            let declared = match (declared, special_map.as_ref().and_then(|map| map.get(key))) {
                (Some(token), _) => Some(token),
                (None, Some(value)) => special_token(&map_path, key, value)?,
                (None, None) => None,
            };
            if let Some(token) = declared {
                special_tokens.push((key.to_string(), token));
            }
        }
        ChatTemplate::build(sources, special_tokens).map(Some)
    }

    /// A template given as text, with the tokens it may print as `bos_token` and `eos_token`.
    pub fn from_str(
        template: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        let special_tokens = [("bos_token", bos_token), ("eos_token", eos_token)]
            .into_iter()
            .filter_map(|(name, token)| Some((name.to_string(), token?.to_string())))
            .collect();
        let source = (
            "default".to_string(),
            template.to_string(),
            "the chat template".to_string(),
        );
        ChatTemplate::build(vec![source], special_tokens)
    }

    fn build(
        sources: Vec<(String, String, String)>,
        special_tokens: Vec<(String, String)>,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = jinja2_like_environment();
        let mut templates = Vec::new();
        for (name, text, origin) in sources {
            env.add_template_owned(name.clone(), without_generation_tags(&text))
                .map_err(|error| ChatTemplateError::Syntax {
                    origin: origin.clone(),
                    line: error.line().unwrap_or(0),
                    message: error_message(&error),
                })?;
            templates.push(Named { name, origin });
        }
        Ok(ChatTemplate {
            env,
            templates,
            special_tokens,
        })
    }

    /// The declared special token `name` (`bos_token`, `eos_token`, ...).
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.special_tokens
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, token)| token.as_str())
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.special_token("bos_token")
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.special_token("eos_token")
    }

    /// The names of the templates (`default`, `tool_use`, ...).
    pub fn template_names(&self) -> Vec<&str> {
        self.templates.iter().map(|named| named.name.as_str()).collect()
    }

    /// Renders a conversation: `messages` in the OpenAI chat shape (`role`, `content`, `tool_calls` as
    /// `{id, type: "function", function: {name, arguments}}`, `tool_call_id`), `tools` as OpenAI function schemas
    /// (`{type: "function", function: {name, description, parameters}}`; `None` renders as `tools=None`), and
    /// `add_generation_prompt` to end with the header that starts the assistant's reply.
    pub fn render(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        self.render_with(messages, tools, add_generation_prompt, &Map::new())
    }

    /// [`render`](Self::render) with extra variables for templates that read them (`enable_thinking`,
    /// `date_string`, ...); they take precedence over the special tokens, as in transformers.
    pub fn render_with(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
        extra: &Map<String, Json>,
    ) -> Result<String, ChatTemplateError> {
        let named = self.pick(tools.is_some())?;
        let messages = prepare_messages(messages).map_err(|problem| ChatTemplateError::Input {
            origin: named.origin.clone(),
            problem,
        })?;
        let mut context: Vec<(String, Value)> = self
            .special_tokens
            .iter()
            .map(|(name, token)| (name.clone(), Value::from(token.as_str())))
            .collect();
        for (name, value) in extra {
            context.retain(|(existing, _)| existing != name);
            context.push((name.clone(), to_value(value)));
        }
        context.push(("messages".into(), messages.iter().map(to_value).collect()));
        context.push((
            "tools".into(),
            tools.map_or(Value::from(()), |tools| tools.iter().map(to_value).collect()),
        ));
        context.push(("documents".into(), Value::from(())));
        context.push(("add_generation_prompt".into(), Value::from(add_generation_prompt)));
        let template = self
            .env
            .get_template(&named.name)
            .map_err(|error| render_error(&named.origin, &error))?;
        template
            .render(Value::from_pairs(context))
            .map_err(|error| render_error(&named.origin, &error))
    }

    /// The template transformers' `get_chat_template` would pick: the only one, else `tool_use` when tools are
    /// given and it exists, else `default`.
    fn pick(&self, with_tools: bool) -> Result<&Named, ChatTemplateError> {
        let find = |name: &str| self.templates.iter().find(|named| named.name == name);
        if let [only] = self.templates.as_slice() {
            if only.name == "default" {
                return Ok(only);
            }
        }
        let chosen = if with_tools { find("tool_use") } else { None };
        chosen
            .or_else(|| find("default"))
            .ok_or_else(|| ChatTemplateError::Input {
                origin: self.templates[0].origin.clone(),
                problem: format!(
                    "the model has several chat templates ({}) and none is named \"default\"",
                    self.template_names().join(", ")
                ),
            })
    }
}
