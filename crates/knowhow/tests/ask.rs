//! `knowhow ask`, `quickstart` and `log` end to end, through the binary.
//!
//! No language model that follows instructions exists on this machine, so the
//! model-written answers come from a local test server that speaks the OpenAI
//! chat wire protocol (streamed SSE, tool calls); the tests check what the
//! binary sent it and what it made of the replies. Everything else is real:
//! the files, the index, retrieval, citations, the audit log.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{stderr, stdout, write, Knowhow};
use serde_json::{json, Value};

fn corpus(kh: &Knowhow) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("frobnicator.md"),
        "# Frobnicator manual\n\n## Calibration\n\nThe frobnicator needs calibration every week. \
         Calibration takes ten minutes with the blue key.\n\n## Safety\n\nWear goggles near the frobnicator. \
         Never open the housing while it hums.\n",
    );
    write(
        &dir.path().join("garden.md"),
        "# Garden notes\n\nTomatoes need sun and daily water in summer. Basil grows well beside tomatoes.\n",
    );
    kh.ok(&["ingest", dir.path().to_str().unwrap()]);
    dir
}

/// A local test server standing in for an OpenAI-compatible LLM server: it
/// answers each request with the next SSE body of `replies` and keeps every
/// request body it got.
struct TestServer {
    url: String,
    requests: Arc<Mutex<Vec<Value>>>,
}

fn sse(chunks: &[Value]) -> String {
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    body
}

fn text_reply(text: &str) -> String {
    let pieces: Vec<Value> = text
        .split_inclusive(' ')
        .map(|piece| json!({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]}))
        .chain([json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})])
        .collect();
    sse(&pieces)
}

fn tool_call_reply(query: &str) -> String {
    let arguments = json!({"query": query}).to_string();
    let (first, second) = arguments.split_at(arguments.len() / 2);
    sse(&[
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "search", "arguments": first}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": second}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ])
}

impl TestServer {
    fn start(replies: Vec<String>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for (stream, reply) in listener.incoming().zip(replies) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{reply}",
                    reply.len()
                );
                stream.write_all(response.as_bytes()).unwrap();
            }
        });
        TestServer { url, requests }
    }

    fn llm(&self) -> String {
        format!("openai:{}#test-model", self.url)
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

#[test]
fn extractive_answers_cite_sources_with_spans_and_land_in_the_audit_log() {
    let kh = Knowhow::new();
    let _dir = corpus(&kh);
    let answer = kh.json(&["ask", "How often does the frobnicator need calibration?"]);
    assert_eq!(answer["extractive"], true, "{answer}");
    assert_eq!(answer["abstained"], false);
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains("calibration every week"), "{text}");
    let cited = answer["cited"].as_array().unwrap();
    assert_eq!(cited.len(), 1, "{answer}");
    let source = &cited[0];
    assert!(source["source"].as_str().unwrap().ends_with("frobnicator.md"));
    // The source's character span is the span of the chunks it was made of.
    assert!(source["text"]
        .as_str()
        .unwrap()
        .contains("The frobnicator needs calibration every week."));
    let shown = kh.json(&["docs", "show", source["document_id"].as_str().unwrap()]);
    let ordinals: Vec<u64> = source["ordinals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    let chunks: Vec<&Value> = shown["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| ordinals.contains(&c["ordinal"].as_u64().unwrap()))
        .collect();
    assert_eq!(chunks.len(), ordinals.len(), "{shown}");
    assert_eq!(source["char_start"], chunks[0]["char_start"]);
    assert_eq!(source["char_end"], chunks.last().unwrap()["char_end"]);

    let log = kh.ok(&["--json", "log"]);
    let records: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0]["question"],
        "How often does the frobnicator need calibration?"
    );
    assert_eq!(records[0]["model"], "extractive");
    assert_eq!(records[0]["cited"][0]["document_id"], source["document_id"]);
    assert!(!records[0]["retrieved"].as_array().unwrap().is_empty());
    assert_eq!(records[0]["prompt_hash"].as_str().unwrap().len(), 64);
    assert!(kh
        .ok(&["log"])
        .contains("Q: How often does the frobnicator need calibration?"));
}

#[test]
fn questions_the_documents_do_not_cover_are_refused_with_the_closest_sources() {
    let kh = Knowhow::new();
    let _dir = corpus(&kh);
    let answer = kh.json(&["ask", "What is the airspeed velocity of an unladen swallow?"]);
    assert_eq!(answer["abstained"], true, "{answer}");
    assert_eq!(answer["text"], "Not found in the documents.");
    let out = kh.ok(&["ask", "What is the airspeed velocity of an unladen swallow?"]);
    assert!(out.starts_with("Not found in the documents."), "{out}");
}

