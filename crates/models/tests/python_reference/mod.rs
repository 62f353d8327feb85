//! Shared by the targets checked against Hugging Face's Python implementations: the Python of `KNOWHOW_PYTHON`,
//! running a generator script from `tests/fixtures` and reading the `reference.json` it writes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use knowhow_testkit::env::{required_env, run_python};
use serde::de::DeserializeOwned;

/// What `make` builds with the Python of `KNOWHOW_PYTHON`, built once per test binary (the generators take
/// seconds) and kept in `cell`; `None`, after saying how to run `test`, without KNOWHOW_PYTHON.
pub fn once<T: Send + Sync>(
    cell: &'static OnceLock<T>,
    test: &str,
    make: impl FnOnce(String) -> T,
) -> Option<&'static T> {
    let python = required_env("KNOWHOW_PYTHON", test, "/work/pyref/venv/bin/python")?;
    Some(cell.get_or_init(|| make(python)))
}

/// `python tests/fixtures/SCRIPT ARGS...`, as [`run_python`] runs it.
pub fn run(python: &str, script: &str, args: &[&str]) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    run_python(python, &fixtures.join(script), args);
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
