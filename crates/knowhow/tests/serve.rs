//! `knowhow serve` end to end: the official OpenAI Python SDK (pinned in bench/requirements.txt) against a live
//! server on loopback, with the real all-MiniLM-L6-v2; and the refusals that need no model.
//!
//! Needs KNOWHOW_TEST_MINILM (the model folder) and KNOWHOW_PYTHON (a Python with `openai`); skipped with a message
//! when unset, failed instead when KNOWHOW_REQUIRE_REAL_MODELS=1.

mod common;
#[path = "serve/support.rs"]
mod support;

use std::path::Path;

use common::Knowhow;
use support::{agent, minilm, minilm_and_python, serve};

const TEXTS: [&str; 3] = [
    "The feline dozed all afternoon on the woven rug.",
    "Interest rates rose again.",
    "Magma pushed through the crust and the mountain erupted.",
];

/// `knowhow embed`'s vectors for TEXTS.
fn embed_cli(kh: &Knowhow, model: &str) -> Vec<Vec<f32>> {
    let input = kh.home.path().join("texts.txt");
    std::fs::write(&input, TEXTS.join("\n")).unwrap();
    kh.ok(&["embed", "--model", model, input.to_str().unwrap()])
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn f32_rows(value: &serde_json::Value) -> Vec<Vec<f32>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

#[test]
fn the_official_openai_sdk_gets_the_same_vectors_as_knowhow_embed_and_its_own_exceptions() {
    let test = "the_official_openai_sdk_gets_the_same_vectors_as_knowhow_embed_and_its_own_exceptions";
    let Some((model, python)) = minilm_and_python(test) else {
        return;
    };
    let kh = Knowhow::new();
    let served = serve(&kh, &model, &[]);
    let models = agent()
        .get(format!("{}/v1/models", served.url))
        .call()
        .unwrap()
        .body_mut()
        .read_json::<serde_json::Value>()
        .unwrap();
    let model_id = models["data"][0]["id"].as_str().unwrap().to_string();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/openai_sdk.py");
    let texts = serde_json::to_string(&TEXTS).unwrap();
    let out = std::process::Command::new(&python)
        .args([script.to_str().unwrap(), &served.url, &model_id, &texts])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(seen["models"], serde_json::json!([model_id]));
    assert_eq!(seen["model"], model_id.as_str());
    assert_eq!(seen["indexes"], serde_json::json!([0, 1, 2]));
    assert!(seen["usage"].as_u64().unwrap() > 10, "{}", seen["usage"]);
    // Bit for bit: the SDK's default (base64) = encoding_format float = knowhow embed.
    let expected = embed_cli(&kh, &model);
    assert_eq!(expected.len(), TEXTS.len());
    assert_eq!(f32_rows(&seen["float"]), expected);
    assert_eq!(f32_rows(&seen["default"]), expected);
    assert_eq!(f32_rows(&serde_json::json!([seen["single"]])), expected[..1]);
    // Each error class is the SDK's own exception, with the status and field.
    let errors = &seen["errors"];
    assert_eq!(errors["unknown_model"]["status"], 404, "{errors}");
    assert_eq!(errors["unknown_model"]["code"], "model_not_found");
    assert_eq!(
        errors["token_ids"],
        serde_json::json!({"status": 400, "param": "input"})
    );
    assert_eq!(
        errors["dimensions"],
        serde_json::json!({"status": 400, "param": "dimensions"})
    );
}

#[test]
fn every_answer_has_a_request_id_errors_have_the_openai_shape_and_bodies_are_limited() {
    let test = "every_answer_has_a_request_id_errors_have_the_openai_shape_and_bodies_are_limited";
    let Some(model) = minilm(test) else {
        return;
    };
    let kh = Knowhow::new();
    let served = serve(&kh, &model, &["--max-body-bytes", "1024"]);
    let agent = agent();

    let mut health = agent.get(format!("{}/health", served.url)).call().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let id = health
        .headers()
        .get("x-request-id")
        .expect("a request id")
        .to_str()
        .unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let body: serde_json::Value = health.body_mut().read_json().unwrap();
    assert_eq!(body["status"], "ok");

    let mut missing = agent.get(format!("{}/v1/nothing", served.url)).call().unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let body: serde_json::Value = missing.body_mut().read_json().unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].is_string());

    let mut broken = agent
        .post(format!("{}/v1/embeddings", served.url))
        .header("content-type", "application/json")
        .send("{not json")
        .unwrap();
    assert_eq!(broken.status().as_u16(), 400);
    let body: serde_json::Value = broken.body_mut().read_json().unwrap();
    assert_eq!(body["error"]["param"], "body");

    let huge = serde_json::json!({"model": "default", "input": "x".repeat(4096)}).to_string();
    let mut too_large = agent
        .post(format!("{}/v1/embeddings", served.url))
        .header("content-type", "application/json")
        .send(huge.as_str())
        .unwrap();
    assert_eq!(too_large.status().as_u16(), 413);
    // In the OpenAI shape, as every other error, though axum itself refused it.
    let body: serde_json::Value = serde_json::from_str(&too_large.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "request_too_large", "{body}");
    let mut wrong_method = agent.get(format!("{}/v1/embeddings", served.url)).call().unwrap();
    assert_eq!(wrong_method.status().as_u16(), 405);
    assert_eq!(wrong_method.headers().get("allow").unwrap(), "POST");
    let body: serde_json::Value = serde_json::from_str(&wrong_method.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
}

