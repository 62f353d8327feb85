//! The OpenAI-compatible chat client against the workspace's local test server (`knowhow_testkit::http`), since
//! vLLM, Ollama, llama.cpp, TGI and OpenAI cannot run in tests: the server speaks real HTTP/1.1 and streams
//! Server-Sent Events in chunked transfer encoding, piece by piece with pauses, the way those servers do (including
//! their quirks, which the handlers here reproduce), and records every request so that tests assert on what the
//! client sent.

use std::time::{Duration, Instant};

use knowhow_rag::llm::openai::{OpenAiChat, OpenAiChatConfig};
use knowhow_rag::llm::{
    ChatModel, ChatResponse, FinishReason, GenerationOptions, LlmError, Message, Tool, ToolCall, Usage,
};
use knowhow_testkit::http::{closed_url, Response, Server};
use serde_json::{json, Value};

/// One SSE event carrying a chunk of `choices[0]`.
fn chunk(delta: Value, finish_reason: Value) -> String {
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    });
    format!("data: {chunk}\n\n")
}

fn text(piece: &str) -> String {
    chunk(json!({"content": piece}), Value::Null)
}

fn done() -> String {
    "data: [DONE]\n\n".to_string()
}

fn config(base_url: &str) -> OpenAiChatConfig {
    OpenAiChatConfig {
        api_key: Some("sk-test".into()),
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        ..OpenAiChatConfig::new(base_url, "test-model")
    }
}

fn conversation() -> Vec<Message> {
    vec![Message::system("Answer briefly."), Message::user("Say hello.")]
}

/// Runs one chat; returns the pieces given to `on_token` and the result.
fn chat(
    config: OpenAiChatConfig,
    messages: &[Message],
    tools: &[Tool],
) -> (Vec<String>, Result<ChatResponse, LlmError>) {
    let mut client = OpenAiChat::new(config).unwrap();
    let options = GenerationOptions {
        max_tokens: 64,
        ..GenerationOptions::default()
    };
    let mut pieces = Vec::new();
    let result = client.chat(messages, tools, &options, &mut |piece| pieces.push(piece.to_string()));
    (pieces, result)
}

#[test]
fn streams_text_pieces_as_they_arrive_and_reads_usage() {
    let server = Server::start(|_| {
        let split_event = text(" world");
        let (first_half, second_half) = split_event.split_at(20);
        Response::event_stream([
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            ": keep-alive\n\n".to_string(),
            text("Hel"),
            text("lo"),
            // One event split over two HTTP chunks, then one event written as two `data:` lines.
            first_half.to_string(),
            second_half.to_string(),
            "event: message\nid: 4\ndata: {\"choices\": [{\"index\": 0,\ndata: \"delta\": {\"content\": \"!\"}}]}\n\n"
                .to_string(),
            chunk(json!({}), json!("stop")),
            format!(
                "data: {}\n\n",
                json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}})
            ),
            done(),
        ])
    });
    let (pieces, result) = chat(config(server.url()), &conversation(), &[]);
    let response = result.unwrap();
    assert_eq!(pieces, ["Hel", "lo", " world", "!"]);
    assert_eq!(response.content, "Hello world!");
    assert_eq!(response.finish_reason, FinishReason::Stop);
    assert_eq!(
        response.usage,
        Some(Usage {
            prompt_tokens: 12,
            completion_tokens: 4
        })
    );
    assert!(response.tool_calls.is_empty());

    // A base URL ending in /v1 reaches the same endpoint.
    let (_, result) = chat(config(&format!("{}/v1/", server.url())), &conversation(), &[]);
    assert_eq!(result.unwrap().content, "Hello world!");

    let received = server.requests();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(request.target, "/v1/chat/completions");
        assert_eq!(request.header("authorization"), Some("Bearer sk-test"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body = request.json();
        assert_eq!(body["model"], json!("test-model"));
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["max_tokens"], json!(64));
        assert_eq!(body["temperature"], json!(0.0));
        assert_eq!(
            body["messages"],
            json!([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Say hello."}])
        );
    }
}

#[test]
fn tool_calls_split_across_chunks_are_joined_by_index() {
    let server = Server::start(|_| {
        let call = |fragment: Value| chunk(json!({"tool_calls": [fragment]}), Value::Null);
        Response::event_stream([
            chunk(json!({"role": "assistant"}), Value::Null),
            call(json!({"index": 0, "id": "call_a", "type": "function",
                        "function": {"name": "search", "arguments": ""}})),
            // No id: one must be generated.
            call(json!({"index": 1, "type": "function", "function": {"name": "get_weather", "arguments": "{\"ci"}})),
            call(json!({"index": 0, "function": {"arguments": "{\"query\": \"re"}})),
            call(json!({"index": 1, "function": {"arguments": "ty\": \"Paris\"}"}})),
            call(json!({"index": 0, "function": {"arguments": "funds\"}"}})),
            chunk(json!({}), json!("tool_calls")),
            done(),
        ])
    });
    let earlier_call = ToolCall {
        id: "call_0".into(),
        name: "search".into(),
        arguments: "{\"query\": \"policy\"}".into(),
    };
    let messages = vec![
        Message::user("Refunds, and the weather in Paris?"),
        Message {
            tool_calls: vec![earlier_call],
            ..Message::assistant("")
        },
        Message::tool("call_0", "no results"),
    ];
    let tools = [Tool {
        name: "search".into(),
        description: "Search the knowledge base.".into(),
        parameters: json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
    }];
    let (pieces, result) = chat(config(server.url()), &messages, &tools);
    let response = result.unwrap();
    assert!(pieces.is_empty(), "{pieces:?}");
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(response.tool_calls.len(), 2);
    let (search, weather) = (&response.tool_calls[0], &response.tool_calls[1]);
    assert_eq!((search.id.as_str(), search.name.as_str()), ("call_a", "search"));
    assert_eq!(
        serde_json::from_str::<Value>(&search.arguments).unwrap(),
        json!({"query": "refunds"})
    );
    assert_eq!(weather.name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&weather.arguments).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(
        weather.id.starts_with("call_") && weather.id.len() > 5,
        "{}",
        weather.id
    );

    let body = server.requests()[0].json();
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "search", "description": "Search the knowledge base.", "parameters": tools[0].parameters}}])
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_0", "type": "function",
               "function": {"name": "search", "arguments": "{\"query\": \"policy\"}"}}]})
    );
    assert_eq!(
        body["messages"][2],
        json!({"role": "tool", "content": "no results", "tool_call_id": "call_0"})
    );
}

