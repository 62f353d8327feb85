//! The OpenAI-compatible chat client against a local test server, since vLLM, Ollama, llama.cpp, TGI and OpenAI
//! cannot run in tests: the server speaks real HTTP/1.1 and streams Server-Sent Events in chunked transfer encoding,
//! piece by piece with pauses, the way those servers do (including their quirks), and records every request so that
//! tests assert on what the client sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use knowhow_rag::llm::openai::{OpenAiChat, OpenAiChatConfig};
use knowhow_rag::llm::{
    ChatModel, ChatResponse, FinishReason, GenerationOptions, LlmError, Message, Tool, ToolCall, Usage,
};
use serde_json::{json, Value};

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: Value,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the server answers.
enum Reply {
    /// `200` with `text/event-stream` in chunked encoding: each piece is one HTTP chunk, written after its pause.
    /// With `hang_up`, the connection closes without the final chunk, as when a server dies mid-answer.
    Stream {
        pieces: Vec<(Duration, String)>,
        hang_up: bool,
    },
    /// A whole response with `Content-Length`.
    Full {
        status: u16,
        content_type: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
    },
}

impl Reply {
    fn stream(pieces: impl IntoIterator<Item = String>) -> Reply {
        Reply::Stream {
            pieces: pieces.into_iter().map(|piece| (Duration::ZERO, piece)).collect(),
            hang_up: false,
        }
    }

    fn json(status: u16, body: Value) -> Reply {
        Reply::Full {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
}

struct TestServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves on 127.0.0.1 (a free port) until dropped, each connection on its own thread (a client that gave up
    /// on a slow answer retries while that answer is still being written); `handler` gets the 0-based number of
    /// the request.
    fn start(handler: impl FnMut(usize, &Received) -> Reply + Send + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(Mutex::new(handler));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut connections = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let (received, handler) = (received.clone(), handler.clone());
                    connections.push(std::thread::spawn(move || {
                        let Some(request) = read_request(&mut stream) else {
                            return;
                        };
                        let reply = {
                            let mut received = received.lock().unwrap();
                            received.push(request.clone());
                            (handler.lock().unwrap())(received.len() - 1, &request)
                        };
                        // The client may have given up (a timeout test); a failed write is its business.
                        let _ = write_reply(&mut stream, reply);
                    }));
                }
                for connection in connections {
                    let _ = connection.join();
                }
            })
        };
        TestServer {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body: serde_json::from_slice(&body).ok()?,
    })
}

fn write_reply(stream: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
    match reply {
        Reply::Stream { pieces, hang_up } => {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                  Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            )?;
            stream.flush()?;
            for (pause, piece) in pieces {
                std::thread::sleep(pause);
                write!(stream, "{:x}\r\n{piece}\r\n", piece.len())?;
                stream.flush()?;
            }
            if !hang_up {
                stream.write_all(b"0\r\n\r\n")?;
            }
        }
        Reply::Full {
            status,
            content_type,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
                match status {
                    200 => "OK",
                    401 => "Unauthorized",
                    429 => "Too Many Requests",
                    500 => "Internal Server Error",
                    503 => "Service Unavailable",
                    _ => "Status",
                },
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes())?;
            stream.write_all(body.as_bytes())?;
        }
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

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

