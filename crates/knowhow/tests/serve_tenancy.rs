//! `knowhow serve` with API keys: two tenants that never see each other, roles, rate limits, revocation, the
//! knowledge-base API, the request log and /metrics; the official OpenAI SDK's own exceptions for 401 and 429.
//!
//! Needs KNOWHOW_TEST_MINILM (the model folder; the server loads it) and, for the SDK test, KNOWHOW_PYTHON;
//! skipped with a message when unset, failed instead when KNOWHOW_REQUIRE_REAL_MODELS=1.

mod common;
#[path = "serve/support.rs"]
mod support;

use std::path::Path;

use common::{write, Knowhow};
use serde_json::{json, Value};
use support::{call, minilm, minilm_and_python, serve, serve_on, Served};

/// A's handbook and B's secret: B's text shares A's words ("vacation"), so a leak would rank.
fn two_tenants(kh: &Knowhow, model: &str) {
    let a = kh.home.path().join("docs-a");
    write(
        &a.join("vacation.md"),
        "# Vacation policy\n\nEmployees receive twenty-five days of paid vacation per year. \
         Vacation requests go to the team lead two weeks ahead.\n",
    );
    write(
        &a.join("expenses.md"),
        "# Expense reports\n\nReceipts are submitted within thirty days through the finance portal.\n",
    );
    let b = kh.home.path().join("docs-b");
    write(
        &b.join("zephyr.md"),
        "# Project Zephyr\n\nThe zephyr codename is bluefalcon, and the vacation freeze for the launch team \
         starts in March.\n",
    );
    for (namespace, collection, dir) in [("team-a", "handbook", &a), ("team-b", "secrets", &b)] {
        kh.ok(&[
            "-n",
            namespace,
            "-c",
            collection,
            "ingest",
            dir.to_str().unwrap(),
            "--embed-model",
            model,
        ]);
    }
}

fn key(kh: &Knowhow, args: &[&str]) -> String {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    kh.json(&all)["key"].as_str().unwrap().to_string()
}

