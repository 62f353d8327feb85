//! Chat models that write answers: one small interface, [`ChatModel`], and
//! its implementations — an OpenAI-compatible HTTP client and a local candle
//! decoder. (The extractive answerer needs no model and lives beside them in
//! the answer code, not behind this trait.)
//!
//! The types follow the OpenAI chat wire format closely, because every server
//! a team points knowhow at (vLLM, Ollama, llama.cpp, TGI, OpenAI) speaks it
//! and because local chat templates take the same shape of messages.

pub mod local;
pub mod openai;

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering the call named by
    /// [`Message::tool_call_id`].
    Tool,
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Calls the assistant asked for in this turn (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call this message answers (tool messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Message {
        Message::plain(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message::plain(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message::plain(Role::Assistant, content)
    }

    /// The result of the tool call `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            tool_call_id: Some(call_id.into()),
            ..Message::plain(Role::Tool, content)
        }
    }

    fn plain(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A function the model may call, described by a JSON schema of its
/// arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// A call of a [`Tool`] that the model asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Chosen by the model or the server; echoed back in the tool message.
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: JSON text, not yet validated.
    pub arguments: String,
}

/// How to sample.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationOptions {
    /// Most tokens the answer may have.
    pub max_tokens: usize,
    /// 0 means greedy: always the most likely token.
    pub temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens whose
    /// probabilities add up to `top_p` (1.0 keeps them all).
    pub top_p: f32,
    /// Makes sampling repeatable where the backend supports it.
    pub seed: Option<u64>,
    /// Generation ends before any of these strings; they are not part of the
    /// answer.
    pub stop: Vec<String>,
    /// Raised when nobody waits for the answer anymore: generation stops with
    /// [`LlmError::Cancelled`] (local models check it before each token).
    pub cancel: knowhow_core::Cancellation,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        GenerationOptions {
            max_tokens: 512,
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
            stop: Vec::new(),
            cancel: knowhow_core::Cancellation::default(),
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The model asked for tool calls.
    ToolCalls,
}

/// Tokens counted by the backend (by the server, for remote models).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// What the model answered.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Option<Usage>,
}

/// What can go wrong while generating.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The backend is misconfigured (a bad spec, a missing file).
    #[error("{0}")]
    Config(String),
    /// The server answered with an error, or not at all, after the retries.
    #[error("{0}")]
    Remote(String),
    /// The model could not run (shapes, weights, tokenizer).
    #[error("{0}")]
    Model(String),
    /// The caller raised [`GenerationOptions::cancel`].
    #[error("generation was cancelled")]
    Cancelled,
    /// The prompt does not fit the model's context.
    #[error("the prompt has {prompt_tokens} tokens but the model's context holds {context_tokens}")]
    ContextOverflow {
        prompt_tokens: usize,
        context_tokens: usize,
    },
}

/// A model that continues a conversation.
///
/// Implementations stream: `on_token` receives each piece of the answer's
/// text as soon as it is known; the returned [`ChatResponse`] holds the whole
/// answer.
pub trait ChatModel {
    /// The model's name, as recorded in the audit log (`openai:URL#MODEL`,
    /// `local:PATH`).
    fn name(&self) -> String;

    /// Tokens the model can attend to: prompt and answer together.
    fn context_tokens(&self) -> usize;

    /// Tokens `text` takes in the model's vocabulary (an estimate where the
    /// tokenizer is not known, as for remote models).
    fn count_tokens(&self, text: &str) -> usize;

    /// Generates the next assistant message.
    fn chat(
        &mut self,
        messages: &[Message],
        tools: &[Tool],
        options: &GenerationOptions,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, LlmError>;
}
