//! Shared by the targets checked against Hugging Face's Python implementations: running a generator script from
//! `tests/fixtures` and reading the `reference.json` it writes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;

/// `python tests/fixtures/SCRIPT ARGS...`, with `TZ=UTC` (chat templates' `strftime_now` reads Python's local
/// clock and knowhow's UTC one). Panics with the script's stderr when it fails.
pub fn run(python: &str, script: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(script);
    let output = Command::new(python)
        .arg(&script)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `script` into a fresh `CARGO_TARGET_TMPDIR/DIR_NAME` and reads the `reference.json` it writes there.
pub fn generate<T: DeserializeOwned>(python: &str, script: &str, dir_name: &str) -> (PathBuf, T) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir_name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    run(python, script, &[dir.to_str().unwrap()]);
    let reference = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    (dir, reference)
}
