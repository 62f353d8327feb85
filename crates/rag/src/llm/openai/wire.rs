//! The request in the OpenAI wire format.

use serde_json::{json, Value};

use crate::llm::{GenerationOptions, Message, Role, Tool};

/// The JSON body of a streamed chat completion request.
pub(super) fn request_body(model: &str, messages: &[Message], tools: &[Tool], options: &GenerationOptions) -> Value {
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
