//! The Hugging Face Hub, served by a local test server (the real Hub cannot be reached from tests), and the
//! Hugging Face cache layout, built by hand in a temporary folder.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{assert_nothing_cached, options, serve, sha256, targets};
use knowhow_hub::{list_hf_cache, resolve, sha256_file, Error, Source};
use knowhow_testkit::http::{Response, Server};
use serde_json::json;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

struct Repo {
    config: Vec<u8>,
    weights: Vec<u8>,
    tokenizer: Vec<u8>,
}

fn repo() -> Repo {
    Repo {
        config: br#"{"model_type": "bert"}"#.to_vec(),
        weights: (0..200_000u32).map(|i| (i % 251) as u8).collect(),
        tokenizer: br#"{"model": {"type": "WordPiece"}}"#.to_vec(),
    }
}

/// A Hub with `test-org/tiny-bert`; the API lists `weights_sha` as the LFS hash of model.safetensors.
fn hub(repo: &Repo, weights_sha: &str, with_safetensors: bool) -> Server {
    let mut siblings = vec![
        json!({"rfilename": "config.json", "size": repo.config.len()}),
        json!({"rfilename": "tokenizer.json", "size": repo.tokenizer.len()}),
        json!({"rfilename": "pytorch_model.bin", "size": 5, "lfs": {"sha256": sha256(b"torch"), "size": 5}}),
        json!({"rfilename": "README.md", "size": 3}),
        json!({"rfilename": ".gitattributes"}),
    ];
    if with_safetensors {
        siblings.push(json!({"rfilename": "model.safetensors", "size": repo.weights.len(),
            "lfs": {"sha256": weights_sha, "size": repo.weights.len()}}));
    }
    let info = json!({"id": "test-org/tiny-bert", "sha": COMMIT, "siblings": siblings});
    let files = [
        ("config.json", repo.config.clone()),
        ("tokenizer.json", repo.tokenizer.clone()),
        ("model.safetensors", repo.weights.clone()),
        ("pytorch_model.bin", b"torch".to_vec()),
        ("README.md", b"# x".to_vec()),
    ];
    serve(move |_| {
        let mut routes = HashMap::from([(
            "/api/models/test-org/tiny-bert/revision/main?blobs=true".to_string(),
            Response::json(&info),
        )]);
        for (name, bytes) in files {
            routes.insert(
                format!("/test-org/tiny-bert/resolve/{COMMIT}/{name}"),
                Response::ok("application/octet-stream", bytes),
            );
        }
        routes
    })
}

/// Why the place whose location starts with `place` did not give the model, in a [`Error::NotFound`].
fn outcome_at<'e>(err: &'e Error, place: &str) -> &'e str {
    let Error::NotFound { attempts, .. } = err else {
        panic!("expected NotFound, got: {err}");
    };
    let attempt = attempts.iter().find(|a| a.location.starts_with(place));
    attempt
        .unwrap_or_else(|| panic!("{place} not tried: {err}"))
        .outcome
        .as_str()
}