#[test]
fn rate_limit_429_waits_for_retry_after_and_5xx_backs_off_then_succeeds() {
    let server = Server::start(|request| match request.number {
        0 => Response::json(&json!({"error": {"message": "Rate limit reached", "type": "requests"}}))
            .with_status(429)
            .with_header("Retry-After", "1"),
        1 => Response::json(&json!({"error": "model is loading"})).with_status(503),
        _ => Response::event_stream([text("only "), text("once"), chunk(json!({}), json!("stop")), done()]),
    });
    let started = Instant::now();
    let (pieces, result) = chat(config(server.url()), &conversation(), &[]);
    assert_eq!(result.unwrap().content, "only once");
    assert_eq!(pieces, ["only ", "once"]);
    assert_eq!(server.requests().len(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured ({:?})",
        started.elapsed()
    );
}

#[test]
fn failure_after_text_was_streamed_is_an_error_and_not_retried() {
    // The server dies mid-answer; a retry would get a 500 (and could repeat "Hello wor").
    let server = Server::start(|request| match request.number {
        0 => Response::event_stream([text("Hello"), text(" wor")]).cut_off(),
        _ => Response::json(&json!({"error": {"message": "internal error"}})).with_status(500),
    });
    let (pieces, result) = chat(config(server.url()), &conversation(), &[]);
    let message = result.unwrap_err().to_string();
    assert_eq!(pieces, ["Hello", " wor"]);
    assert_eq!(server.requests().len(), 1, "retried after streaming: {message}");
    assert!(
        message.contains("9 characters") && message.contains("not retried"),
        "{message}"
    );

    // The server reports the failure inside the stream, as vLLM and llama.cpp do.
    let server = Server::start(|request| match request.number {
        0 => Response::event_stream([
            text("Partial"),
            format!(
                "data: {}\n\n",
                json!({"error": {"message": "CUDA out of memory", "type": "InternalServerError", "code": 500}})
            ),
        ]),
        _ => Response::event_stream([text("Partial answer"), chunk(json!({}), json!("stop")), done()]),
    });
    let (pieces, result) = chat(config(server.url()), &conversation(), &[]);
    let message = result.unwrap_err().to_string();
    assert_eq!(pieces, ["Partial"]);
    assert_eq!(server.requests().len(), 1);
    assert!(message.contains("CUDA out of memory"), "{message}");
}

#[test]
fn unauthorized_401_reports_status_and_server_message_without_retrying() {
    let server = Server::start(|_| {
        Response::json(
            &json!({"error": {"message": "Incorrect API key provided: sk-test.", "type": "invalid_request_error",
                              "code": "invalid_api_key"}}),
        )
        .with_status(401)
    });
    let (pieces, result) = chat(config(server.url()), &conversation(), &[]);
    let message = result.unwrap_err().to_string();
    assert!(pieces.is_empty());
    assert_eq!(server.requests().len(), 1);
    for expected in [
        "HTTP 401",
        "Incorrect API key provided: sk-test.",
        "OPENAI_API_KEY",
        "/v1/chat/completions",
    ] {
        assert!(message.contains(expected), "{expected:?} missing from: {message}");
    }
}

#[test]
fn a_non_streamed_json_completion_is_accepted() {
    let server = Server::start(|_| {
        Response::json(&json!({
            "id": "chatcmpl-2", "object": "chat.completion", "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me look that up.",
                "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": {"city": "Paris"}}},
                               {"type": "function", "function": {"name": "lookup", "arguments": "{\"city\": \"Rome\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
        }))
    });
    let (pieces, result) = chat(config(server.url()), &conversation(), &[]);
    let response = result.unwrap();
    assert_eq!(pieces, ["Let me look that up."]);
    assert_eq!(response.content, "Let me look that up.");
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        response.tool_calls.len(),
        2,
        "calls without index or id must stay apart"
    );
    assert_eq!(response.tool_calls[0].arguments, "{\"city\":\"Paris\"}");
    assert_eq!(response.tool_calls[1].arguments, "{\"city\": \"Rome\"}");
    assert_ne!(response.tool_calls[0].id, response.tool_calls[1].id);
    assert_eq!(
        response.usage,
        Some(Usage {
            prompt_tokens: 20,
            completion_tokens: 9
        })
    );
}