/// Every document id in an answer body, wherever it appears.
fn document_ids(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (name, inner) in map {
                match (name.as_str(), inner) {
                    ("document_id", Value::String(id)) => out.push(id.clone()),
                    _ => document_ids(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| document_ids(item, out)),
        _ => {}
    }
}

fn search(served: &Served, key: &str, collection: &str, query: &str, mode: &str) -> support::Answer {
    call(
        &served.url,
        "POST",
        &format!("/v1/collections/{collection}/search"),
        Some(key),
        Some(json!({"query": query, "mode": mode, "k": 10})),
    )
}

#[test]
fn two_tenants_never_see_each_other_and_roles_limit_what_a_key_may_do() {
    let test = "two_tenants_never_see_each_other_and_roles_limit_what_a_key_may_do";
    let Some(model) = minilm(test) else {
        return;
    };
    let kh = Knowhow::new();
    two_tenants(&kh, &model);
    let writer_a = key(&kh, &["--namespace", "team-a", "--role", "write"]);
    let reader_a = key(&kh, &["--namespace", "team-a"]);
    let admin_a = key(&kh, &["--namespace", "team-a", "--role", "admin"]);
    let reader_b = key(&kh, &["--namespace", "team-b"]);
    let served = serve(&kh, &model, &[]);
    let url = served.url.as_str();

    // No key, a malformed one, a wrong one: 401 everywhere under /v1, in the OpenAI error shape.
    for (path, key) in [
        ("/v1/collections", None),
        ("/v1/models", None),
        ("/v1/collections", Some("kh_0000000000000000000000000000000000000000")),
        ("/v1/collections", Some("nonsense")),
    ] {
        let answer = call(url, "GET", path, key, None);
        assert_eq!(answer.status, 401, "{path} {key:?}: {}", answer.body);
        assert_eq!(answer.body["error"]["type"], "authentication_error");
    }
    assert_eq!(
        call(url, "GET", "/health", None, None).status,
        200,
        "liveness needs no key"
    );

    // Each key lists only its own namespace's collections.
    let listed = call(url, "GET", "/v1/collections", Some(&writer_a), None);
    assert_eq!(listed.status, 200, "{}", listed.body);
    let names: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["handbook"]);
    assert_eq!(
        listed.body["data"][0]["embedding_model"],
        "sentence-transformers/all-MiniLM-L6-v2"
    );
    let listed = call(url, "GET", "/v1/collections", Some(&reader_b), None);
    assert_eq!(listed.body["data"][0]["id"], "secrets");
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    let id_of = |key: &str, collection: &str, title: &str| -> String {
        let documents = call(
            url,
            "GET",
            &format!("/v1/collections/{collection}/documents"),
            Some(key),
            None,
        );
        let found = documents.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["title"] == title)
            .cloned();
        found.unwrap_or_else(|| panic!("no {title:?}: {}", documents.body))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let vacation = id_of(&reader_a, "handbook", "Vacation policy");
    let expenses = id_of(&reader_a, "handbook", "Expense reports");
    let zephyr = id_of(&reader_b, "secrets", "Project Zephyr");

    // Hybrid search in A's own collection: A's chunks only, each with its per-stage scores.
    let hits = search(&served, &writer_a, "handbook", "vacation days", "hybrid");
    assert_eq!(hits.status, 200, "{}", hits.body);
    assert_eq!(hits.body["mode"], "hybrid");
    let first = &hits.body["data"][0];
    assert_eq!(first["document_id"], vacation.as_str(), "{}", hits.body);
    for stage in ["lexical", "dense", "fused"] {
        assert!(first["scores"][stage].as_f64().is_some(), "{stage}: {first}");
    }
    assert!(first["scores"]["rerank"].is_null());
    let lexical = search(&served, &writer_a, "handbook", "vacation", "lexical");
    assert!(lexical.body["data"][0]["scores"]["lexical"].as_f64().unwrap() > 0.0);
    assert!(lexical.body["data"][0]["scores"]["dense"].is_null());

    // B's collection, named by A's key: the same 404 as a collection that does not exist, on every route.
    let missing = search(&served, &writer_a, "no-such-collection", "vacation", "hybrid");
    assert_eq!(missing.status, 404);
    let foreign_routes: [(&str, String, Option<Value>); 6] = [
        (
            "POST",
            "/v1/collections/secrets/search".into(),
            Some(json!({"query": "vacation"})),
        ),
        (
            "POST",
            "/v1/collections/secrets/ask".into(),
            Some(json!({"question": "When is the vacation freeze?"})),
        ),
        ("GET", "/v1/collections/secrets/documents".into(), None),
        ("GET", format!("/v1/collections/secrets/documents/{zephyr}"), None),
        ("DELETE", format!("/v1/collections/secrets/documents/{zephyr}"), None),
        (
            "POST",
            "/v1/collections/secrets/search?namespace=team-b".into(),
            Some(json!({"query": "vacation"})),
        ),
    ];
    for (method, path, body) in foreign_routes {
        let answer = call(url, method, &path, Some(&writer_a), body);
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.body);
        let mut ids = Vec::new();
        document_ids(&answer.body, &mut ids);
        assert!(ids.is_empty(), "{method} {path} leaked {ids:?}");
        assert!(!answer.body.to_string().contains("bluefalcon"));
    }
    let message = |body: &Value| {
        body["error"]["message"]
            .as_str()
            .unwrap()
            .replace("no-such-collection", "X")
    };
    let foreign = search(&served, &writer_a, "secrets", "vacation", "hybrid");
    assert_eq!(message(&foreign.body), message(&missing.body).replace('X', "secrets"));

    // A's answers come from A's documents only, though B's secret matches the question too.
    let asked = call(
        url,
        "POST",
        "/v1/collections/handbook/ask",
        Some(&reader_a),
        Some(json!({"question": "When does the vacation freeze start?"})),
    );
    assert_eq!(asked.status, 200, "{}", asked.body);
    let mut ids = Vec::new();
    document_ids(&asked.body, &mut ids);
    assert!(
        !ids.is_empty() && ids.iter().all(|id| *id == vacation || *id == expenses),
        "{ids:?}"
    );
    assert!(!asked.body.to_string().contains("bluefalcon"));
    let from_b = call(
        url,
        "POST",
        "/v1/collections/secrets/ask",
        Some(&reader_b),
        Some(json!({"question": "What is the zephyr codename?"})),
    );
    assert_eq!(from_b.status, 200, "{}", from_b.body);
    assert!(
        from_b.body["text"].as_str().unwrap().contains("bluefalcon"),
        "{}",
        from_b.body
    );

    // Documents: list and show in one's own namespace.
    let documents = call(url, "GET", "/v1/collections/handbook/documents", Some(&reader_a), None);
    assert_eq!(
        documents.body["data"].as_array().unwrap().len(),
        2,
        "{}",
        documents.body
    );
    let shown = call(
        url,
        "GET",
        &format!("/v1/collections/handbook/documents/{vacation}"),
        Some(&reader_a),
        None,
    );
    assert_eq!(shown.body["title"], "Vacation policy");
    assert!(shown.body["chunks"][0]["text"]
        .as_str()
        .unwrap()
        .contains("twenty-five days"));

    // Roles: read cannot delete, write cannot create collections, admin can.
    let expenses_path = format!("/v1/collections/handbook/documents/{expenses}");
    let refused = call(url, "DELETE", &expenses_path, Some(&reader_a), None);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["error"]["type"], "permission_error");
    let removed = call(url, "DELETE", &expenses_path, Some(&writer_a), None);
    assert_eq!(removed.status, 200, "{}", removed.body);
    let after = search(&served, &reader_a, "handbook", "receipts finance portal", "lexical");
    assert!(
        after.body["data"].as_array().unwrap().is_empty(),
        "a removed document is not found: {}",
        after.body
    );
    let create = json!({"name": "drafts"});
    assert_eq!(
        call(url, "POST", "/v1/collections", Some(&writer_a), Some(create.clone())).status,
        403
    );
    assert_eq!(
        call(url, "POST", "/v1/collections", Some(&admin_a), Some(create.clone())).status,
        201
    );
    assert_eq!(
        call(url, "POST", "/v1/collections", Some(&admin_a), Some(create)).status,
        409
    );
    assert!(kh.home.path().join("collections/team-a/drafts").exists());
    assert_eq!(
        call(url, "DELETE", "/v1/collections/drafts", Some(&admin_a), None).status,
        200
    );
    let traversal = call(
        url,
        "POST",
        "/v1/collections",
        Some(&admin_a),
        Some(json!({"name": "../team-b"})),
    );
    assert_eq!(traversal.status, 400, "{}", traversal.body);

    // Revoked while the server runs: refused from the next request.
    let prefix = &reader_a[..11];
    kh.ok(&["keys", "revoke", prefix]);
    let revoked = call(url, "GET", "/v1/collections", Some(&reader_a), None);
    assert_eq!(revoked.status, 401);
    assert!(revoked.body["error"]["message"].as_str().unwrap().contains("revoked"));

    // Every /v1 request is in the request log with its key's prefix; /metrics counts them by route and status.
    let log = std::fs::read_to_string(kh.home.path().join("logs/requests.jsonl")).unwrap();
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["key"] == prefix && l["status"] == 200));
    assert!(lines.iter().any(|l| l["key"].is_null() && l["status"] == 401));
    let answers = std::fs::read_to_string(kh.home.path().join("logs/team-a/answers.jsonl")).unwrap();
    assert!(answers.contains(prefix), "the answer log names the key: {answers}");
    let metrics = support::metrics(url);
    assert!(
        metrics.contains(
            r#"knowhow_requests_total{route="/v1/collections/{collection}/search",method="POST",status="200"}"#
        ),
        "{metrics}"
    );
    for stage in ["lexical", "embed", "dense", "fuse", "snippets", "ask"] {
        let series = format!("knowhow_retrieval_stage_seconds_count{{stage=\"{stage}\"}}");
        assert!(metrics.contains(&series), "{series}: {metrics}");
    }
    for queue in ["model", "retrieval"] {
        let series = format!("knowhow_queue_depth{{queue=\"{queue}\"}} 0");
        assert!(metrics.contains(&series), "{series}: {metrics}");
    }
}