#[test]
fn a_model_answer_streams_from_a_local_test_server_and_bad_citations_are_removed() {
    let kh = Knowhow::new();
    let _dir = corpus(&kh);
    let server = TestServer::start(vec![text_reply(
        "Calibrate it every week [1], which takes ten minutes [1][7].",
    )]);
    let out = kh.run(&[
        "ask",
        "How often does the frobnicator need calibration?",
        "--llm",
        &server.llm(),
        "--show-prompt",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    // Streamed as written, then corrected: [7] names no source.
    assert!(
        printed.contains("Calibrate it every week [1], which takes ten minutes [1][7]."),
        "{printed}"
    );
    assert!(
        printed.contains("Calibrate it every week [1], which takes ten minutes [1]."),
        "{printed}"
    );
    assert!(stderr(&out).contains("[7]"), "{}", stderr(&out));
    assert!(printed.contains("frobnicator.md"), "{printed}");
    assert!(printed.contains("── prompt ──"), "{printed}");

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request["model"], "test-model");
    assert_eq!(request["stream"], true);
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    let user = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(user.contains("[1] Frobnicator manual"), "{user}");
    assert!(
        user.contains("How often does the frobnicator need calibration?"),
        "{user}"
    );
    // The prompt shown is the prompt sent.
    assert!(printed.contains(user.lines().next().unwrap()), "{printed}");

    let log = kh.ok(&["--json", "log"]);
    let record: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(record["model"], format!("{}", server.llm()));
}

#[test]
fn agentic_mode_lets_the_model_search_through_a_local_test_server() {
    let kh = Knowhow::new();
    let _dir = corpus(&kh);
    let server = TestServer::start(vec![
        tool_call_reply("goggles safety"),
        text_reply("Wear goggles near it [1]."),
    ]);
    let out = kh.run(&[
        "--json",
        "ask",
        "What protective gear does the manual ask for?",
        "--mode",
        "agentic",
        "--llm",
        &server.llm(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(answer["steps"], 2, "{answer}");
    assert_eq!(answer["text"], "Wear goggles near it [1].");
    assert!(
        answer["cited"][0]["text"].as_str().unwrap().contains("goggles"),
        "{answer}"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["tools"][0]["function"]["name"], "search");
    // The second request carries the call and the search results.
    let messages = requests[1]["messages"].as_array().unwrap();
    let tool = messages.iter().find(|m| m["role"] == "tool").expect("no tool message");
    assert_eq!(tool["tool_call_id"], "call_1");
    assert!(tool["content"].as_str().unwrap().contains("goggles"), "{tool}");
}

#[test]
fn long_context_refuses_a_collection_that_does_not_fit_and_names_the_sizes() {
    let kh = Knowhow::new();
    let _dir = corpus(&kh);
    let server = TestServer::start(Vec::new());
    let out = kh.run(&[
        "ask",
        "What does the manual say?",
        "--mode",
        "long-context",
        "--llm",
        &server.llm(),
        "--context-tokens",
        "120",
        "--max-tokens",
        "60",
    ]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("long-context mode needs"), "{message}");
    assert!(message.contains("leaves 60"), "{message}");
    assert!(server.requests().is_empty());
}

#[test]
fn quickstart_ingests_the_sample_corpus_and_answers_three_questions_offline() {
    let kh = Knowhow::new();
    let out = kh.ok(&["quickstart"]);
    assert!(out.contains("7 documents added"), "{out}");
    assert!(out.contains("Lady Gaga"), "{out}");
    assert_eq!(out.matches("── Question").count(), 3, "{out}");
    assert!(out.matches("Sources:").count() >= 3, "{out}");
    assert!(kh.home.path().join("samples/super-bowl-50/LICENSE.md").is_file());
    // Nothing new the second time.
    let again = kh.ok(&["quickstart"]);
    assert!(again.contains("0 documents added, 7 files unchanged"), "{again}");
    let log = kh.ok(&["--json", "log"]);
    assert_eq!(log.lines().count(), 6);
    // Run through `cargo run`, `knowhow` is not on the PATH: the "Next:" lines say how to put it there.
    let not_installed = kh.command().arg("quickstart").env("PATH", "").output().unwrap();
    assert!(not_installed.status.success());
    let printed = common::stdout(&not_installed);
    assert!(printed.contains("cargo install --path crates/knowhow"), "{printed}");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_knowhow")).parent().unwrap();
    let installed = kh.command().arg("quickstart").env("PATH", bin).output().unwrap();
    assert!(!common::stdout(&installed).contains("cargo install"));
}
