//! A [`ChatModel`] that talks to any OpenAI-compatible chat server: vLLM, Ollama, llama.cpp's server, Text
//! Generation Inference, OpenAI itself.
//!
//! Each call POSTs `{base}/v1/chat/completions` with `stream: true` and `stream_options: {include_usage: true}`,
//! and reads the Server-Sent Events as they arrive: `delta.content` pieces go to `on_token` at once, `delta.tool_calls`
//! fragments are joined by their `index` (arguments concatenated), and the last `finish_reason` and `usage` are
//! kept. A server that ignores `stream` and answers one JSON `chat.completion` works too.
//!
//! Servers differ in small ways, and all of these are accepted: `role` only in the first delta; chunks with an empty
//! `choices` list (the usage chunk); `finish_reason` `null` until the end, absent, or TGI's `"eos"`; tool calls
//! without an `id` (one is generated) or without an `index` (a fragment with a new `id` starts a call, one without
//! continues the last); arguments sent as a JSON object rather than a string; `data:` with or without a space, CRLF
//! line ends, comments and keep-alives; events not separated by blank lines; a stream that ends at its
//! `finish_reason` without `[DONE]`.
//!
//! Failures before the first piece of text was handed to `on_token` (connection refused, timeouts, HTTP 408, 429
//! and 5xx, a stream that broke early) are retried with the same policy as the embedding clients: exponential
//! back-off with jitter, or the server's `Retry-After`. Once text has been streamed, a failure is returned as an
//! error rather than retried, so that no text is ever repeated.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde_json::{json, Value};

use super::{ChatModel, ChatResponse, FinishReason, GenerationOptions, LlmError, Message, Role, Tool, ToolCall, Usage};
use crate::remote::http::{backoff_delay, is_transient_transport, random_fraction, retry_after, server_message};

/// Largest non-streamed response or error body read.
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Where an OpenAI-compatible chat server is and how patiently to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiChatConfig {
    /// The server's root (`http://localhost:8000`) or its `/v1` prefix; `/v1/chat/completions` is appended
    /// accordingly.
    pub base_url: String,
    /// The model name sent with each request.
    pub model: String,
    /// Sent as `Authorization: Bearer <key>`; `None` sends none (local servers).
    pub api_key: Option<String>,
    /// The model's context window (prompt and answer), which the server does not report. Default 8,192.
    pub context_tokens: usize,
    /// Retries after the first attempt, before any text is streamed; 0 never retries.
    pub max_retries: u32,
    /// Limit for opening the connection.
    pub connect_timeout: Duration,
    /// Longest silence allowed while waiting for the response and between two pieces of it. A server that ignores
    /// `stream` must send its whole answer within this time.
    pub read_timeout: Duration,
    /// Back-off before the first retry; it doubles for each following retry.
    pub initial_backoff: Duration,
    /// Cap on the back-off, and on a server's `Retry-After`.
    pub max_backoff: Duration,
}

impl OpenAiChatConfig {
    pub const DEFAULT_CONTEXT_TOKENS: usize = 8192;
    pub const DEFAULT_MAX_RETRIES: u32 = 4;
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(120);
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

    /// A configuration with no API key and the defaults above.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiChatConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            context_tokens: Self::DEFAULT_CONTEXT_TOKENS,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
        }
    }

    /// Reads `openai:BASE_URL#MODEL` (e.g. `openai:http://localhost:11434/v1#llama3.1`); the API key comes from
    /// `OPENAI_API_KEY` when it is set and not empty.
    pub fn from_spec(spec: &str) -> Result<Self, LlmError> {
        let usage = "write it as openai:BASE_URL#MODEL, e.g. openai:http://localhost:8000/v1#Qwen/Qwen2.5-7B-Instruct";
        let rest = spec
            .strip_prefix("openai:")
            .ok_or_else(|| LlmError::Config(format!("{spec:?} is not an OpenAI-compatible chat spec; {usage}")))?;
        let (base_url, model) = rest
            .rsplit_once('#')
            .filter(|(base, model)| !base.is_empty() && !model.is_empty())
            .ok_or_else(|| LlmError::Config(format!("{spec:?} lacks a base URL or a #MODEL; {usage}")))?;
        let mut config = OpenAiChatConfig::new(base_url, model);
        config.api_key = std::env::var("OPENAI_API_KEY").ok().filter(|key| !key.is_empty());
        Ok(config)
    }
}

