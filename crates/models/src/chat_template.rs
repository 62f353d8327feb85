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

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use knowhow_core::time::civil_from_days;
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind};
use serde_json::{Map, Value as Json};

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

/// Names under which transformers accepts a message's reasoning; the first present one is copied to
/// `thinking` and `reasoning_content`.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// Why a chat template could not be loaded or rendered. Messages name the file the template came from and, for
/// template errors, the line of the template.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("{} is not valid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },

    #[error("{}: `{field}` {problem}", path.display())]
    Config {
        path: PathBuf,
        field: String,
        problem: String,
    },

    /// The template text does not parse.
    #[error("{origin}, template line {line}: {message}; fix the template or pass another one")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },

    /// The template failed while rendering (an undefined value used, a type error).
    #[error("{origin}, template line {line}: {message}")]
    Render {
        origin: String,
        line: usize,
        message: String,
    },

    /// The template itself refused the conversation with `raise_exception(...)`, e.g. roles that do not
    /// alternate.
    #[error("{origin}, template line {line}: the chat template refused the conversation: {message}")]
    Raised {
        origin: String,
        line: usize,
        message: String,
    },

    /// The input is not what templates take (a message that is not a JSON object, no template for the request).
    #[error("{origin}: {problem}")]
    Input { origin: String, problem: String },
}

/// One template of a model, compiled into the environment under `name`.
#[derive(Debug, Clone)]
struct Named {
    name: String,
    /// Where the text came from, for error messages: a file, or a field of `tokenizer_config.json`.
    origin: String,
}

/// A model's chat template(s) with its special tokens, ready to render conversations.
#[derive(Debug)]
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
            .map_err(|error| render_error(named, &error))?;
        template
            .render(Value::from_pairs(context))
            .map_err(|error| render_error(named, &error))
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

/// A minijinja environment configured like transformers' `ImmutableSandboxedEnvironment`.
fn jinja2_like_environment() -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(false)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        out.write_str(&python_str(value))?;
        Ok(())
    });
    env.add_filter("tojson", tojson);
    env.add_filter("string", |value: Value| python_str(&value));
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

/// A JSON value as a template value; objects keep their key order.
fn to_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::from(()),
        Json::Bool(flag) => Value::from(*flag),
        Json::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(integer), _, _) => Value::from(integer),
            (None, Some(integer), _) => Value::from(integer),
            (None, None, Some(float)) => Value::from(float),
            (None, None, None) => Value::from(number.to_string()),
        },
        Json::String(text) => Value::from(text.as_str()),
        Json::Array(items) => items.iter().map(to_value).collect(),
        Json::Object(fields) => Value::from_pairs(fields.iter().map(|(key, value)| (key.as_str(), to_value(value)))),
    }
}

/// Marks an error as the template's own `raise_exception`, so that it is reported as a refusal.
#[derive(Debug)]
struct RaisedByTemplate;

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raised by the template")
    }
}

impl std::error::Error for RaisedByTemplate {}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message).with_source(RaisedByTemplate))
}

fn render_error(named: &Named, error: &minijinja::Error) -> ChatTemplateError {
    let origin = named.origin.clone();
    let line = error.line().unwrap_or(0);
    let raised = std::error::Error::source(error).is_some_and(|source| source.is::<RaisedByTemplate>());
    if raised {
        let message = error.detail().unwrap_or_default().to_string();
        return ChatTemplateError::Raised { origin, line, message };
    }
    let message = error_message(error);
    ChatTemplateError::Render { origin, line, message }
}

/// The error's kind and detail, without minijinja's own location suffix (the caller names file and line).
fn error_message(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    }
}

