//! `knowhow serve` uploads: multipart files and JSON rows become an ingest job whose files each reach a final
//! state; a bad file fails alone; client file names never leave the upload folder; jobs are scoped to their
//! namespace, streamed as server-sent events, and resumed after a crash.
//!
//! Needs KNOWHOW_TEST_MINILM (the model folder; the server loads it): skipped with a message when unset, failed
//! instead when KNOWHOW_REQUIRE_REAL_MODELS=1.

mod common;
#[path = "serve/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::Knowhow;
use serde_json::{json, Value};
use support::{call, minilm, send, serve, Served};

/// A multipart/form-data body of `files` (name, bytes), each as a `file` field.
fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "knowhow-test-boundary-7d1c";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend(format!("--{boundary}\r\n").into_bytes());
        body.extend(format!("content-disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n").into_bytes());
        body.extend(b"content-type: application/octet-stream\r\n\r\n");
        body.extend(*bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").into_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(served: &Served, key: &str, collection: &str, files: &[(&str, &[u8])]) -> support::Answer {
    let (content_type, body) = multipart(files);
    let path = format!("/v1/collections/{collection}/documents");
    send(&served.url, "POST", &path, Some(key), Some((&content_type, body)))
}

/// Polls the job until it is done or failed.
fn finished(served: &Served, key: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let job = call(&served.url, "GET", &format!("/v1/jobs/{id}"), Some(key), None);
        assert_eq!(job.status, 200, "{}", job.body);
        if matches!(job.body["state"].as_str(), Some("done" | "failed")) {
            return job.body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "job not finished: {}",
            job.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn file_states(job: &Value) -> Vec<(String, String)> {
    job["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["stored"].as_str().unwrap().to_string(),
                f["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn key(kh: &Knowhow, args: &[&str]) -> String {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    kh.json(&all)["key"].as_str().unwrap().to_string()
}

#[test]
fn uploaded_files_become_a_job_whose_files_each_end_indexed_unchanged_or_failed() {
    let test = "uploaded_files_become_a_job_whose_files_each_end_indexed_unchanged_or_failed";
    let Some(model) = minilm(test) else {
        return;
    };
    let kh = Knowhow::new();
    kh.ok(&["-n", "team-a", "collections", "create", "inbox"]);
    let writer = key(&kh, &["-n", "team-a", "--role", "write"]);
    let reader = key(&kh, &["-n", "team-a"]);
    let other = key(&kh, &["-n", "team-b", "--role", "admin"]);
    let served = serve(&kh, &model, &[]);

    let good: &[u8] = b"# Onboarding\n\nNew engineers pair with a mentor for their first three sprints.\n";
    let escaping: &[u8] = b"# Escape\n\nThis file tried to climb out of the upload folder with dot dots.\n";
    let fake_pdf: &[u8] = b"this is not a PDF at all";
    let answer = upload(
        &served,
        &writer,
        "inbox",
        &[
            ("onboarding.md", good),
            ("../../../escape.md", escaping),
            ("broken.pdf", fake_pdf),
        ],
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_string();
    assert!(!kh.home.path().join("escape.md").exists() && !kh.home.path().parent().unwrap().join("escape.md").exists());

    // The job's events, from now until it ends, as server-sent events.
    let mut stream = support::agent()
        .get(format!("{}/v1/jobs/{id}/events", served.url))
        .header("authorization", format!("Bearer {writer}"))
        .call()
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut states = Vec::new();
    for line in BufReader::new(stream.body_mut().as_reader()).lines() {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            let job: Value = serde_json::from_str(data).unwrap();
            states.push(job["state"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(states.last().map(String::as_str), Some("done"), "{states:?}");

    let job = finished(&served, &writer, &id);
    let files = file_states(&job);
    assert_eq!(
        files,
        [
            ("onboarding.md".to_string(), "indexed".to_string()),
            ("escape.md".to_string(), "indexed".to_string()),
            ("broken.pdf".to_string(), "failed".to_string()),
        ],
        "{job}"
    );
    assert_eq!(job["files"][1]["name"], "../../../escape.md");
    assert!(job["files"][2]["error"].as_str().unwrap().contains("PDF"), "{job}");
    assert!(kh.home.path().join("uploads/team-a/inbox/escape.md").is_file());

    let hits = call(
        &served.url,
        "POST",
        "/v1/collections/inbox/search",
        Some(&reader),
        Some(json!({"query": "mentor sprints", "mode": "lexical"})),
    );
    assert_eq!(hits.body["data"][0]["title"], "Onboarding", "{}", hits.body);

    // The same file again: unchanged. JSON rows: one more document.
    let again = upload(&served, &writer, "inbox", &[("onboarding.md", good)]);
    let job = finished(&served, &writer, again.body["id"].as_str().unwrap());
    assert_eq!(
        file_states(&job),
        [("onboarding.md".to_string(), "unchanged".to_string())]
    );
    let rows = json!({"name": "faq", "documents": [
        {"id": "faq-1", "title": "Parking", "text": "Visitors park on level two of the garage."},
    ]});
    let answer = call(
        &served.url,
        "POST",
        "/v1/collections/inbox/documents",
        Some(&writer),
        Some(rows),
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    let job = finished(&served, &writer, answer.body["id"].as_str().unwrap());
    assert_eq!(file_states(&job), [("faq.jsonl".to_string(), "indexed".to_string())]);
    let documents = call(
        &served.url,
        "GET",
        "/v1/collections/inbox/documents",
        Some(&reader),
        None,
    );
    assert_eq!(
        documents.body["data"].as_array().unwrap().len(),
        3,
        "{}",
        documents.body
    );
    let metrics = support::metrics(&served.url);
    for line in [
        "knowhow_ingest_files_total{state=\"indexed\"} 3",
        "knowhow_ingest_files_total{state=\"unchanged\"} 1",
        "knowhow_ingest_files_total{state=\"failed\"} 1",
        "knowhow_ingest_documents_total{status=\"added\"} 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
    }

    // Refusals: a read key cannot upload; another namespace sees neither the collection nor the job.
    assert_eq!(upload(&served, &reader, "inbox", &[("x.md", good)]).status, 403);
    assert_eq!(upload(&served, &other, "inbox", &[("x.md", good)]).status, 404);
    assert_eq!(
        call(&served.url, "GET", &format!("/v1/jobs/{id}"), Some(&other), None).status,
        404
    );
    let nul = upload(&served, &writer, "inbox", &[("..", good)]);
    assert_eq!(nul.status, 400, "{}", nul.body);
    assert_eq!(nul.body["error"]["param"], "file");
    let twice = upload(&served, &writer, "inbox", &[("a/same.md", good), ("b/same.md", good)]);
    assert_eq!(twice.status, 400, "{}", twice.body);
}

#[test]
fn a_job_cut_short_by_a_crash_resumes_on_the_next_start() {
    let test = "a_job_cut_short_by_a_crash_resumes_on_the_next_start";
    let Some(model) = minilm(test) else {
        return;
    };
    let kh = Knowhow::new();
    kh.ok(&["collections", "create", "inbox"]);
    // What a server killed mid-job leaves: the stored upload and the job file, still running.
    let uploads = kh.home.path().join("uploads/default/inbox");
    common::write(
        &uploads.join("left.md"),
        "# Left behind\n\nThe crash interrupted this upload halfway.\n",
    );
    let job = json!({
        "id": "job_00000000deadbeef", "object": "ingest.job", "namespace": "default", "collection": "inbox",
        "state": "running", "created": "2026-12-07T00:00:00Z",
        "files": [{"name": "left.md", "stored": "left.md", "state": "embedding"}],
    });
    common::write(&kh.home.path().join("jobs/job_00000000deadbeef.json"), &job.to_string());
    let served = serve(&kh, &model, &[]);
    let job = finished(&served, "unused-without-keys", "job_00000000deadbeef");
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(file_states(&job), [("left.md".to_string(), "indexed".to_string())]);
    let documents = kh.json(&["-c", "inbox", "docs", "list"]);
    assert_eq!(documents["documents"][0]["title"], "Left behind");
}