fn config(base_url: String) -> OpenAiChatConfig {
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
    let server = TestServer::start(|_, _| {
        let split_event = text(" world");
        let (first_half, second_half) = split_event.split_at(20);
        Reply::stream([
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
    let (pieces, result) = chat(config(server.base_url()), &conversation(), &[]);
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
    let (_, result) = chat(config(format!("{}/v1/", server.base_url())), &conversation(), &[]);
    assert_eq!(result.unwrap().content, "Hello world!");

    let received = server.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(request.header("authorization"), Some("Bearer sk-test"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body = &request.body;
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
    let server = TestServer::start(|_, _| {
        let call = |fragment: Value| chunk(json!({"tool_calls": [fragment]}), Value::Null);
        Reply::stream([
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
    let (pieces, result) = chat(config(server.base_url()), &messages, &tools);
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

    let body = &server.received()[0].body;
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
    let server = TestServer::start(|number, _| match number {
        0 => Reply::Full {
            status: 429,
            content_type: "application/json",
            headers: vec![("Retry-After", "1")],
            body: json!({"error": {"message": "Rate limit reached", "type": "requests"}}).to_string(),
        },
        1 => Reply::json(503, json!({"error": "model is loading"})),
        _ => Reply::stream([text("only "), text("once"), chunk(json!({}), json!("stop")), done()]),
    });
    let started = Instant::now();
    let (pieces, result) = chat(config(server.base_url()), &conversation(), &[]);
    assert_eq!(result.unwrap().content, "only once");
    assert_eq!(pieces, ["only ", "once"]);
    assert_eq!(server.received().len(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured ({:?})",
        started.elapsed()
    );
}

#[test]
fn failure_after_text_was_streamed_is_an_error_and_not_retried() {
    // The server dies mid-answer; a retry would get a 500 (and could repeat "Hello wor").
    let server = TestServer::start(|number, _| match number {
        0 => Reply::Stream {
            pieces: vec![(Duration::ZERO, text("Hello")), (Duration::ZERO, text(" wor"))],
            hang_up: true,
        },
        _ => Reply::json(500, json!({"error": {"message": "internal error"}})),
    });
    let (pieces, result) = chat(config(server.base_url()), &conversation(), &[]);
    let message = result.unwrap_err().to_string();
    assert_eq!(pieces, ["Hello", " wor"]);
    assert_eq!(server.received().len(), 1, "retried after streaming: {message}");
    assert!(
        message.contains("9 characters") && message.contains("not retried"),
        "{message}"
    );

    // The server reports the failure inside the stream, as vLLM and llama.cpp do.
    let server = TestServer::start(|number, _| match number {
        0 => Reply::stream([
            text("Partial"),
            format!(
                "data: {}\n\n",
                json!({"error": {"message": "CUDA out of memory", "type": "InternalServerError", "code": 500}})
            ),
        ]),
        _ => Reply::stream([text("Partial answer"), chunk(json!({}), json!("stop")), done()]),
    });
    let (pieces, result) = chat(config(server.base_url()), &conversation(), &[]);
    let message = result.unwrap_err().to_string();
    assert_eq!(pieces, ["Partial"]);
    assert_eq!(server.received().len(), 1);
    assert!(message.contains("CUDA out of memory"), "{message}");
}

#[test]
fn unauthorized_401_reports_status_and_server_message_without_retrying() {
    let server = TestServer::start(|_, _| {
        Reply::json(
            401,
            json!({"error": {"message": "Incorrect API key provided: sk-test.", "type": "invalid_request_error",
                             "code": "invalid_api_key"}}),
        )
    });
    let (pieces, result) = chat(config(server.base_url()), &conversation(), &[]);
    let message = result.unwrap_err().to_string();
    assert!(pieces.is_empty());
    assert_eq!(server.received().len(), 1);
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
    let server = TestServer::start(|_, _| {
        Reply::json(
            200,
            json!({
                "id": "chatcmpl-2", "object": "chat.completion", "model": "test-model",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": "Let me look that up.",
                    "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": {"city": "Paris"}}},
                                   {"type": "function", "function": {"name": "lookup", "arguments": "{\"city\": \"Rome\"}"}}]}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
            }),
        )
    });
    let (pieces, result) = chat(config(server.base_url()), &conversation(), &[]);
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
    let server = TestServer::start(|number, _| match number {
        // TGI / llama.cpp style: `data:` without a space, CRLF line ends, pings, null and empty content, events not
        // separated by blank lines, finish_reason "eos", no [DONE].
        0 => Reply::stream([
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
        _ => Reply::stream([
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
    let (pieces, result) = chat(config(server.base_url()), &conversation(), &[]);
    let response = result.unwrap();
    assert_eq!(pieces, ["Bon", "jour"]);
    assert_eq!(response.content, "Bonjour");
    assert_eq!(response.finish_reason, FinishReason::Stop);
    assert_eq!(response.usage, None);

    let (pieces, result) = chat(config(server.base_url()), &conversation(), &[]);
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
    let quick = |base_url| OpenAiChatConfig {
        read_timeout: Duration::from_millis(300),
        ..config(base_url)
    };
    let server = TestServer::start(|number, _| match number {
        0 => Reply::Stream {
            pieces: vec![(Duration::from_millis(1200), text("too late"))],
            hang_up: false,
        },
        1 => Reply::stream([text("fine"), chunk(json!({}), json!("stop")), done()]),
        // Silent after the first token.
        _ => Reply::Stream {
            pieces: vec![
                (Duration::ZERO, text("half")),
                (Duration::from_millis(1200), text(" more")),
            ],
            hang_up: false,
        },
    });
    let (pieces, result) = chat(quick(server.base_url()), &conversation(), &[]);
    assert_eq!(result.unwrap().content, "fine");
    assert_eq!(pieces, ["fine"]);

    let (pieces, result) = chat(quick(server.base_url()), &conversation(), &[]);
    let message = result.unwrap_err().to_string();
    assert_eq!(pieces, ["half"]);
    assert!(message.contains("no data from the server"), "{message}");
    assert_eq!(server.received().len(), 3);
}

#[test]
fn an_unreachable_server_is_reported_after_the_retries() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = OpenAiChatConfig {
        max_retries: 1,
        ..config(format!("http://{addr}"))
    };
    let (_, result) = chat(config, &conversation(), &[]);
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("2 attempt(s)") && message.contains("check that the server is running"),
        "{message}"
    );
}
