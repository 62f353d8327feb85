//! `knowhow serve` chat completions, end to end, through the official OpenAI Python SDK: a tiny random Qwen2 that
//! the test creates (plain, streamed with usage, stop, length), a tiny Llama trained here to call a tool (a
//! streamed tool call), and `rag:COLLECTION` answers with citations of a real collection. Also: a client that
//! hangs up mid-stream frees the worker, and knowhow's own `--llm openai:` client runs against knowhow serve.
//!
//! Needs KNOWHOW_TEST_MINILM (the server loads it) and KNOWHOW_PYTHON (torch, transformers, openai): skipped with
//! a message when unset, failed instead when KNOWHOW_REQUIRE_REAL_MODELS=1.

mod common;
#[path = "serve/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{write, Knowhow};
use knowhow_testkit::http::{Response, Server};
use knowhow_testkit_tiny::{self as tiny, TinyOptions};
use serde_json::{json, Value};
use support::{call, minilm_and_python, serve, tiny_adapter, tiny_qwen2};

const TOOL_CALL: &str = r#"{"name":"get_weather","parameters":{"city":"Paris"}}"#;

fn handbook(kh: &Knowhow, model: &str) {
    let docs = kh.home.path().join("docs");
    write(
        &docs.join("vacation.md"),
        "# Vacation policy\n\nEmployees receive twenty-five days of paid vacation per year.\n",
    );
    write(
        &docs.join("expenses.md"),
        "# Expense reports\n\nReceipts are submitted within thirty days through the finance portal.\n",
    );
    kh.ok(&[
        "-c",
        "handbook",
        "ingest",
        docs.to_str().unwrap(),
        "--embed-model",
        model,
    ]);
}