/// Rewrites transformers' `{% generation %}` / `{% endgeneration %}` (which only mark assistant text for training
/// masks) as `{% if true %}` / `{% endif %}`, keeping their whitespace-control markers, so the body renders as is.
fn without_generation_tags(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match generation_tag(tag) {
            Some((length, replacement)) => {
                out.push_str(&replacement);
                rest = &tag[length..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// For a `tag` starting with `{%`: when it is a whole `generation` or `endgeneration` tag, its length and the
/// equivalent `if`/`endif` tag.
fn generation_tag(tag: &str) -> Option<(usize, String)> {
    let after_open = &tag[2..];
    let open_marker = after_open.chars().next().filter(|c| *c == '-' || *c == '+');
    let body = &after_open[open_marker.map_or(0, char::len_utf8)..];
    let word_start = body.len() - body.trim_start().len();
    let word_len = body[word_start..]
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(body.len() - word_start);
    let keyword = match &body[word_start..word_start + word_len] {
        "generation" => "if true",
        "endgeneration" => "endif",
        _ => return None,
    };
    let after_word = &body[word_start + word_len..];
    let closing = after_word.trim_start();
    let close_marker = closing.chars().next().filter(|c| *c == '-' || *c == '+');
    let close = &closing[close_marker.map_or(0, char::len_utf8)..];
    if !close.starts_with("%}") {
        return None;
    }
    let length = tag.len() - close.len() + 2;
    let marker = |m: Option<char>| m.map(String::from).unwrap_or_default();
    Some((
        length,
        format!("{{%{} {keyword} {}%}}", marker(open_marker), marker(close_marker)),
    ))
}

/// The messages as transformers hands them to the template (see the module documentation).
fn prepare_messages(messages: &[Json]) -> Result<Vec<Json>, String> {
    messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let Json::Object(fields) = message else {
                return Err(format!("message {index} is not a JSON object: {message}"));
            };
            let mut fields: Map<String, Json> = fields
                .iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            if let Some(Json::Array(calls)) = fields.get_mut("tool_calls") {
                calls.iter_mut().for_each(parse_string_arguments);
            }
            Ok(Json::Object(alias_reasoning(fields)))
        })
        .collect()
}

/// `{"function": {"arguments": "{\"a\": 1}"}}` → `{"function": {"arguments": {"a": 1}}}`, when the string is a
/// JSON object; anything else stays as it is.
fn parse_string_arguments(call: &mut Json) {
    let Some(arguments) = call.pointer_mut("/function/arguments") else {
        return;
    };
    if let Json::String(text) = arguments {
        if let Ok(parsed @ Json::Object(_)) = serde_json::from_str::<Json>(text) {
            *arguments = parsed;
        }
    }
}

/// transformers' `_alias_reasoning_fields`: `{"thinking": r, **message, "reasoning_content": r}`.
fn alias_reasoning(fields: Map<String, Json>) -> Map<String, Json> {
    let Some(reasoning) = REASONING_FIELDS.iter().find_map(|key| fields.get(*key)).cloned() else {
        return fields;
    };
    let mut aliased = Map::new();
    aliased.insert("thinking".into(), reasoning.clone());
    aliased.extend(fields);
    aliased.insert("reasoning_content".into(), reasoning);
    aliased
}

/// `chat_template.jinja` (as `default`) and `additional_chat_templates/NAME.jinja`, as `(name, text, origin)`.
fn template_files(dir: &Path) -> Result<Vec<(String, String, String)>, ChatTemplateError> {
    let mut files = Vec::new();
    let main = dir.join("chat_template.jinja");
    if main.is_file() {
        files.push(("default".to_string(), main));
    }
    let extra_dir = dir.join("additional_chat_templates");
    if extra_dir.is_dir() {
        let entries = std::fs::read_dir(&extra_dir).map_err(|source| ChatTemplateError::Read {
            path: extra_dir.clone(),
            source,
        })?;
        let mut extra = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| ChatTemplateError::Read {
                    path: extra_dir.clone(),
                    source,
                })?
                .path();
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            if let Some(stem) = name.strip_suffix(".jinja") {
                extra.push((stem.to_string(), path.clone()));
            }
        }
        extra.sort();
        files.extend(extra);
    }
    files
        .into_iter()
        .map(|(name, path)| {
            let text = std::fs::read_to_string(&path).map_err(|source| ChatTemplateError::Read {
                path: path.clone(),
                source,
            })?;
            Ok((name, text, path.display().to_string()))
        })
        .collect()
}