#[test]
fn local_test_server_hub_download_takes_only_encoder_files_from_one_commit_then_the_cache_answers() {
    let repo = repo();
    let server = hub(&repo, &sha256(&repo.weights), true);
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.hf_endpoint = format!("{}/", server.url());
    options.hf_token = Some("hf_secret".to_string());
    options.allow_download = true;

    let found = resolve("test-org/tiny-bert", &options).unwrap();
    assert_eq!(found.source, Source::Hub);
    assert_eq!(found.dir, home.path().join("models/test-org--tiny-bert"));
    assert_eq!(found.weights_sha256.as_deref(), Some(sha256(&repo.weights).as_str()));
    assert_eq!(
        std::fs::read(found.dir.join("model.safetensors")).unwrap(),
        repo.weights
    );
    assert_eq!(std::fs::read(found.dir.join("config.json")).unwrap(), repo.config);
    assert_eq!(std::fs::read(found.dir.join("tokenizer.json")).unwrap(), repo.tokenizer);
    assert!(!found.dir.join("pytorch_model.bin").exists());

    let targets = targets(&server);
    assert!(
        !targets
            .iter()
            .any(|t| t.contains("pytorch_model.bin") || t.contains("README")),
        "{targets:?}"
    );
    assert_eq!(targets.len(), 4, "{targets:?}");
    for request in server.requests() {
        assert_eq!(
            request.headers.get("authorization").map(String::as_str),
            Some("Bearer hf_secret")
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(found.dir.join("knowhow-manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["source"], "hub");
    assert_eq!(manifest["revision"], COMMIT);
    assert_eq!(manifest["origin"], format!("{}/test-org/tiny-bert", server.url()));

    drop(server);
    options.allow_download = false;
    let cached = resolve("test-org/tiny-bert", &options).unwrap();
    assert_eq!((cached.source, &cached.dir), (Source::Cache, &found.dir));

    // A cached copy that lost a file is not used, and the listing says why.
    std::fs::remove_file(found.dir.join("tokenizer.json")).unwrap();
    let err = resolve("test-org/tiny-bert", &options).unwrap_err();
    let outcome = outcome_at(&err, "knowhow cache");
    assert!(outcome.starts_with("tokenizer.json is missing"), "{err}");
}

#[test]
fn local_test_server_hub_file_with_another_sha256_than_listed_is_refused_and_nothing_is_cached() {
    let repo = repo();
    let server = hub(&repo, &sha256(b"what the Hub claims"), true);
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.hf_endpoint = server.url().to_string();
    options.allow_download = true;
    let err = resolve("test-org/tiny-bert", &options).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    assert_nothing_cached(home.path());
}

#[test]
fn local_test_server_hub_repository_without_safetensors_is_reported_not_downloaded() {
    let repo = repo();
    let server = hub(&repo, &sha256(&repo.weights), false);
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.hf_endpoint = server.url().to_string();
    options.allow_download = true;
    let err = resolve("test-org/tiny-bert", &options).unwrap_err();
    assert!(
        outcome_at(&err, "Hugging Face Hub").contains("no model.safetensors"),
        "{err}"
    );
    assert_eq!(targets(&server).len(), 1);
    let err = resolve("test-org/absent", &options).unwrap_err();
    assert!(outcome_at(&err, "Hugging Face Hub").contains("HTTP 404"), "{err}");
}

/// Lays out `models--ORG--NAME` as huggingface_hub does: blobs named by hash, snapshot files as symlinks.
fn hf_cache_repo(cache: &Path, id: &str, files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for (name, bytes) in files {
        let blob = sha256(bytes);
        std::fs::write(repo.join("blobs").join(&blob), bytes).unwrap();
        let link = snapshot.join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = name.matches('/').count();
        let target = format!("{}../../blobs/{blob}", "../".repeat(depth));
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    snapshot
}

#[test]
fn hugging_face_cache_layout_is_resolved_from_a_hand_built_cache_folder() {
    let repo = repo();
    let cache = tempfile::tempdir().unwrap();
    let snapshot = hf_cache_repo(
        cache.path(),
        "test-org/tiny-bert",
        &[
            ("config.json", &repo.config),
            ("model.safetensors", &repo.weights),
            ("1_Pooling/config.json", b"{}"),
        ],
    );
    // A repository with only PyTorch weights is not usable and not listed.
    hf_cache_repo(
        cache.path(),
        "test-org/torch-only",
        &[("config.json", b"{}"), ("pytorch_model.bin", b"x")],
    );
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.hf_cache = Some(cache.path().to_path_buf());

    let found = resolve("test-org/tiny-bert", &options).unwrap();
    assert_eq!(found.source, Source::HfCache);
    assert_eq!(found.dir, snapshot);
    assert_eq!(found.weights_sha256.as_deref(), Some(sha256(&repo.weights).as_str()));
    assert_eq!(
        sha256_file(&found.dir.join("model.safetensors")).unwrap(),
        sha256(&repo.weights)
    );

    let listed = list_hf_cache(cache.path()).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, "test-org/tiny-bert");
    assert_eq!(listed[0].revision.as_deref(), Some(COMMIT));
    assert_eq!(listed[0].size, (repo.config.len() + repo.weights.len() + 2) as u64);

    let err = resolve("test-org/torch-only", &options).unwrap_err();
    assert!(
        outcome_at(&err, "Hugging Face cache").contains("no model.safetensors"),
        "{err}"
    );
}

#[test]
fn hugging_face_cache_copy_of_a_pinned_model_with_other_weights_is_a_hard_error() {
    let cache = tempfile::tempdir().unwrap();
    hf_cache_repo(
        cache.path(),
        "sentence-transformers/all-MiniLM-L6-v2",
        &[("config.json", b"{}"), ("model.safetensors", b"not the real weights")],
    );
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.hf_cache = Some(cache.path().to_path_buf());
    let err = resolve("all-MiniLM-L6-v2", &options).unwrap_err();
    assert!(
        matches!(&err, Error::Checksum { actual, .. } if *actual == sha256(b"not the real weights")),
        "{err}"
    );
}
