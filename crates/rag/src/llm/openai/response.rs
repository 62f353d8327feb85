//! The answer as its pieces arrive: streamed chunks (`delta`) or one whole
//! completion (`message`), joined into a [`ChatResponse`].

use serde_json::Value;

use super::failure::Failure;
use crate::llm::{ChatResponse, FinishReason, ToolCall, Usage};
use crate::remote::http::{random_fraction, start_of};

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
pub(super) struct Answer {
    content: String,
    calls: Vec<PartialCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    /// Characters handed to `on_token`; once above 0 the attempt is not retried.
    pub(super) streamed_chars: usize,
    /// `[DONE]` arrived, or a whole non-streamed completion.
    pub(super) done: bool,
}

impl Answer {
    /// Applies a streamed chunk (`delta`) or a whole completion (`message`, with `complete` set).
    pub(super) fn apply(
        &mut self,
        chunk: &Value,
        complete: bool,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<(), Failure> {
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
                    start_of(&chunk.to_string())
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
    pub(super) fn finish(&mut self) -> Result<ChatResponse, Failure> {
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
pub(super) fn generated_call_id() -> String {
    let bits = |_| (random_fraction() * (1u64 << 32) as f64) as u64;
    let [a, b, c]: [u64; 3] = std::array::from_fn(bits);
    format!("call_{a:08x}{b:08x}{c:08x}")
}
