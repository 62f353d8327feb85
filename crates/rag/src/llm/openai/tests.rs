use serde_json::json;

use super::response::generated_call_id;
use super::wire::request_body;
use super::*;
use crate::llm::ToolCall;

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
    // Which way out the message names is the behaviour under test.
    for bad in ["openai:http://h:1", "openai:#m", "tei:http://h#m"] {
        let err = OpenAiChatConfig::from_spec(bad).unwrap_err();
        assert!(
            matches!(&err, LlmError::Config(message) if message.contains("openai:BASE_URL#MODEL")),
            "{bad}: {err:?}"
        );
    }
    let err = OpenAiChat::new(OpenAiChatConfig::new("localhost:8000", "m")).unwrap_err();
    assert!(
        matches!(&err, LlmError::Config(message) if message.contains("http://")),
        "{err:?}"
    );
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