/// A chat client for one model on one OpenAI-compatible server.
#[derive(Debug)]
pub struct OpenAiChat {
    config: OpenAiChatConfig,
    url: String,
    agent: ureq::Agent,
}

impl OpenAiChat {
    /// Checks the configuration and prepares the HTTP agent; nothing is sent until [`ChatModel::chat`].
    pub fn new(config: OpenAiChatConfig) -> Result<Self, LlmError> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "base URL {:?} must start with http:// or https://",
                config.base_url
            )));
        }
        if config.model.is_empty() {
            return Err(LlmError::Config("the model name is empty".into()));
        }
        if config.context_tokens == 0 || config.read_timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(LlmError::Config(
                "context_tokens, connect_timeout and read_timeout must be greater than 0".into(),
            ));
        }
        let url = if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_per_read(Some(config.read_timeout))
            .user_agent(concat!("knowhow/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(OpenAiChat { config, url, agent })
    }

    /// [`OpenAiChatConfig::from_spec`] with the default settings.
    pub fn from_spec(spec: &str) -> Result<Self, LlmError> {
        OpenAiChat::new(OpenAiChatConfig::from_spec(spec)?)
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One request and its whole response; `answer` collects what arrived, even when the attempt fails.
    fn attempt(&self, body: &[u8], answer: &mut Answer, on_token: &mut dyn FnMut(&str)) -> Result<(), Failure> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "text/event-stream, application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let response = request.send(body).map_err(Failure::Transport)?;
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        let is_event_stream = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.contains("text/event-stream"));
        let body = response.into_body();
        if !(200..300).contains(&status) {
            let message = match body
                .into_with_config()
                .limit(MAX_BODY_BYTES)
                .lossy_utf8(true)
                .read_to_string()
            {
                Ok(text) => server_message(&text),
                Err(error) => format!("(the response body could not be read: {error})"),
            };
            return Err(Failure::Status {
                status,
                message,
                retry_after: wait,
            });
        }
        let mut reader = BufReader::new(body.into_with_config().limit(MAX_BODY_BYTES).reader());
        if !is_event_stream {
            // Servers that ignore `stream` answer one JSON object; some stream without the event-stream type.
            let first = reader
                .fill_buf()
                .map_err(Failure::Io)?
                .iter()
                .find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'{') {
                let mut text = String::new();
                reader.read_to_string(&mut text).map_err(Failure::Io)?;
                let completion: Value = serde_json::from_str(&text)
                    .map_err(|error| Failure::Malformed(format!("the JSON response does not parse ({error})")))?;
                answer.apply(&completion, true, on_token)?;
                answer.done = true;
                return Ok(());
            }
        }
        read_events(reader, answer, on_token)
    }

    fn error(&self, failure: Failure, attempts: u32, answer: &Answer) -> LlmError {
        let url = &self.url;
        let after = if answer.streamed_chars > 0 {
            format!(
                "; {} characters of the answer had already been streamed, so it was not retried (no text is repeated)",
                answer.streamed_chars
            )
        } else {
            String::new()
        };
        let message = match failure {
            Failure::Status { status, message, .. } => format!(
                "POST {url} answered HTTP {status} (after {attempts} attempt(s)): {message}; {}",
                status_hint(status)
            ),
            failure if failure.is_timeout() => format!(
                "POST {url}: no data from the server for {:?} (after {attempts} attempt(s)){after}; raise the read \
                 timeout for slow servers",
                self.config.read_timeout
            ),
            Failure::Transport(error) => format!(
                "POST {url} failed after {attempts} attempt(s): {error}{after}; check that the server is running and \
                 reachable"
            ),
            Failure::Io(error) => {
                format!("POST {url}: reading the response failed after {attempts} attempt(s): {error}{after}")
            }
            Failure::Event { message, .. } => {
                format!("POST {url}: the server reported an error in the stream: {message}{after}")
            }
            Failure::Ended => format!(
                "POST {url}: the response ended before the answer was complete (no finish_reason and no [DONE], after \
                 {attempts} attempt(s)){after}"
            ),
            Failure::Malformed(problem) => {
                format!("POST {url} returned a response that is not an OpenAI chat completion: {problem}{after}")
            }
        };
        LlmError::Remote(message)
    }
}

