//! `knowhow serve`'s other models, end to end: LoRA adapters served by name over the base model (loaded on
//! first use, let go past the memory budget, behind `rag:COLLECTION+ADAPTER` too), and `/v1/rerank` in TEI's
//! shape, scored as transformers scores the same cross-encoder, and used by knowhow's own `tei:` client.
//!
//! Needs KNOWHOW_TEST_MINILM (the server loads it) and KNOWHOW_PYTHON (torch, transformers, peft): skipped with
//! a message when unset, failed instead when KNOWHOW_REQUIRE_REAL_MODELS=1.

mod common;
#[path = "serve/support.rs"]
mod support;

use std::path::Path;

use common::{write, Knowhow};
use serde_json::{json, Value};
use support::{call, minilm_and_python, serve, tiny_adapter, tiny_qwen2};

fn hello(url: &str, model: &str) -> support::Answer {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8});
    call(url, "POST", "/v1/chat/completions", None, Some(body))
}

fn reply(url: &str, model: &str) -> String {
    let answer = hello(url, model);
    assert_eq!(answer.status, 200, "{model}: {}", answer.body);
    answer.body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The value of the `/metrics` series `series` (name and labels as written).
fn metric(url: &str, series: &str) -> Option<f64> {
    let text = support::metrics(url);
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn adapters_answer_by_name_over_the_base_and_are_let_go_past_the_budget() {
    let test = "adapters_answer_by_name_over_the_base_and_are_let_go_past_the_budget";
    let Some((model, python)) = minilm_and_python(test) else {
        return;
    };
    let kh = Knowhow::new();
    let root = kh.home.path();
    let qwen = tiny_qwen2(&python, &root.join("tiny-qwen2"));
    let support = tiny_adapter(&python, &qwen, &root.join("support"), 1);
    let legal = tiny_adapter(&python, &qwen, &root.join("legal"), 2);
    write(
        &root.join("docs/vacation.md"),
        "# Vacation policy\n\nEmployees receive twenty-five days of paid vacation per year.\n",
    );
    kh.ok(&[
        "-c",
        "handbook",
        "ingest",
        root.join("docs").to_str().unwrap(),
        "--embed-model",
        &model,
    ]);
    // A budget of 0 holds one adapter at a time: the one last asked for.
    let served = serve(
        &kh,
        &model,
        &[
            "--llm",
            &format!("local:{}", qwen.display()),
            "--adapter",
            support.to_str().unwrap(),
            "--adapter",
            legal.to_str().unwrap(),
            "--adapter-memory-mib",
            "0",
        ],
    );
    let models = call(&served.url, "GET", "/v1/models", None, None).body;
    for adapter in ["support", "legal"] {
        let listed = models["data"].as_array().unwrap().iter().find(|m| m["id"] == adapter);
        assert_eq!(listed.map(|m| &m["parent"]), Some(&json!("local")), "{models}");
    }
    assert_eq!(
        metric(&served.url, "knowhow_adapter_loads_total{adapter=\"support\"}"),
        Some(0.0)
    );

    let base = reply(&served.url, "local");
    let first = reply(&served.url, "support");
    let other = reply(&served.url, "legal");
    let again = reply(&served.url, "support");
    assert_ne!(first, base, "the adapter must change the answer");
    assert_ne!(other, first);
    assert_eq!(again, first, "reloaded, an adapter answers as before");
    // support was let go for legal, and loaded again.
    assert_eq!(
        metric(&served.url, "knowhow_adapter_loads_total{adapter=\"support\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&served.url, "knowhow_adapter_loads_total{adapter=\"legal\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&served.url, "knowhow_adapter_loaded{adapter=\"support\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&served.url, "knowhow_adapter_loaded{adapter=\"legal\"}"),
        Some(0.0)
    );
    assert!(metric(&served.url, "knowhow_time_to_first_token_seconds_count").unwrap() >= 4.0);
    assert!(metric(&served.url, "knowhow_generated_tokens_total").unwrap() >= 32.0);
    // A folder adapter has no registry version; an unknown name is the SDK's NotFoundError.
    for unknown in ["support@1", "nobody", "rag:handbook+nobody"] {
        let answer = hello(&served.url, unknown);
        assert_eq!(
            (answer.status, &answer.body["error"]["code"]),
            (404, &json!("model_not_found")),
            "{unknown}"
        );
    }

    // The hybrid pattern: the adapter writes the answer from the collection, and the audit log says which.
    let question = json!({"model": "rag:handbook+legal", "max_tokens": 8,
                          "messages": [{"role": "user", "content": "How many days of paid vacation?"}]});
    let answer = call(&served.url, "POST", "/v1/chat/completions", None, Some(question));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body["choices"][0]["message"]["citations"].is_array(),
        "{}",
        answer.body
    );
    let log = std::fs::read_to_string(root.join("logs/default/answers.jsonl")).unwrap();
    let record: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(record["adapter"], "legal", "{record}");

    let no_reranker = call(
        &served.url,
        "POST",
        "/v1/rerank",
        None,
        Some(json!({"query": "q", "texts": ["t"]})),
    );
    assert_eq!(no_reranker.status, 404, "{}", no_reranker.body);
}

#[test]
fn rerank_scores_as_transformers_and_serves_knowhows_own_tei_client() {
    let test = "rerank_scores_as_transformers_and_serves_knowhows_own_tei_client";
    let Some((model, python)) = minilm_and_python(test) else {
        return;
    };
    let kh = Knowhow::new();
    let fixtures = kh.home.path().join("fixtures");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/make_tiny_checkpoints.py");
    let out = std::process::Command::new(&python)
        .args([script.to_str().unwrap(), fixtures.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("reference.json")).unwrap()).unwrap();
    let case = &reference["cross_encoders"][0];
    assert_eq!(case["name"], "bert-cross-encoder");
    let cross_encoder = fixtures.join("bert-cross-encoder");
    let served = serve(&kh, &model, &["--rerank-model", cross_encoder.to_str().unwrap()]);

    let texts = case["passages"].clone();
    let logits: Vec<f64> = case["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_f64().unwrap())
        .collect();
    for raw in [true, false] {
        let request = json!({"query": case["query"], "texts": texts, "raw_scores": raw, "return_text": true});
        let answer = call(&served.url, "POST", "/v1/rerank", None, Some(request));
        assert_eq!(answer.status, 200, "{}", answer.body);
        let results = answer.body.as_array().unwrap();
        assert_eq!(results.len(), logits.len());
        for pair in results.windows(2) {
            assert!(
                pair[0]["score"].as_f64() >= pair[1]["score"].as_f64(),
                "best first: {}",
                answer.body
            );
        }
        for result in results {
            let index = result["index"].as_u64().unwrap() as usize;
            let expected = if raw {
                logits[index]
            } else {
                1.0 / (1.0 + (-logits[index]).exp())
            };
            let score = result["score"].as_f64().unwrap();
            assert!(
                (score - expected).abs() < 1e-4,
                "{index}: {score} against transformers' {expected}"
            );
            assert_eq!(result["text"], texts[index]);
        }
    }
    let empty = call(
        &served.url,
        "POST",
        "/v1/rerank",
        None,
        Some(json!({"query": "q", "texts": []})),
    );
    assert_eq!(
        (empty.status, &empty.body["error"]["param"]),
        (400, &json!("texts")),
        "{}",
        empty.body
    );

    // knowhow's own TEI client, against knowhow serve, ranks as the cross-encoder run in process does.
    let docs = kh.home.path().join("docs");
    for (i, passage) in texts.as_array().unwrap().iter().enumerate() {
        if !passage.as_str().unwrap().is_empty() {
            write(&docs.join(format!("p{i}.txt")), passage.as_str().unwrap());
        }
    }
    kh.ok(&["ingest", docs.to_str().unwrap(), "--embed-model", &model]);
    let ranked = |rerank_model: &str| -> Vec<Value> {
        let found = kh.json(&[
            "search",
            case["query"].as_str().unwrap(),
            "--mode",
            "rerank",
            "--rerank-model",
            rerank_model,
            "--embed-model",
            &model,
        ]);
        found["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["document_id"].clone())
            .collect()
    };
    let in_process = ranked(cross_encoder.to_str().unwrap());
    assert_eq!(in_process.len(), 4);
    assert_eq!(ranked(&format!("tei:{}", served.url)), in_process);
}