#[test]
fn a_key_over_its_rate_gets_429_with_retry_after_and_the_ratelimit_headers() {
    let test = "a_key_over_its_rate_gets_429_with_retry_after_and_the_ratelimit_headers";
    let Some(model) = minilm(test) else {
        return;
    };
    let kh = Knowhow::new();
    let limited = key(&kh, &["--namespace", "team-a", "--rpm", "3"]);
    let expired = key(&kh, &["--namespace", "team-a", "--expires", "2020-01-01"]);
    let served = serve(&kh, &model, &[]);
    for remaining in ["2", "1", "0"] {
        let answer = call(&served.url, "GET", "/v1/models", Some(&limited), None);
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(answer.header("x-ratelimit-remaining-requests"), Some(remaining));
    }
    let refused = call(&served.url, "GET", "/v1/models", Some(&limited), None);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["error"]["type"], "rate_limit_error");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (15..=20).contains(&retry),
        "3 per minute: one more fits in 20 s, not {retry}"
    );
    assert!(refused.header("retry-after-ms").is_some());
    let answer = call(&served.url, "GET", "/v1/models", Some(&expired), None);
    assert_eq!(answer.status, 401);
    assert!(answer.body["error"]["message"].as_str().unwrap().contains("expired"));
}

#[test]
fn with_a_key_the_server_may_listen_beyond_loopback_and_answers_no_one_without_it() {
    let test = "with_a_key_the_server_may_listen_beyond_loopback_and_answers_no_one_without_it";
    let Some(model) = minilm(test) else {
        return;
    };
    let kh = Knowhow::new();
    let admin = key(&kh, &["--namespace", "ops", "--role", "admin"]);
    let served = serve_on(&kh, "0.0.0.0:0", &model, &[]);
    assert_eq!(call(&served.url, "GET", "/v1/collections", None, None).status, 401);
    assert_eq!(
        call(&served.url, "GET", "/v1/collections", Some(&admin), None).status,
        200
    );
}

