//! A live `knowhow serve` for the end-to-end tests, and an HTTP client for it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::Knowhow;
use knowhow_testkit::env::required_env;

/// The real all-MiniLM-L6-v2 folder (KNOWHOW_TEST_MINILM); `None`, after saying why, when `test` is to be skipped
/// (it fails instead under KNOWHOW_REQUIRE_REAL_MODELS=1).
pub fn minilm(test: &str) -> Option<String> {
    required_env("KNOWHOW_TEST_MINILM", test, "/path/to/all-MiniLM-L6-v2")
}

/// The MiniLM folder and a Python with the references and the `openai` SDK (KNOWHOW_PYTHON).
pub fn minilm_and_python(test: &str) -> Option<(String, String)> {
    let model = minilm(test)?;
    let python = required_env("KNOWHOW_PYTHON", test, "bench/.venv/bin/python")?;
    Some((model, python))
}

/// A running `knowhow serve`, killed on drop.
pub struct Served {
    pub child: Child,
    pub url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `knowhow serve` on a free loopback port, once it is ready.
pub fn serve(kh: &Knowhow, model: &str, extra: &[&str]) -> Served {
    serve_on(kh, "127.0.0.1:0", model, extra)
}

/// `knowhow serve --listen LISTEN`, once it is ready.
pub fn serve_on(kh: &Knowhow, listen: &str, model: &str, extra: &[&str]) -> Served {
    let mut child = kh
        .command()
        .args(["--json", "serve", "--listen", listen, "--embed-model", model])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first:?}"));
    let url = line["listening"].as_str().unwrap().to_string();
    let served = Served { child, url };
    // /ready answers 503 while the model loads.
    let agent = agent();
    let started = Instant::now();
    loop {
        let status = agent
            .get(format!("{}/ready", served.url))
            .call()
            .map(|r| r.status().as_u16());
        if matches!(status, Ok(200)) {
            return served;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "not ready: {status:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The server's `/metrics` text.
pub fn metrics(url: &str) -> String {
    agent()
        .get(format!("{url}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// An HTTP client that returns 4xx/5xx answers instead of failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// One answer: status, headers and the body as JSON (`null` when it is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` with an optional bearer key and JSON body.
pub fn call(url: &str, method: &str, path: &str, key: Option<&str>, body: Option<serde_json::Value>) -> Answer {
    let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
    send(url, method, path, key, body)
}

/// Sends `method path` with an optional bearer key and a body of the given content type.
pub fn send(url: &str, method: &str, path: &str, key: Option<&str>, body: Option<(&str, Vec<u8>)>) -> Answer {
    let agent = agent();
    let uri = format!("{url}{path}");
    let mut request = ureq::http::Request::builder().method(method).uri(&uri);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let mut response = match body {
        Some((content_type, body)) => agent
            .run(request.header("content-type", content_type).body(body).unwrap())
            .unwrap(),
        None => agent.run(request.body(()).unwrap()).unwrap(),
    };
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    }
}

/// Runs one of the Python scripts beside this file; it must succeed.
fn script(python: &str, name: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve").join(name);
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes a tiny random Qwen2 chat model under `dir` (see make_tiny_qwen2.py).
pub fn tiny_qwen2(python: &str, dir: &Path) -> PathBuf {
    script(python, "make_tiny_qwen2.py", &[dir.to_str().unwrap()]);
    dir.to_path_buf()
}

/// Writes a random PEFT LoRA adapter over the model in `base` under `dir` (see make_tiny_adapter.py).
pub fn tiny_adapter(python: &str, base: &Path, dir: &Path, seed: u32) -> PathBuf {
    script(
        python,
        "make_tiny_adapter.py",
        &[base.to_str().unwrap(), dir.to_str().unwrap(), &seed.to_string()],
    );
    dir.to_path_buf()
}