#[test]
fn quirky_servers_are_understood() {
    let server = Server::start(|request| match request.number {
        // TGI / llama.cpp style: `data:` without a space, CRLF line ends, pings, null and empty content, events not
        // separated by blank lines, finish_reason "eos", no [DONE].
        0 => Response::event_stream([
            ": ping\r\n\r\n".to_string(),
            format!(
                "data:{}\r\n\r\n",
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null}}]})
            ),
            format!(
                "data:{}\r\ndata:{}\r\n\r\n",
                json!({"choices": [{"index": 0, "delta": {"content": "Bon"}, "finish_reason": null}]}),
                json!({"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": null}]})
            ),
            format!("data: {}\r\n\r\n", json!({"choices": [], "usage": null})),
            format!(
                "data:{}\r\n\r\n",
                json!({"choices": [{"index": 0, "delta": {"content": "jour"}}]})
            ),
            format!(
                "data:{}\r\n\r\n",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "eos"}]})
            ),
        ]),
        // Ollama style: one tool call without index, arguments as an object, finish_reason "stop"; then [DONE]
        // right after the last event's data line.
        _ => Response::event_stream([
            chunk(
                json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_x",
                       "function": {"name": "search", "arguments": {"query": "refunds"}}}]}),
                Value::Null,
            ),
            format!(
                "data: {}\ndata: [DONE]\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]})
            ),
        ]),
    });
    let (pieces, result) = chat(config(server.url()), &conversation(), &[]);
    let response = result.unwrap();
    assert_eq!(pieces, ["Bon", "jour"]);
    assert_eq!(response.content, "Bonjour");
    assert_eq!(response.finish_reason, FinishReason::Stop);
    assert_eq!(response.usage, None);

    let (pieces, result) = chat(config(server.url()), &conversation(), &[]);
    let response = result.unwrap();
    assert_eq!(pieces, ["ok"]);
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        response.tool_calls,
        [ToolCall {
            id: "call_x".into(),
            name: "search".into(),
            arguments: "{\"query\":\"refunds\"}".into()
        }]
    );
}

#[test]
fn a_silent_server_times_out_retried_only_before_the_first_token() {
    let quick = |base_url: &str| OpenAiChatConfig {
        read_timeout: Duration::from_millis(300),
        ..config(base_url)
    };
    let server = Server::start(|request| match request.number {
        0 => Response::paced_event_stream([(Duration::from_millis(1200), text("too late"))]),
        1 => Response::event_stream([text("fine"), chunk(json!({}), json!("stop")), done()]),
        // Silent after the first token.
        _ => Response::paced_event_stream([
            (Duration::ZERO, text("half")),
            (Duration::from_millis(1200), text(" more")),
        ]),
    });
    let (pieces, result) = chat(quick(server.url()), &conversation(), &[]);
    assert_eq!(result.unwrap().content, "fine");
    assert_eq!(pieces, ["fine"]);

    let (pieces, result) = chat(quick(server.url()), &conversation(), &[]);
    let message = result.unwrap_err().to_string();
    assert_eq!(pieces, ["half"]);
    assert!(message.contains("no data from the server"), "{message}");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn an_unreachable_server_is_reported_after_the_retries() {
    let config = OpenAiChatConfig {
        max_retries: 1,
        ..config(&closed_url())
    };
    let (_, result) = chat(config, &conversation(), &[]);
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("2 attempt(s)") && message.contains("check that the server is running"),
        "{message}"
    );
}