#[test]
fn keys_are_shown_once_stored_as_digests_and_listed_by_prefix() {
    let kh = Knowhow::new();
    let created = kh.json(&[
        "keys",
        "create",
        "--namespace",
        "team-a",
        "--role",
        "write",
        "--rpm",
        "60",
    ]);
    let key = created["key"].as_str().unwrap();
    let stored = std::fs::read_to_string(kh.home.path().join("keys.json")).unwrap();
    assert!(!stored.contains(key), "only the digest is stored");
    let listed = kh.json(&["keys", "list"]);
    assert_eq!(listed["keys"][0]["prefix"], &key[..11]);
    assert_eq!(listed["keys"][0]["role"], "write");
    assert_eq!(listed["keys"][0]["state"], "active");
    assert!(!listed.to_string().contains(key));
    kh.ok(&["keys", "revoke", &key[..11]]);
    assert_eq!(kh.json(&["keys", "list"])["keys"][0]["state"], "revoked");
    let out = kh.run(&["keys", "revoke", "kh_nothing"]);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("keys list"), "{}", common::stderr(&out));
    let out = kh.run(&["keys", "create", "--namespace", "a", "--expires", "next week"]);
    assert!(common::stderr(&out).contains("YYYY-MM-DD"), "{}", common::stderr(&out));
}

#[test]
fn the_official_openai_sdk_raises_its_own_exceptions_for_401_and_429_and_retries_after_a_429() {
    let test = "the_official_openai_sdk_raises_its_own_exceptions_for_401_and_429_and_retries_after_a_429";
    let Some((model, python)) = minilm_and_python(test) else {
        return;
    };
    let kh = Knowhow::new();
    // 60 a minute: the 61st request of a burst waits about a second for the next.
    let limited = key(&kh, &["--namespace", "team-a", "--rpm", "60"]);
    let served = serve(&kh, &model, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/openai_sdk_keys.py");
    let out = std::process::Command::new(&python)
        .args([script.to_str().unwrap(), &served.url, &limited])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["malformed_key"],
        json!({"class": "AuthenticationError", "status": 401})
    );
    assert_eq!(
        seen["wrong_key"],
        json!({"class": "AuthenticationError", "status": 401})
    );
    let burst = seen["burst_ok"].as_u64().unwrap();
    assert!(
        (60..100).contains(&burst),
        "60 a minute, refilling during the burst: {burst}"
    );
    assert_eq!(seen["over_rate"]["class"], "RateLimitError");
    assert_eq!(seen["over_rate"]["status"], 429);
    assert!(seen["over_rate"]["retry_after_ms"].as_u64().unwrap() <= 1000);
    assert_eq!(seen["retried"], true, "{seen}");
}