/// One value of the server's Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn concurrent_embedding_requests_are_batched_and_each_gets_its_own_vectors() {
    let test = "concurrent_embedding_requests_are_batched_and_each_gets_its_own_vectors";
    let Some(model) = minilm(test) else {
        return;
    };
    let kh = Knowhow::new();
    let docs = kh.home.path().join("notes");
    std::fs::create_dir_all(&docs).unwrap();
    for (i, text) in TEXTS.iter().enumerate() {
        std::fs::write(docs.join(format!("{i}.txt")), text).unwrap();
    }
    kh.ok(&["-c", "notes", "ingest", docs.to_str().unwrap(), "--embed-model", &model]);
    let served = serve(&kh, &model, &[]);
    let texts: Vec<String> = (0..48)
        .map(|i| format!("{} (variant {i})", TEXTS[i % TEXTS.len()]))
        .collect();
    let embed = |url: &str, text: &str| -> Vec<f32> {
        let answer = support::call(
            url,
            "POST",
            "/v1/embeddings",
            None,
            Some(serde_json::json!({"model": "default", "input": text})),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        f32_rows(&serde_json::json!([answer.body["data"][0]["embedding"]])).remove(0)
    };
    // One at a time: each text alone in its batch.
    let alone: Vec<Vec<f32>> = texts.iter().map(|t| embed(&served.url, t)).collect();
    let metrics = || support::metrics(&served.url);
    let before = metrics();
    let (batches_before, requests_before) = (
        metric(&before, "knowhow_embed_batches_total"),
        metric(&before, "knowhow_embed_batched_requests_total"),
    );
    assert_eq!(batches_before, requests_before, "sequential requests are never batched");

    // Sixteen clients at once, three texts each.
    let barrier = std::sync::Barrier::new(16);
    let together: Vec<(usize, Vec<f32>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..16)
            .map(|client| {
                let (barrier, texts, url) = (&barrier, &texts, served.url.as_str());
                scope.spawn(move || {
                    barrier.wait();
                    (client * 3..client * 3 + 3)
                        .map(|i| (i, embed(url, &texts[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let after = metrics();
    let batches = metric(&after, "knowhow_embed_batches_total") - batches_before;
    let requests = metric(&after, "knowhow_embed_batched_requests_total") - requests_before;
    assert_eq!(requests, 48);
    assert!(
        batches < requests,
        "48 concurrent requests took {batches} forward passes"
    );
    // Packed without padding: a vector does not depend on the texts it shared a batch with.
    assert_eq!(together.len(), 48);
    for (i, vector) in together {
        assert_eq!(vector, alone[i], "{}", texts[i]);
    }

    // Hybrid searches at once: their queries share batches while BM25 runs beside, and every one is answered as
    // it is alone.
    let search = |url: &str, query: &str| -> String {
        let answer = support::call(
            url,
            "POST",
            "/v1/collections/notes/search",
            None,
            Some(serde_json::json!({"query": query, "mode": "hybrid", "k": 1})),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body["data"][0]["source"].as_str().unwrap().to_string()
    };
    let queries = [
        "a cat sleeping on a carpet",
        "the central bank and interest",
        "a volcano erupts",
    ];
    let expected: Vec<String> = queries.iter().map(|q| search(&served.url, q)).collect();
    assert!(expected[2].ends_with("2.txt"), "{expected:?}");
    std::thread::scope(|scope| {
        for client in 0..16 {
            let (barrier, expected, url) = (&barrier, &expected, served.url.as_str());
            scope.spawn(move || {
                barrier.wait();
                for round in 0..3 {
                    let i = (client + round) % queries.len();
                    assert_eq!(search(url, queries[i]), expected[i]);
                }
            });
        }
    });
    // Every stage of a hybrid search is timed on its own: 3 + 48 searches each.
    let after = metrics();
    for stage in ["lexical", "embed", "dense", "fuse", "snippets"] {
        let count = format!("knowhow_retrieval_stage_seconds_count{{stage=\"{stage}\"}}");
        assert_eq!(metric(&after, &count), 51, "{stage}");
    }
}

#[test]
fn without_api_keys_the_server_refuses_to_listen_beyond_loopback() {
    let kh = Knowhow::new();
    let out = kh.run(&["serve", "--listen", "0.0.0.0:0", "--embed-model", "/no/such/model"]);
    assert!(!out.status.success());
    let stderr = common::stderr(&out);
    assert!(stderr.contains("0.0.0.0:0 is not a loopback address"), "{stderr}");
}

#[test]
fn a_model_that_cannot_load_stops_the_server_with_its_error() {
    let kh = Knowhow::new();
    let out = kh.run(&["serve", "--listen", "127.0.0.1:0", "--embed-model", "/no/such/model"]);
    assert!(!out.status.success());
    let stderr = common::stderr(&out);
    assert!(stderr.contains("listening on http://127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("cannot serve /no/such/model"), "{stderr}");
}

#[test]
fn with_log_format_json_every_line_on_stderr_is_an_event_and_each_request_is_one() {
    let test = "with_log_format_json_every_line_on_stderr_is_an_event_and_each_request_is_one";
    let Some(model) = minilm(test) else {
        return;
    };
    let kh = Knowhow::new();
    let mut child = kh
        .command()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--embed-model",
            &model,
            "--log-format",
            "json",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut events = std::io::BufRead::lines(stderr).map(|line| {
        let line = line.unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    });
    let listening = events.next().unwrap();
    assert_eq!(
        (&listening["event"], &listening["level"]),
        (&"listening".into(), &"info".into())
    );
    let url = listening["address"].as_str().unwrap().to_string();
    let ready = events.next().unwrap();
    assert_eq!(ready["event"], "ready", "{ready}");
    assert!(ready["embedding"].is_string(), "{ready}");

    let mut answer = support::agent()
        .post(format!("{url}/v1/embeddings"))
        .header("content-type", "application/json")
        .send(r#"{"model": "default", "input": "a cat"}"#)
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let id = answer
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let _ = answer.body_mut().read_to_string();
    let request = events.next().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(request["event"], "request", "{request}");
    assert_eq!(request["request_id"], id.as_str(), "{request}");
    assert_eq!(request["route"], "/v1/embeddings", "{request}");
    assert_eq!(request["status"], 200, "{request}");
    assert!(request["ms"].as_f64().unwrap() > 0.0, "{request}");
}