impl ChatModel for OpenAiChat {
    fn name(&self) -> String {
        format!("openai:{}#{}", self.config.base_url, self.config.model)
    }

    fn context_tokens(&self) -> usize {
        self.config.context_tokens
    }

    /// An estimate, since the server's tokenizer is not known here: one token per 4 ASCII characters (rounded up)
    /// plus one per non-ASCII character. BPE vocabularies average about 4 characters per token on English text, and
    /// accented letters, CJK characters and emoji take one token or more each, so this errs towards too many,
    /// which keeps prompts inside the context.
    fn count_tokens(&self, text: &str) -> usize {
        estimate_tokens(text)
    }

    fn chat(
        &mut self,
        messages: &[Message],
        tools: &[Tool],
        options: &GenerationOptions,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, LlmError> {
        let body = request_body(&self.config.model, messages, tools, options).to_string();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut answer = Answer::default();
            let failure = match self.attempt(body.as_bytes(), &mut answer, on_token) {
                Ok(()) => match answer.finish() {
                    Ok(response) => return Ok(response),
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            if answer.streamed_chars > 0 || !failure.is_transient() || attempts > self.config.max_retries {
                return Err(self.error(failure, attempts, &answer));
            }
            let wait = match &failure {
                Failure::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            std::thread::sleep(backoff_delay(
                self.config.initial_backoff,
                self.config.max_backoff,
                attempts,
                wait,
            ));
        }
    }
}

/// See [`ChatModel::count_tokens`] for [`OpenAiChat`].
pub fn estimate_tokens(text: &str) -> usize {
    let ascii = text.bytes().filter(u8::is_ascii).count();
    let other = text.chars().filter(|c| !c.is_ascii()).count();
    ascii.div_ceil(4) + other
}

/// The JSON body of a streamed chat completion request.
fn request_body(model: &str, messages: &[Message], tools: &[Tool], options: &GenerationOptions) -> Value {
    let messages: Vec<Value> = messages.iter().map(wire_message).collect();
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
    });
    if let Some(seed) = options.seed {
        body["seed"] = json!(seed);
    }
    if !options.stop.is_empty() {
        body["stop"] = json!(options.stop);
    }
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .iter()
            .map(|tool| {
                json!({"type": "function", "function": {
                    "name": tool.name, "description": tool.description, "parameters": tool.parameters,
                }})
            })
            .collect();
        body["tools"] = json!(tools);
    }
    body
}

/// A message in the OpenAI wire format. Content is always a string (empty beside tool calls), which every server
/// accepts, where some refuse `null`.
fn wire_message(message: &Message) -> Value {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut wire = json!({"role": role, "content": message.content});
    if !message.tool_calls.is_empty() {
        let calls: Vec<Value> = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({"id": call.id, "type": "function",
                       "function": {"name": call.name, "arguments": call.arguments}})
            })
            .collect();
        wire["tool_calls"] = json!(calls);
    }
    if let Some(id) = &message.tool_call_id {
        wire["tool_call_id"] = json!(id);
    }
    wire
}

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    Transport(ureq::Error),
    /// Reading the body failed (connection reset, timeout between chunks).
    Io(std::io::Error),
    /// The stream carried an error object (vLLM, llama.cpp and OpenAI send one when generation fails midway).
    Event {
        message: String,
        transient: bool,
    },
    /// The body ended with no `finish_reason` and no `[DONE]`.
    Ended,
    /// Not an OpenAI chat response.
    Malformed(String),
}

