//! The chat request as OpenAI's clients send it, and its translation into knowhow's types. Fields OpenAI defines
//! that do not change the answer (`user`, `logprobs: false`, `parallel_tool_calls`, ...) and unknown fields are
//! ignored.

use knowhow_rag::llm::{GenerationOptions, Message, Tool, ToolCall};
use serde::Deserialize;
use serde_json::Value;

use super::{role, tool};
use crate::ApiError;

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    pub model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    tools: Vec<WireTool>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    n: Option<u32>,
    /// knowhow's extension: answer from a collection.
    #[serde(default)]
    pub knowhow: Option<Extension>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
pub(crate) struct Extension {
    pub collection: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub k: Option<usize>,
    /// `true`: re-rank the retrieved chunks with the served cross-encoder (the `rerank` mode).
    #[serde(default)]
    pub rerank: Option<bool>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunctionCall,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct WireTool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

/// A message's text: a string, or a list of parts of which the text ones count (`null` for an assistant turn
/// that only called tools).
fn content_text(content: Option<&Value>, number: usize) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(piece)) => text.push_str(piece),
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            "messages",
                            format!(
                                "messages[{number}] has a {} part: this server reads text parts only",
                                kind.unwrap_or("untyped")
                            ),
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::invalid(
            "messages",
            format!("messages[{number}].content is neither a string nor a list of parts"),
        )),
    }
}

impl ChatRequest {
    pub fn messages(&self) -> Result<Vec<Message>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "messages is empty: send at least one user message",
            ));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(number, wire)| {
                Ok(Message {
                    role: role(&wire.role)?,
                    content: content_text(wire.content.as_ref(), number)?,
                    tool_calls: wire
                        .tool_calls
                        .iter()
                        .map(|call| ToolCall {
                            id: call.id.clone(),
                            name: call.function.name.clone(),
                            arguments: call.function.arguments.clone(),
                        })
                        .collect(),
                    tool_call_id: wire.tool_call_id.clone(),
                })
            })
            .collect()
    }

    /// The tools offered, none when `tool_choice` is `"none"`.
    pub fn tools(&self) -> Result<Vec<Tool>, ApiError> {
        if self.tool_choice.as_ref().and_then(Value::as_str) == Some("none") {
            return Ok(Vec::new());
        }
        self.tools
            .iter()
            .map(|wire| match wire.kind.as_deref() {
                None | Some("function") => Ok(tool(
                    wire.function.name.clone(),
                    wire.function.description.clone(),
                    wire.function.parameters.clone(),
                )),
                Some(other) => Err(ApiError::invalid(
                    "tools",
                    format!("tool type {other:?} is not served: only \"function\""),
                )),
            })
            .collect()
    }

    /// Sampling as asked: `max_completion_tokens` (or the older `max_tokens`), else what the context leaves
    /// after a prompt of about `prompt_tokens` (at most the default 512).
    pub fn generation(&self, context_tokens: usize, prompt_tokens: usize) -> Result<GenerationOptions, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(
                "n",
                "this server writes one choice per request: leave n out or send 1",
            ));
        }
        let defaults = GenerationOptions::default();
        let max_tokens = self.max_completion_tokens.or(self.max_tokens).unwrap_or(
            defaults
                .max_tokens
                .min(context_tokens.saturating_sub(prompt_tokens))
                .max(1),
        );
        if max_tokens == 0 {
            return Err(ApiError::invalid("max_tokens", "max_tokens must be at least 1"));
        }
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(stop)) => vec![stop.clone()],
            Some(Value::Array(stops)) => stops
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(String::from)
                        .ok_or_else(|| ApiError::invalid("stop", "stop is a string or a list of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ApiError::invalid("stop", "stop is a string or a list of strings")),
        };
        let temperature = self.temperature.unwrap_or(defaults.temperature);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid("temperature", "temperature is between 0 and 2"));
        }
        let top_p = self.top_p.unwrap_or(defaults.top_p);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid("top_p", "top_p is above 0 and at most 1"));
        }
        Ok(GenerationOptions {
            max_tokens,
            temperature,
            top_p,
            seed: self.seed,
            stop,
            ..defaults
        })
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }

    /// The answer budget, for telling a cut answer (`length`) from a finished one.
    pub fn max_tokens(&self) -> Option<usize> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn messages_tools_and_sampling_read_as_openai_clients_send_them() {
        let chat = request(serde_json::json!({
            "model": "local",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null,
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "max_completion_tokens": 7, "max_tokens": 99, "stop": "END", "seed": 3, "user": "ignored",
            "stream": true, "stream_options": {"include_usage": true},
        }));
        let messages = chat.messages().unwrap();
        assert_eq!(messages[0].role, knowhow_rag::llm::Role::System);
        assert_eq!(messages[1].content, "Hi there");
        assert_eq!(messages[2].tool_calls[0].name, "f");
        assert_eq!(messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(chat.tools().unwrap()[0].name, "f");
        let options = chat.generation(2048, 10).unwrap();
        assert_eq!(
            (options.max_tokens, options.stop, options.seed),
            (7, vec!["END".to_string()], Some(3))
        );
        assert!(chat.include_usage());
    }

    #[test]
    fn what_cannot_be_served_is_refused_naming_the_field() {
        let base = serde_json::json!({"model": "local", "messages": [{"role": "user", "content": "x"}]});
        let with = |field: &str, value: Value| {
            let mut body = base.clone();
            body[field] = value;
            request(body)
        };
        assert_eq!(
            with("n", serde_json::json!(2)).generation(100, 10).unwrap_err().param,
            Some("n")
        );
        assert_eq!(
            with("top_p", serde_json::json!(0))
                .generation(100, 10)
                .unwrap_err()
                .param,
            Some("top_p")
        );
        assert_eq!(
            with("stop", serde_json::json!(5))
                .generation(100, 10)
                .unwrap_err()
                .param,
            Some("stop")
        );
        let image = with(
            "messages",
            serde_json::json!([{"role": "user", "content": [{"type": "image_url"}]}]),
        );
        assert!(image.messages().unwrap_err().message.contains("image_url"));
        let odd = with("messages", serde_json::json!([{"role": "robot", "content": "x"}]));
        assert_eq!(odd.messages().unwrap_err().param, Some("messages"));
        let none = with("tool_choice", serde_json::json!("none"));
        assert!(none.tools().unwrap().is_empty());
        assert_eq!(
            request(base).generation(100, 10).unwrap().max_tokens,
            90,
            "what the context leaves"
        );
    }
}