/// `chat_template` of `tokenizer_config.json`: a string, or a list of `{"name", "template"}`.
fn config_templates(
    path: &Path,
    config: &Map<String, Json>,
) -> Result<Vec<(String, String, String)>, ChatTemplateError> {
    let problem = |problem: &str| ChatTemplateError::Config {
        path: path.to_owned(),
        field: "chat_template".into(),
        problem: problem.into(),
    };
    match config.get("chat_template") {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::String(text)) => Ok(vec![(
            "default".to_string(),
            text.clone(),
            format!("{} (`chat_template`)", path.display()),
        )]),
        Some(Json::Array(entries)) => entries
            .iter()
            .map(|entry| {
                let name = entry.get("name").and_then(Json::as_str);
                let template = entry.get("template").and_then(Json::as_str);
                match (name, template) {
                    (Some(name), Some(template)) => Ok((
                        name.to_string(),
                        template.to_string(),
                        format!("{} (`chat_template` named {name:?})", path.display()),
                    )),
                    _ => Err(problem("has an entry without a string `name` and `template`")),
                }
            })
            .collect(),
        Some(_) => Err(problem(
            "must be a template string or a list of {\"name\", \"template\"} objects",
        )),
    }
}

/// A special token written as a string or as a serialized `AddedToken` (`{"content": "<s>", ...}`).
fn special_token(path: &Path, key: &str, value: &Json) -> Result<Option<String>, ChatTemplateError> {
    match value {
        Json::Null => Ok(None),
        Json::String(token) => Ok(Some(token.clone())),
        Json::Object(fields) => match fields.get("content") {
            Some(Json::String(token)) => Ok(Some(token.clone())),
            _ => Err(ChatTemplateError::Config {
                path: path.to_owned(),
                field: key.into(),
                problem: "is an object without a string `content`".into(),
            }),
        },
        _ => Err(ChatTemplateError::Config {
            path: path.to_owned(),
            field: key.into(),
            problem: "must be a string or an AddedToken object".into(),
        }),
    }
}

fn read_optional_json_object(path: &Path) -> Result<Option<Map<String, Json>>, ChatTemplateError> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|source| ChatTemplateError::Read {
        path: path.to_owned(),
        source,
    })?;
    let json: Json = serde_json::from_slice(&bytes).map_err(|source| ChatTemplateError::Json {
        path: path.to_owned(),
        source,
    })?;
    match json {
        Json::Object(map) => Ok(Some(map)),
        _ => Err(ChatTemplateError::Config {
            path: path.to_owned(),
            field: "(top level)".into(),
            problem: "must be a JSON object".into(),
        }),
    }
}

/// Python's `str(value)`, which Jinja2 uses to print a value.
fn python_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        _ => python_repr(value),
    }
}

/// Python's `repr(value)`: how values look inside printed lists and dicts.
fn python_repr(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.into(),
        ValueKind::Number if value.is_integer() => value.to_string(),
        ValueKind::Number => match f64::try_from(value.clone()) {
            Ok(number) => python_float(number, false),
            Err(_) => value.to_string(),
        },
        ValueKind::String => python_string_repr(value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<String> = value
                .try_iter()
                .map(|items| items.map(|item| python_repr(&item)).collect())
                .unwrap_or_default();
            if value.is_tuple() {
                match items.as_slice() {
                    [one] => format!("({one},)"),
                    _ => format!("({})", items.join(", ")),
                }
            } else {
                format!("[{}]", items.join(", "))
            }
        }
        ValueKind::Map => {
            let items: Vec<String> = value
                .try_iter()
                .map(|keys| {
                    keys.map(|key| {
                        let item = value.get_item(&key).unwrap_or_default();
                        format!("{}: {}", python_repr(&key), python_repr(&item))
                    })
                    .collect()
                })
                .unwrap_or_default();
            format!("{{{}}}", items.join(", "))
        }
        _ => value.to_string(),
    }
}

