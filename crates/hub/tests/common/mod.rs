//! Helpers for the resolution tests: a local HTTP test server standing in for the Hugging Face Hub and a
//! package index (which cannot be reached from tests), wheels built on the spot, and hermetic options.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use knowhow_hub::{builtin_catalog, ResolveOptions};
use sha2::{Digest, Sha256};

/// One canned answer.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            content_type: content_type.to_string(),
            body: body.into(),
        }
    }

    pub fn json(value: &serde_json::Value) -> Reply {
        Reply::ok("application/json", value.to_string())
    }
}

/// A request the server received: the target (path and query) and the headers, names in lower case.
#[derive(Clone, Debug)]
pub struct Received {
    pub target: String,
    pub headers: HashMap<String, String>,
}

/// A local HTTP/1.1 server on 127.0.0.1 that answers GETs from a table of targets (404 otherwise) and
/// records every request. Dropping it closes the port.
pub struct TestServer {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server; `routes` gets its base URL (`http://127.0.0.1:PORT`) to build links with.
    pub fn start(routes: impl FnOnce(&str) -> HashMap<String, Reply>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let routes = routes(&url);
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        answer(stream, &routes, &received);
                    }
                }
            })
        };
        TestServer {
            url,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn targets(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.target).collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(mut stream: TcpStream, routes: &HashMap<String, Reply>, received: &Mutex<Vec<Received>>) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let target = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    received.lock().unwrap().push(Received {
        target: target.clone(),
        headers,
    });
    let reply = routes.get(&target).cloned().unwrap_or(Reply {
        status: 404,
        content_type: "text/plain".to_string(),
        body: b"not found".to_vec(),
    });
    let head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
}

/// `http://127.0.0.1:PORT` where nothing listens (the port was just free).
pub fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// Options that touch nothing but what a test names: no Hugging Face cache, endpoints where nothing
/// listens, no token, downloads not allowed, the built-in catalog.
pub fn options(home: &Path) -> ResolveOptions {
    ResolveOptions {
        home: home.to_path_buf(),
        allow_download: false,
        offline: false,
        hf_endpoint: closed_url(),
        hf_token: None,
        hf_cache: None,
        index_url: format!("{}/simple", closed_url()),
        connect_budget: Duration::from_millis(1800),
        max_model_bytes: 8 << 30,
        catalog: builtin_catalog(),
        progress: None,
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A wheel (a zip) holding `TOP/model/NAME` for each file, plus a package `__init__.py` and dist-info, as
/// the model wheels on PyPI are laid out.
pub fn build_wheel(top: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(format!("{top}/__init__.py"), deflated).unwrap();
    zip.write_all(b"MODEL = 'model'\n").unwrap();
    for (name, bytes) in files {
        zip.start_file(format!("{top}/model/{name}"), deflated).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.start_file(format!("{top}-0.1.0.dist-info/WHEEL"), deflated)
        .unwrap();
    zip.write_all(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        .unwrap();
    zip.finish().unwrap().into_inner()
}

/// A PEP 691 JSON page listing `(filename, url, sha256)` files.
pub fn json_page(name: &str, files: &[(&str, &str, &str)]) -> Reply {
    let files: Vec<_> = files
        .iter()
        .map(|(filename, url, sha)| serde_json::json!({"filename": filename, "url": url, "hashes": {"sha256": sha}}))
        .collect();
    let page = serde_json::json!({"meta": {"api-version": "1.1"}, "name": name, "files": files});
    Reply::ok("application/vnd.pypi.simple.v1+json", page.to_string())
}

/// The folder names under `HOME/models/` (staging leftovers included).
pub fn cache_entries(home: &Path) -> Vec<String> {
    match std::fs::read_dir(home.join("models")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}