#[test]
fn the_official_openai_sdk_chats_streams_calls_tools_and_gets_citations() {
    let test = "the_official_openai_sdk_chats_streams_calls_tools_and_gets_citations";
    let Some((model, python)) = minilm_and_python(test) else {
        return;
    };
    let chat_home = Knowhow::new();
    let qwen = tiny_qwen2(&python, &chat_home.home.path().join("tiny-qwen2"));
    let support = tiny_adapter(&python, &qwen, &chat_home.home.path().join("support"), 1);
    let chat = serve(
        &chat_home,
        &model,
        &[
            "--llm",
            &format!("local:{}", qwen.display()),
            "--adapter",
            support.to_str().unwrap(),
        ],
    );

    let tools_home = Knowhow::new();
    let llama = tools_home.home.path().join("tiny-llama");
    tiny::pretrain(
        &llama,
        &[("w".to_string(), TOOL_CALL.to_string())],
        &TinyOptions::default(),
    )
    .unwrap();
    let tools = serve(&tools_home, &model, &["--llm", &format!("local:{}", llama.display())]);

    // The hosted LLM a RAG deployment would call cannot run here: a test double answers, citing source 1.
    let hosted = Server::start(|_| {
        Response::json(&json!({
            "id": "chatcmpl-double", "object": "chat.completion", "created": 1, "model": "hosted",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Employees get twenty-five days of paid vacation [1]."}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62},
        }))
    });
    let rag_home = Knowhow::new();
    handbook(&rag_home, &model);
    let rag = serve(
        &rag_home,
        &model,
        &["--llm", &format!("openai:{}#hosted", hosted.url())],
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/openai_sdk_chat.py");
    let out = std::process::Command::new(&python)
        .args([script.to_str().unwrap(), &chat.url, &tools.url, &rag.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();

    let ids: Vec<&str> = seen["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"local"), "{ids:?}");
    let adapter = seen["models"].as_array().unwrap().iter().find(|m| m["id"] == "support");
    assert_eq!(
        adapter.map(|m| &m["parent"]),
        Some(&json!("local")),
        "{}",
        seen["models"]
    );
    // Plain: a reply cut by max_tokens says so.
    let plain = &seen["plain"];
    assert_eq!(plain["finish_reason"], "length", "{plain}");
    assert_eq!(plain["usage"]["completion_tokens"], 8);
    assert!(plain["id"].as_str().unwrap().starts_with("chatcmpl-"));
    // Streamed: one id, the same (greedy) text, usage null on every chunk but the last, which has the totals.
    let stream = &seen["stream"];
    assert_eq!(stream["ids"].as_array().unwrap().len(), 1, "{stream}");
    assert_eq!(stream["content"], plain["content"]);
    assert_eq!(stream["finish_reasons"], json!(["length"]));
    assert_eq!(
        stream["usage_nulls"].as_u64().unwrap() + 1,
        stream["chunks"].as_u64().unwrap()
    );
    assert_eq!(stream["last"]["choices"], json!([]));
    assert_eq!(stream["last"]["usage"]["completion_tokens"], 8);
    assert_eq!(stream["last"]["usage"]["total_tokens"], plain["usage"]["total_tokens"]);
    // A stop string ends the reply before it.
    let stop = &seen["stop"];
    let cut = plain["content"]
        .as_str()
        .unwrap()
        .split(stop["stop"].as_str().unwrap())
        .next()
        .unwrap();
    assert_eq!(stop["content"], cut, "{stop}");
    assert_eq!(stop["finish_reason"], "stop");
    assert_eq!(seen["unknown_model"], json!({"status": 404, "code": "model_not_found"}));
    // A streamed tool call, its name and arguments joined from the deltas by index.
    let tool = &seen["tool_call"];
    assert_eq!(tool["finish_reason"], "tool_calls", "{tool}");
    assert_eq!(tool["calls"][0]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(tool["calls"][0]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert!(tool["calls"][0]["id"].is_string());
    // rag:handbook: the marker stays in the text; the citation points at the real chunk.
    assert!(
        seen["rag_models"].as_array().unwrap().contains(&json!("rag:handbook")),
        "{}",
        seen["rag_models"]
    );
    let rag_answer = &seen["rag"];
    assert!(rag_answer["content"].as_str().unwrap().contains("[1]"), "{rag_answer}");
    assert_eq!(rag_answer["abstained"], false);
    let citation = &rag_answer["citations"][0];
    assert_eq!(citation["n"], 1, "{rag_answer}");
    assert_eq!(citation["title"], "Vacation policy");
    assert!(citation["text"].as_str().unwrap().contains("twenty-five days"));
    let document = call(
        &rag.url,
        "GET",
        &format!(
            "/v1/collections/handbook/documents/{}",
            citation["document_id"].as_str().unwrap()
        ),
        None,
        None,
    );
    let chunk = &document.body["chunks"][citation["chunk"].as_u64().unwrap() as usize];
    assert_eq!(chunk["char_start"], citation["char_start"], "{}", document.body);
    assert!(citation["scores"]["fused"].as_f64().is_some(), "{citation}");
    assert_eq!(seen["rag_stream_citations"], rag_answer["citations"]);
}

/// `knowhow serve` over a tiny random Qwen2, and a request whose reply takes seconds: 3000 tokens, which this
/// checkpoint's random weights run to without choosing its end token (the tests check the count).
fn serving_a_long_reply(kh: &Knowhow, model: &str, python: &str) -> (support::Served, serde_json::Value) {
    let qwen = tiny_qwen2(python, &kh.home.path().join("tiny-qwen2"));
    let served = serve(kh, model, &["--llm", &format!("local:{}", qwen.display())]);
    let long = json!({"model": "local", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3000});
    (served, long)
}

#[test]
fn a_client_that_hangs_up_mid_stream_frees_the_worker() {
    let test = "a_client_that_hangs_up_mid_stream_frees_the_worker";
    let Some((model, python)) = minilm_and_python(test) else {
        return;
    };
    let kh = Knowhow::new();
    let (served, long) = serving_a_long_reply(&kh, &model, &python);
    let started = Instant::now();
    let full = call(&served.url, "POST", "/v1/chat/completions", None, Some(long.clone()));
    let full_time = started.elapsed();
    assert_eq!(full.body["usage"]["completion_tokens"], 3000, "{}", full.body);
    assert!(
        full_time > Duration::from_secs(1),
        "the long reply must take a while: {full_time:?}"
    );

    let mut streaming = long.clone();
    streaming["stream"] = json!(true);
    let mut response = support::agent()
        .post(format!("{}/v1/chat/completions", served.url))
        .header("content-type", "application/json")
        .send(streaming.to_string())
        .unwrap();
    let mut lines = BufReader::new(response.body_mut().as_reader()).lines();
    let mut seen = 0;
    while seen < 3 {
        if lines.next().unwrap().unwrap().starts_with("data: ") {
            seen += 1;
        }
    }
    drop(lines);
    drop(response);
    let hung_up = Instant::now();
    // One worker: this waits for the abandoned generation unless the hang-up cancelled it.
    let short = json!({"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1});
    let next = call(&served.url, "POST", "/v1/chat/completions", None, Some(short));
    assert_eq!(next.status, 200, "{}", next.body);
    let waited = hung_up.elapsed();
    assert!(
        waited < full_time / 3,
        "the worker was freed after {waited:?} (a full reply takes {full_time:?})"
    );
}

#[test]
fn knowhows_own_openai_client_answers_through_knowhow_serve() {
    let test = "knowhows_own_openai_client_answers_through_knowhow_serve";
    let Some((model, python)) = minilm_and_python(test) else {
        return;
    };
    let server_home = Knowhow::new();
    let qwen = tiny_qwen2(&python, &server_home.home.path().join("tiny-qwen2"));
    let served = serve(&server_home, &model, &["--llm", &format!("local:{}", qwen.display())]);
    let kh = Knowhow::new();
    handbook(&kh, &model);
    let spec = format!("openai:{}/v1#local", served.url);
    let answer = kh.json(&[
        "-c",
        "handbook",
        "ask",
        "How many days of paid vacation do employees get?",
        "--llm",
        &spec,
        "--max-tokens",
        "16",
        "--min-coverage",
        "0",
    ]);
    assert_eq!(answer["model"], spec.as_str(), "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 16, "{answer}");
    assert!(!answer["sources"].as_array().unwrap().is_empty());
}

#[test]
fn sigterm_drains_the_requests_in_flight_then_exits() {
    let test = "sigterm_drains_the_requests_in_flight_then_exits";
    let Some((model, python)) = minilm_and_python(test) else {
        return;
    };
    let kh = Knowhow::new();
    let (mut served, long) = serving_a_long_reply(&kh, &model, &python);
    let url = served.url.clone();
    let in_flight = std::thread::spawn(move || call(&url, "POST", "/v1/chat/completions", None, Some(long)));
    // Until the worker has taken it: the queue is empty and nothing has come back yet.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!in_flight.is_finished(), "the long reply must still be generating");
    let pid = served.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let answer = in_flight.join().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body["usage"]["completion_tokens"], 3000,
        "the reply in flight was finished"
    );
    let status = served.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // Stopped: nobody answers on the address anymore.
    let after = support::agent().get(format!("{}/health", served.url)).call();
    assert!(after.is_err(), "{after:?}");
}
