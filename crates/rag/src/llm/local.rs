//! A local decoder (Llama, Mistral, Qwen2) as a [`ChatModel`]: the model's own
//! chat template renders the conversation, candle generates the answer.
//!
//! Tool calls: local models write them as text, in the shape their chat
//! template taught them. Two shapes cover the supported families: Hermes /
//! Qwen2.5 (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`) and
//! Llama 3.1 (the whole reply is one JSON object with `name` and `parameters`).
//! When tools are offered the reply is held back until it is known not to be
//! a tool call, so raw call syntax never reaches the user's screen.

use std::path::{Path, PathBuf};

use knowhow_models::decoder::{generate, load_tokenizer, peft, FinishReason as DecoderFinish, GenerateOptions};
use knowhow_models::{ChatTemplate, Decoder};
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::{ChatModel, ChatResponse, FinishReason, GenerationOptions, LlmError, Message, Role, Tool, ToolCall, Usage};

/// A decoder from a Hugging Face folder, optionally with a LoRA adapter.
pub struct LocalChatModel {
    decoder: Decoder,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    dir: PathBuf,
}

impl LocalChatModel {
    /// Loads the model in `dir` (config.json, safetensors, tokenizer.json,
    /// tokenizer_config.json) and, when given, a PEFT adapter folder.
    pub fn load(dir: &Path, adapter: Option<&Path>) -> Result<LocalChatModel, LlmError> {
        let model_error = |e: knowhow_models::Error| LlmError::Model(format!("{}: {e}", dir.display()));
        let mut decoder = Decoder::load(dir).map_err(model_error)?;
        if let Some(adapter) = adapter {
            peft::load_adapter(&mut decoder, adapter)
                .map_err(|e| LlmError::Model(format!("adapter {}: {e}", adapter.display())))?;
        }
        let tokenizer = load_tokenizer(dir).map_err(model_error)?;
        let template = ChatTemplate::from_model_dir(dir).map_err(|e| LlmError::Config(e.to_string()))?;
        Ok(LocalChatModel {
            decoder,
            tokenizer,
            template,
            dir: dir.to_path_buf(),
        })
    }

    /// This model with the PEFT adapter in `adapter` over it, sharing this model's base weights (so the new model
    /// costs the adapter's weights only); this model itself is left as it is.
    pub fn with_adapter(&self, adapter: &Path) -> Result<LocalChatModel, LlmError> {
        let mut model = self.share_base();
        peft::load_adapter(&mut model.decoder, adapter)
            .map_err(|e| LlmError::Model(format!("adapter {}: {e}", adapter.display())))?;
        Ok(model)
    }

    /// This model without its adapter, over the same base weights (shared, not copied).
    pub fn share_base(&self) -> LocalChatModel {
        LocalChatModel {
            decoder: self.decoder.share_base(),
            tokenizer: self.tokenizer.clone(),
            template: self.template.clone(),
            dir: self.dir.clone(),
        }
    }

    /// The folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The prompt text for `messages`: the chat template's rendering, or, for
    /// a base model without one, plain `Role: text` lines.
    pub fn render(&self, messages: &[Message], tools: &[Tool]) -> Result<String, LlmError> {
        let Some(template) = &self.template else {
            let mut text = String::new();
            for message in messages {
                text.push_str(&format!("{}: {}\n", role_label(message.role), message.content));
            }
            text.push_str("Assistant:");
            return Ok(text);
        };
        let messages: Vec<Value> = messages.iter().map(message_json).collect();
        let tools: Vec<Value> = tools.iter().map(tool_json).collect();
        template
            .render(&messages, (!tools.is_empty()).then_some(tools.as_slice()), true)
            .map_err(|e| LlmError::Config(format!("{}: {e}", self.dir.display())))
    }

    fn encode(&self, prompt: &str) -> Result<Vec<u32>, LlmError> {
        // A chat template writes its own BOS; a plain prompt gets the
        // tokenizer's special tokens, as transformers does.
        let add_special_tokens = self.template.is_none();
        let encoding = self
            .tokenizer
            .encode(prompt, add_special_tokens)
            .map_err(|e| LlmError::Model(format!("tokenizer: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }
}

fn role_label(role: Role) -> &'static str {
    match role {
        Role::System => "System",
        Role::User => "User",
        Role::Assistant => "Assistant",
        Role::Tool => "Tool",
    }
}

/// A message in the OpenAI shape chat templates expect.
fn message_json(message: &Message) -> Value {
    let mut value = json!({"role": message.role, "content": message.content});
    if !message.tool_calls.is_empty() {
        value["tool_calls"] = message
            .tool_calls
            .iter()
            .map(|call| {
                // Templates read arguments as an object (they `tojson` it).
                let arguments = serde_json::from_str::<Value>(&call.arguments)
                    .unwrap_or_else(|_| Value::String(call.arguments.clone()));
                json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}})
            })
            .collect();
    }
    if let Some(id) = &message.tool_call_id {
        value["tool_call_id"] = json!(id);
    }
    value
}

fn tool_json(tool: &Tool) -> Value {
    json!({"type": "function", "function": {
        "name": tool.name, "description": tool.description, "parameters": tool.parameters}})
}

/// The tool calls written in `text`, and the text around them.
fn parse_tool_calls(text: &str, tools: &[Tool]) -> (String, Vec<ToolCall>) {
    let mut calls = Vec::new();
    let mut content = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<tool_call>") {
        let after = &rest[start + "<tool_call>".len()..];
        let Some(end) = after.find("</tool_call>") else { break };
        match call_from_json(after[..end].trim(), calls.len()) {
            Some(call) => {
                content.push_str(&rest[..start]);
                calls.push(call);
            }
            None => content.push_str(&rest[..start + "<tool_call>".len() + end + "</tool_call>".len()]),
        }
        rest = &after[end + "</tool_call>".len()..];
    }
    content.push_str(rest);
    if calls.is_empty() {
        if let Some(call) = call_from_json(text.trim(), 0).filter(|c| tools.iter().any(|t| t.name == c.name)) {
            return (String::new(), vec![call]);
        }
    }
    (content.trim().to_string(), calls)
}