impl Failure {
    /// The server went quiet for longer than the read timeout.
    fn is_timeout(&self) -> bool {
        match self {
            Failure::Transport(ureq::Error::Timeout(_)) => true,
            Failure::Io(error) => {
                matches!(
                    error.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) || error
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<ureq::Error>())
                    .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)))
            }
            _ => false,
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            Failure::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Failure::Transport(error) => is_transient_transport(error),
            Failure::Io(_) | Failure::Ended => true,
            Failure::Event { transient, .. } => *transient,
            Failure::Malformed(_) => false,
        }
    }
}

/// What to do about an HTTP error status from a chat server.
fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "check the API key (OPENAI_API_KEY)",
        404 => "check the base URL and the model name",
        400 | 422 => "the server refused the request: check the model name, the options and the prompt's length",
        408 | 429 => "the server kept asking to slow down: wait or raise max_retries",
        500..=599 => "the server kept failing: check its health or raise max_retries",
        _ => "see the server's message",
    }
}

/// Reads Server-Sent Events until `[DONE]` or the end of the body, applying each `data` payload to `answer`.
fn read_events(mut reader: impl BufRead, answer: &mut Answer, on_token: &mut dyn FnMut(&str)) -> Result<(), Failure> {
    let mut data: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(Failure::Io)?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if read == 0 || text.is_empty() {
            if !data.is_empty() {
                dispatch(&std::mem::take(&mut data), answer, on_token)?;
            }
            if read == 0 || answer.done {
                return Ok(());
            }
            continue;
        }
        if text.starts_with(':') {
            continue; // a comment or keep-alive
        }
        let (field, value) = text.split_once(':').unwrap_or((text, ""));
        if field == "data" {
            let value = value.strip_prefix(' ').unwrap_or(value);
            // A server that omits the blank line between events: `[DONE]` or a new JSON object after a whole one
            // starts a new event.
            let is_done = value.trim() == "[DONE]";
            let starts_event = is_done || (value.starts_with('{') && data.iter().all(|part| parses(part)));
            if starts_event && !data.is_empty() {
                dispatch(&std::mem::take(&mut data), answer, on_token)?;
            }
            if is_done {
                answer.done = true;
                return Ok(());
            }
            data.push(value.to_string());
        }
    }
}