/// Python's `repr(str)`: single quotes unless the text has a single quote and no double quote.
fn python_string_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr(float)` (shortest digits that round-trip; exponent form below 1e-4 and from 1e16), or with
/// `json` set, what `json.dumps` writes for it (`NaN`, `Infinity` rather than `nan`, `inf`).
fn python_float(number: f64, json: bool) -> String {
    if number.is_nan() {
        return if json { "NaN" } else { "nan" }.into();
    }
    if number.is_infinite() {
        let sign = if number < 0.0 { "-" } else { "" };
        return format!("{sign}{}", if json { "Infinity" } else { "inf" });
    }
    let scientific = format!("{number:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("`{:e}` writes an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits = mantissa.replace('.', "");
    if !(-4..16).contains(&exponent) {
        let fraction = if digits.len() > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{}{fraction}e{exponent_sign}{:02}", &digits[..1], exponent.abs());
    }
    if exponent < 0 {
        let zeros = "0".repeat((-exponent - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let integer_digits = exponent as usize + 1;
    if digits.len() <= integer_digits {
        let zeros = "0".repeat(integer_digits - digits.len());
        format!("{sign}{digits}{zeros}.0")
    } else {
        format!("{sign}{}.{}", &digits[..integer_digits], &digits[integer_digits..])
    }
}

/// How `json.dumps` lays out its output.
struct JsonLayout {
    /// `Some(unit)`: one item per line, indented by `unit` per level.
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, which is
/// `json.dumps` with those arguments.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(unit) if unit.is_none() => None,
        Some(unit) => match (unit.as_i64(), unit.as_str()) {
            (Some(spaces), _) => Some(" ".repeat(spaces.max(0) as usize)),
            (None, Some(text)) => Some(text.to_string()),
            _ => return Err(invalid("tojson: `indent` must be an integer or a string")),
        },
    };
    let (item_separator, key_separator) = match kwargs.get::<Option<Value>>("separators")? {
        Some(pair) if !pair.is_none() => {
            let parts: Vec<String> = pair
                .try_iter()?
                .map(|part| part.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| invalid("tojson: `separators` must be two strings"))?;
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => (item, key),
                Err(_) => return Err(invalid("tojson: `separators` must be two strings")),
            }
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let layout = JsonLayout {
        indent,
        item_separator,
        key_separator,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, &layout, 0)?;
    Ok(Value::from_safe_string(out))
}

fn invalid(message: &str) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, message.to_string())
}

fn write_json(out: &mut String, value: &Value, layout: &JsonLayout, level: usize) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => {
            let _ = write!(out, "{value}");
        }
        ValueKind::Number => {
            let number = f64::try_from(value.clone())?;
            out.push_str(&python_float(number, true));
        }
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or_default(), layout.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_json_container(out, ('[', ']'), &items, layout, level, |out, item, level| {
                write_json(out, item, layout, level)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if layout.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_json_container(out, ('{', '}'), &entries, layout, level, |out, (key, item), level| {
                write_json_string(out, key, layout.ensure_ascii);
                out.push_str(&layout.key_separator);
                write_json(out, item, layout, level)
            })?;
        }
        kind => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of type {kind} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// Writes `items` between `brackets` the way Python's encoder does: `[]` when empty, else on one line or, with an
/// indent, one item per line.
fn write_json_container<T>(
    out: &mut String,
    brackets: (char, char),
    items: &[T],
    layout: &JsonLayout,
    level: usize,
    mut write_item: impl FnMut(&mut String, &T, usize) -> Result<(), minijinja::Error>,
) -> Result<(), minijinja::Error> {
    out.push(brackets.0);
    if items.is_empty() {
        out.push(brackets.1);
        return Ok(());
    }
    let newline = |level: usize| layout.indent.as_ref().map(|unit| format!("\n{}", unit.repeat(level)));
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push_str(&layout.item_separator);
        }
        if let Some(newline) = newline(level + 1) {
            out.push_str(&newline);
        }
        write_item(out, item, level + 1)?;
    }
    if let Some(newline) = newline(level) {
        out.push_str(&newline);
    }
    out.push(brackets.1);
    Ok(())
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers, booleans and `None` as their JSON text.
fn json_key(key: &Value) -> Result<String, minijinja::Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::None => Ok("null".into()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::Number if key.is_integer() => Ok(key.to_string()),
        ValueKind::Number => Ok(python_float(f64::try_from(key.clone())?, true)),
        kind => Err(invalid(&format!("tojson: keys must be strings, not {kind}"))),
    }
}

/// A JSON string as Python writes it: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, other control characters as
/// `\u00XX`; with `ensure_ascii`, everything past ASCII as `\uXXXX` (UTF-16 surrogate pairs past the BMP).
fn write_json_string(out: &mut String, text: &str, ensure_ascii: bool) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// transformers' `strftime_now(format)`: the current time formatted like Python's `strftime`. The time is UTC
/// (transformers uses the machine's local time, which is UTC on most servers and containers).
fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    strftime(&format, seconds)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats the UTC time `unix_seconds` with the `strftime` directives chat templates use: `%Y %y %m %B %b %d %e
/// %j %A %a %H %I %M %S %p %Z %z %%`, and glibc's `%-d`, `%-m`, `%-H`, `%-I`, `%-M`, `%-S`, `%-j` without padding.
fn strftime(format: &str, unix_seconds: i64) -> Result<String, minijinja::Error> {
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday (Monday = 0).
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut directive = chars.next();
        let unpadded = directive == Some('-');
        if unpadded {
            directive = chars.next();
        }
        let number = |value: i64, width: usize| {
            if unpadded {
                value.to_string()
            } else {
                format!("{value:0width$}")
            }
        };
        let text = match directive {
            Some('Y') => year.to_string(),
            Some('y') => number(year.rem_euclid(100), 2),
            Some('m') => number(month, 2),
            Some('B') => MONTHS[month as usize - 1].to_string(),
            Some('b') => MONTHS[month as usize - 1][..3].to_string(),
            Some('d') => number(day, 2),
            Some('e') => format!("{day:2}"),
            Some('j') => number(day_of_year, 3),
            Some('A') => WEEKDAYS[weekday].to_string(),
            Some('a') => WEEKDAYS[weekday][..3].to_string(),
            Some('H') => number(hour, 2),
            Some('I') => number(hour12, 2),
            Some('M') => number(minute, 2),
            Some('S') => number(second, 2),
            Some('p') => if hour < 12 { "AM" } else { "PM" }.to_string(),
            Some('Z') => "UTC".to_string(),
            Some('z') => "+0000".to_string(),
            Some('%') if !unpadded => "%".to_string(),
            other => {
                return Err(invalid(&format!(
                    "strftime_now: unsupported directive %{}{} in {format:?}",
                    if unpadded { "-" } else { "" },
                    other.map(String::from).unwrap_or_default()
                )))
            }
        };
        out.push_str(&text);
    }
    Ok(out)
}