fn call_from_json(text: &str, index: usize) -> Option<ToolCall> {
    let value: Value = serde_json::from_str(text).ok()?;
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = value.get("arguments").or_else(|| value.get("parameters"))?;
    let arguments = match arguments {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    Some(ToolCall {
        id: format!("call_{index}"),
        name,
        arguments,
    })
}

impl ChatModel for LocalChatModel {
    fn name(&self) -> String {
        format!("local:{}", self.dir.display())
    }

    fn context_tokens(&self) -> usize {
        self.decoder.config().max_position_embeddings
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer
            .encode(text, false)
            .map_or(text.len() / 4 + 1, |encoding| encoding.len())
    }

    fn chat(
        &mut self,
        messages: &[Message],
        tools: &[Tool],
        options: &GenerationOptions,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, LlmError> {
        let prompt = self.encode(&self.render(messages, tools)?)?;
        let context_tokens = self.context_tokens();
        if prompt.len() + options.max_tokens > context_tokens {
            return Err(LlmError::ContextOverflow {
                prompt_tokens: prompt.len() + options.max_tokens,
                context_tokens,
            });
        }
        let mut eos_token_ids = Vec::new();
        if let Some(eos) = self.template.as_ref().and_then(ChatTemplate::eos_token) {
            eos_token_ids.extend(self.tokenizer.token_to_id(eos));
        }
        let generate_options = GenerateOptions {
            max_new_tokens: options.max_tokens,
            temperature: f64::from(options.temperature),
            top_p: f64::from(options.top_p),
            seed: options.seed.unwrap_or(0),
            stop: options.stop.clone(),
            eos_token_ids,
            cancel: options.cancel.clone(),
        };
        let stream = tools.is_empty();
        let mut on_text = |text: &str| {
            if stream {
                on_token(text);
            }
        };
        let generation = generate(&self.decoder, &self.tokenizer, &prompt, &generate_options, &mut on_text).map_err(
            |e| match e {
                knowhow_models::Error::Cancelled => LlmError::Cancelled,
                e => LlmError::Model(e.to_string()),
            },
        )?;
        let usage = Some(Usage {
            prompt_tokens: generation.prompt_tokens,
            completion_tokens: generation.completion_tokens,
        });
        let mut finish_reason = match generation.finish_reason {
            DecoderFinish::Stop => FinishReason::Stop,
            DecoderFinish::Length => FinishReason::Length,
        };
        let (content, tool_calls) = if stream {
            (generation.text, Vec::new())
        } else {
            let (content, calls) = parse_tool_calls(&generation.text, tools);
            if !calls.is_empty() {
                finish_reason = FinishReason::ToolCalls;
            }
            if !content.is_empty() {
                on_token(&content);
            }
            (content, calls)
        };
        Ok(ChatResponse {
            content,
            tool_calls,
            finish_reason,
            usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search_tool() -> Tool {
        Tool {
            name: "search".into(),
            description: "Search the documents".into(),
            parameters: json!({"type": "object", "properties": {"query": {"type": "string"}}}),
        }
    }

    #[test]
    fn hermes_tool_calls_are_parsed_and_removed_from_the_text() {
        let text = "Let me look.\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"kickoff\"}}\n\
                    </tool_call>\n<tool_call>{\"name\": \"search\", \"arguments\": {\"query\": \"mvp\"}}</tool_call>";
        let (content, calls) = parse_tool_calls(text, &[search_tool()]);
        assert_eq!(content, "Let me look.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "search");
        assert_eq!(
            serde_json::from_str::<Value>(&calls[1].arguments).unwrap(),
            json!({"query": "mvp"})
        );
        assert_ne!(calls[0].id, calls[1].id);
    }

    #[test]
    fn a_llama_style_json_reply_is_a_call_only_when_it_names_an_offered_tool() {
        let (content, calls) = parse_tool_calls(
            r#"{"name": "search", "parameters": {"query": "anthem"}}"#,
            &[search_tool()],
        );
        assert!(content.is_empty());
        assert_eq!(calls[0].arguments, r#"{"query":"anthem"}"#);
        let (content, calls) = parse_tool_calls(r#"{"name": "Denver", "parameters": {}}"#, &[search_tool()]);
        assert!(calls.is_empty());
        assert_eq!(content, r#"{"name": "Denver", "parameters": {}}"#);
    }

    #[test]
    fn a_malformed_tool_call_stays_visible_as_text() {
        let (content, calls) = parse_tool_calls("<tool_call>{not json}</tool_call> done", &[search_tool()]);
        assert!(calls.is_empty());
        assert_eq!(content, "<tool_call>{not json}</tool_call> done");
    }

    #[test]
    fn messages_take_the_openai_shape_templates_expect() {
        let mut message = Message::assistant("");
        message.tool_calls.push(ToolCall {
            id: "c1".into(),
            name: "search".into(),
            arguments: r#"{"query":"x"}"#.into(),
        });
        assert_eq!(
            message_json(&message),
            json!({"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "search", "arguments": {"query": "x"}}}]})
        );
        assert_eq!(
            message_json(&Message::tool("c1", "[1] ...")),
            json!({"role": "tool", "content": "[1] ...", "tool_call_id": "c1"})
        );
    }
}