fn parses(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Applies one event's data (its `data:` lines joined by newlines).
fn dispatch(data: &[String], answer: &mut Answer, on_token: &mut dyn FnMut(&str)) -> Result<(), Failure> {
    let payload = data.join("\n");
    if payload.trim().is_empty() {
        return Ok(());
    }
    let chunk: Value = serde_json::from_str(&payload).map_err(|error| {
        Failure::Malformed(format!(
            "an event's data is not JSON ({error}): {}",
            crate::remote::http::start_of(&payload)
        ))
    })?;
    answer.apply(&chunk, false, on_token)
}

/// A tool call as its fragments arrive.
#[derive(Debug, Default)]
struct PartialCall {
    index: Option<u64>,
    id: String,
    name: String,
    arguments: String,
}

/// The answer as it arrives, over the chunks of one attempt.
#[derive(Debug, Default)]
struct Answer {
    content: String,
    calls: Vec<PartialCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    /// Characters handed to `on_token`; once above 0 the attempt is not retried.
    streamed_chars: usize,
    /// `[DONE]` arrived, or a whole non-streamed completion.
    done: bool,
}

impl Answer {
    /// Applies a streamed chunk (`delta`) or a whole completion (`message`, with `complete` set).
    fn apply(&mut self, chunk: &Value, complete: bool, on_token: &mut dyn FnMut(&str)) -> Result<(), Failure> {
        if let Some(error) = chunk.get("error").filter(|error| !error.is_null()) {
            return Err(stream_error(error));
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0) as usize;
            self.usage = Some(Usage {
                prompt_tokens: count("prompt_tokens"),
                completion_tokens: count("completion_tokens"),
            });
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        let Some(choice) = choices.and_then(|choices| {
            choices
                .iter()
                .find(|choice| choice.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        }) else {
            // A stream may carry chunks without choices (usage, server metadata); a whole completion may not.
            if complete {
                return Err(Failure::Malformed(format!(
                    "the completion has no `choices`: {}",
                    crate::remote::http::start_of(&chunk.to_string())
                )));
            }
            return Ok(());
        };
        let delta = choice.get("delta").or_else(|| choice.get("message"));
        if let Some(delta) = delta {
            if let Some(piece) = delta
                .get("content")
                .and_then(Value::as_str)
                .filter(|piece| !piece.is_empty())
            {
                self.content.push_str(piece);
                self.streamed_chars += piece.chars().count();
                on_token(piece);
            }
            if let Some(fragments) = delta.get("tool_calls").and_then(Value::as_array) {
                for (position, fragment) in fragments.iter().enumerate() {
                    let implied_index = complete.then_some(position as u64);
                    self.add_call_fragment(fragment, implied_index);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        Ok(())
    }

    /// Adds a tool-call fragment to the call with its `index`; without one, a fragment with a new `id` starts a
    /// call and one without continues the last.
    fn add_call_fragment(&mut self, fragment: &Value, implied_index: Option<u64>) {
        let index = fragment.get("index").and_then(Value::as_u64).or(implied_index);
        let id = fragment.get("id").and_then(Value::as_str).unwrap_or_default();
        let existing = match index {
            Some(index) => self.calls.iter().position(|call| call.index == Some(index)),
            None if !id.is_empty() => self.calls.iter().position(|call| call.id == id),
            None => self.calls.len().checked_sub(1),
        };
        let call = match existing {
            Some(position) => &mut self.calls[position],
            None => {
                self.calls.push(PartialCall {
                    index,
                    ..PartialCall::default()
                });
                self.calls.last_mut().expect("just pushed")
            }
        };
        if call.id.is_empty() {
            call.id = id.to_string();
        }
        let function = fragment.get("function");
        if let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) {
            // Servers send the name once; one that repeats it must not double it.
            if call.name.is_empty() {
                call.name = name.to_string();
            } else if name != call.name {
                call.name.push_str(name);
            }
        }
        match function.and_then(|f| f.get("arguments")) {
            Some(Value::String(piece)) => call.arguments.push_str(piece),
            Some(Value::Null) | None => {}
            Some(object) => call.arguments.push_str(&object.to_string()),
        }
    }

    /// The whole answer, once the response is over.
    fn finish(&mut self) -> Result<ChatResponse, Failure> {
        if !self.done && self.finish_reason.is_none() {
            return Err(Failure::Ended);
        }
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (position, call) in std::mem::take(&mut self.calls).into_iter().enumerate() {
            if call.name.is_empty() {
                return Err(Failure::Malformed(format!("tool call {position} has no function name")));
            }
            tool_calls.push(ToolCall {
                id: if call.id.is_empty() {
                    generated_call_id()
                } else {
                    call.id
                },
                name: call.name,
                arguments: if call.arguments.trim().is_empty() {
                    "{}".to_string()
                } else {
                    call.arguments
                },
            });
        }
        let finish_reason = match self.finish_reason.as_deref() {
            _ if !tool_calls.is_empty() => FinishReason::ToolCalls,
            Some("length") | Some("max_tokens") => FinishReason::Length,
            // "stop", TGI's "eos" and "stop_sequence", "content_filter", or none given with [DONE].
            _ => FinishReason::Stop,
        };
        Ok(ChatResponse {
            content: std::mem::take(&mut self.content),
            tool_calls,
            finish_reason,
            usage: self.usage,
        })
    }
}

/// An error object sent inside the stream: `{"message", "code"}` (OpenAI, vLLM, llama.cpp) or a string.
fn stream_error(error: &Value) -> Failure {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| error.as_str())
        .map_or_else(|| error.to_string(), str::to_string);
    let code = error.get("code").and_then(Value::as_u64);
    Failure::Event {
        message,
        transient: code.is_none_or(|code| matches!(code, 408 | 429 | 500..=599)),
    }
}

/// An id for a tool call the server sent without one: `call_` and 24 hexadecimal digits.
fn generated_call_id() -> String {
    let bits = |_| (random_fraction() * (1u64 << 32) as f64) as u64;
    let [a, b, c]: [u64; 3] = std::array::from_fn(bits);
    format!("call_{a:08x}{b:08x}{c:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_base_url_and_model() {
        let config = OpenAiChatConfig::from_spec("openai:http://localhost:11434/v1#llama3.1:8b").unwrap();
        assert_eq!(config.base_url, "http://localhost:11434/v1");
        assert_eq!(config.model, "llama3.1:8b");
        assert_eq!(config.context_tokens, 8192);
        let chat = OpenAiChat::new(config).unwrap();
        assert_eq!(chat.url(), "http://localhost:11434/v1/chat/completions");
        assert_eq!(chat.name(), "openai:http://localhost:11434/v1#llama3.1:8b");
        let root = OpenAiChat::new(OpenAiChatConfig::new("https://api.openai.com/", "gpt-4o")).unwrap();
        assert_eq!(root.url(), "https://api.openai.com/v1/chat/completions");
        for bad in ["openai:http://h:1", "openai:#m", "tei:http://h#m"] {
            let err = OpenAiChatConfig::from_spec(bad).unwrap_err().to_string();
            assert!(err.contains("openai:BASE_URL#MODEL"), "{bad}: {err}");
        }
        let err = OpenAiChat::new(OpenAiChatConfig::new("localhost:8000", "m")).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
    }

    #[test]
    fn token_estimate_rounds_up_and_counts_non_ascii_apart() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcd efgh"), 3);
        assert_eq!(estimate_tokens("日本語"), 3);
        assert_eq!(estimate_tokens("café"), 2);
    }

    #[test]
    fn request_body_carries_options_tools_and_tool_messages() {
        let call = ToolCall {
            id: "c1".into(),
            name: "search".into(),
            arguments: "{\"q\":\"x\"}".into(),
        };
        let messages = [
            Message::user("find x"),
            Message {
                tool_calls: vec![call],
                ..Message::assistant("")
            },
            Message::tool("c1", "found"),
        ];
        let tools = [Tool {
            name: "search".into(),
            description: "Search.".into(),
            parameters: json!({"type": "object"}),
        }];
        let options = GenerationOptions {
            seed: Some(7),
            stop: vec!["\n\n".into()],
            ..GenerationOptions::default()
        };
        let body = request_body("m", &messages, &tools, &options);
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["seed"], json!(7));
        assert_eq!(body["stop"], json!(["\n\n"]));
        assert_eq!(body["max_tokens"], json!(512));
        assert_eq!(body["tools"][0]["function"]["name"], json!("search"));
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["arguments"],
            json!("{\"q\":\"x\"}")
        );
        assert_eq!(body["messages"][1]["content"], json!(""));
        assert_eq!(
            body["messages"][2],
            json!({"role": "tool", "content": "found", "tool_call_id": "c1"})
        );
        let plain = request_body("m", &messages[..1], &[], &GenerationOptions::default());
        assert!(plain.get("tools").is_none() && plain.get("stop").is_none() && plain.get("seed").is_none());
    }

    #[test]
    fn generated_call_ids_differ() {
        let (a, b) = (generated_call_id(), generated_call_id());
        assert!(a.starts_with("call_") && a.len() == 29, "{a}");
        assert_ne!(a, b);
    }
}
