//! Helpers for the resolution tests: the workspace's test server (`knowhow_testkit::http`) standing in for the
//! Hugging Face Hub and a package index (which cannot be reached from tests), wheels built on the spot, and
//! hermetic options.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use knowhow_hub::{builtin_catalog, ResolveOptions};
pub use knowhow_testkit::http::closed_url;
use knowhow_testkit::http::{Request, Response, Server};
use sha2::{Digest, Sha256};

/// The hub or index of a test: the workspace's test server answering GETs from a table of targets (path and
/// query), 404 otherwise. `routes` gets the server's URL (`http://127.0.0.1:PORT`) to build links with.
pub fn serve(routes: impl FnOnce(&str) -> HashMap<String, Response>) -> Server {
    Server::start_with_url(|url| {
        let routes = routes(url);
        move |request: &Request| routes.get(&request.target).cloned().unwrap_or_else(Response::not_found)
    })
}

/// The targets of the requests `server` has read, in order.
pub fn targets(server: &Server) -> Vec<String> {
    server.requests().into_iter().map(|r| r.target).collect()
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
pub fn json_page(name: &str, files: &[(&str, &str, &str)]) -> Response {
    let files: Vec<_> = files
        .iter()
        .map(|(filename, url, sha)| serde_json::json!({"filename": filename, "url": url, "hashes": {"sha256": sha}}))
        .collect();
    let page = serde_json::json!({"meta": {"api-version": "1.1"}, "name": name, "files": files});
    Response::ok("application/vnd.pypi.simple.v1+json", page.to_string())
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

/// Asserts that nothing is left under `HOME/models/`: no model, no staging folder.
pub fn assert_nothing_cached(home: &Path) {
    let entries = cache_entries(home);
    assert!(entries.is_empty(), "left in the cache: {entries:?}");
}
