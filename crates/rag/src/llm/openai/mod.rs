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

mod failure;
mod response;
mod sse;
mod wire;

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde_json::Value;

use super::{ChatModel, ChatResponse, GenerationOptions, LlmError, Message, Tool};
use crate::remote::http::{backoff_delay, retry_after, server_message};
use failure::Failure;
use response::Answer;
use sse::read_events;
use wire::request_body;

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

#[cfg(test)]
mod tests;