/// (year, month, day) → days since 1970-01-01; the inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, messages: Json) -> Result<String, ChatTemplateError> {
        let template = ChatTemplate::from_str(template, Some("<s>"), Some("</s>"))?;
        template.render(messages.as_array().unwrap(), None, false)
    }

    #[test]
    fn floats_print_as_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (21.5, "21.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.125, "123456789.125"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (2.5e300, "2.5e+300"),
            (-3.25, "-3.25"),
        ];
        for (number, expected) in cases {
            assert_eq!(python_float(number, false), expected, "{number:e}");
        }
        assert_eq!(python_float(f64::NAN, true), "NaN");
        assert_eq!(python_float(f64::NEG_INFINITY, true), "-Infinity");
    }

    #[test]
    fn values_print_as_python_prints_them() {
        let out = render(
            "{{ messages[0].x }}|{{ messages[0].y }}|{{ none }}|{{ messages[0].z }}|{{ messages[0] }}",
            json!([{"x": true, "y": [1, "a'b", null, 2.0], "z": "plain"}]),
        )
        .unwrap();
        assert_eq!(
            out,
            "True|[1, \"a'b\", None, 2.0]|None|plain|{'x': True, 'y': [1, \"a'b\", None, 2.0], 'z': 'plain'}"
        );
    }

    #[test]
    fn tojson_follows_json_dumps_layout() {
        let messages = json!([{"a": {"k": [1, 2.5, "é<>&\"\n"], "e": {}, "l": []}}]);
        let out = render("{{ messages[0].a | tojson }}", messages.clone()).unwrap();
        assert_eq!(out, r#"{"k": [1, 2.5, "é<>&\"\n"], "e": {}, "l": []}"#);
        let out = render("{{ messages[0].a | tojson(indent=2) }}", messages.clone()).unwrap();
        assert_eq!(
            out,
            "{\n  \"k\": [\n    1,\n    2.5,\n    \"é<>&\\\"\\n\"\n  ],\n  \"e\": {},\n  \"l\": []\n}"
        );
        let out = render(
            "{{ messages[0].a | tojson(separators=(',', ':'), sort_keys=true, ensure_ascii=true) }}",
            messages,
        )
        .unwrap();
        assert_eq!(out, r#"{"e":{},"k":[1,2.5,"\u00e9<>&\"\n"],"l":[]}"#);
    }

    #[test]
    fn generation_tags_render_their_body() {
        let template = "{% for m in messages %}{%- generation -%}\n[{{ m.content }}]\n{%- endgeneration %}{% endfor %}";
        assert_eq!(without_generation_tags("{%- generation -%}"), "{%- if true -%}");
        assert_eq!(without_generation_tags("{% endgeneration %}x"), "{% endif %}x");
        assert_eq!(without_generation_tags("{% generations %}"), "{% generations %}");
        let out = render(template, json!([{"content": "a"}, {"content": "b"}])).unwrap();
        assert_eq!(out, "[a][b]");
    }

    #[test]
    fn messages_are_prepared_like_transformers_and_vllm() {
        let prepared = prepare_messages(&[json!({
            "role": "assistant",
            "content": null,
            "reasoning": "think",
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"b\": 1, \"a\": 2}"}},
                           {"id": "2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]
        })])
        .unwrap();
        let message = prepared[0].as_object().unwrap();
        let keys: Vec<&str> = message.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["thinking", "role", "reasoning", "tool_calls", "reasoning_content"]
        );
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            json!({"b": 1, "a": 2})
        );
        let first_key = message["tool_calls"][0]["function"]["arguments"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        assert_eq!(first_key, "b", "argument order must be kept");
        assert_eq!(message["tool_calls"][1]["function"]["arguments"], json!("not json"));
        assert!(prepare_messages(&[json!("hello")]).unwrap_err().contains("message 0"));
    }

    #[test]
    fn errors_name_the_origin_and_the_template_line() {
        let err = ChatTemplate::from_str("line one\n{% if %}", None, None).unwrap_err();
        assert!(matches!(err, ChatTemplateError::Syntax { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("template line 2"), "{err}");
        let err = render(
            "a\nb\n{{ raise_exception('roles must alternate') }}",
            json!([{"role": "user"}]),
        )
        .unwrap_err();
        assert!(matches!(err, ChatTemplateError::Raised { line: 3, .. }), "{err}");
        assert!(err.to_string().contains("roles must alternate"), "{err}");
        let err = render("{{ messages[0].content + 1 }}", json!([{"content": "x"}])).unwrap_err();
        assert!(matches!(err, ChatTemplateError::Render { line: 1, .. }), "{err}");
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
        let at = 1_721_999_109;
        assert_eq!(strftime("%d %b %Y", at).unwrap(), "26 Jul 2024");
        assert_eq!(
            strftime("%A %-d %B %y, %H:%M:%S %I%p %j %% %e", at).unwrap(),
            "Friday 26 July 24, 13:05:09 01PM 208 % 26"
        );
        assert_eq!(strftime("%Y-%m-%d %a", 0).unwrap(), "1970-01-01 Thu");
        assert_eq!(strftime("%Y-%m-%d", 951_782_400).unwrap(), "2000-02-29");
        assert!(strftime("%Q", at).is_err());
        for days in [-1000, 0, 59, 11_016, 20_000, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
