//! The switches of the tests that need something the repository does not hold: a real model, a Python with torch
//! and transformers (and the way to run its reference scripts), the shared data sets. Such a test skips, saying what to set, when its resource is missing, so
//! that `cargo test` passes on any machine; CI sets `KNOWHOW_REQUIRE_REAL_MODELS=1` so that a missing resource
//! fails there instead of skipping unseen.
//!
//! ```no_run
//! # fn main() {
//! use knowhow_testkit::env::required_env;
//!
//! let test = "tokenizer_matches_transformers";
//! let Some(python) = required_env("KNOWHOW_PYTHON", test, "/work/pyref/venv/bin/python") else {
//!     return;
//! };
//! # }
//! ```

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether `KNOWHOW_REQUIRE_REAL_MODELS=1`: tests must fail, not skip, when what they need is missing.
pub fn real_models_required() -> bool {
    std::env::var("KNOWHOW_REQUIRE_REAL_MODELS").as_deref() == Ok("1")
}

/// The value of `var`, or `None` after printing that `test` is skipped and how to run it (`var=example`).
/// Under `KNOWHOW_REQUIRE_REAL_MODELS=1` a missing or empty `var` panics instead.
pub fn required_env(var: &str, test: &str, example: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if real_models_required() => {
            panic!("{test}: {var} is not set and KNOWHOW_REQUIRE_REAL_MODELS=1 (set {var}={example})")
        }
        _ => {
            eprintln!("skipped {test}: set {var}={example} to run it");
            None
        }
    }
}

/// The shared data folder: `KNOWHOW_DATA`, else `shared/data` beside the repository (`../shared/data` from its
/// root). `None`, after printing that `test` is skipped, when it is absent.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("KNOWHOW_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if path.is_dir() {
        Some(path.canonicalize().expect("an existing folder has a canonical path"))
    } else {
        eprintln!(
            "SKIPPED {test}: shared data folder {} is absent (set KNOWHOW_DATA)",
            path.display()
        );
        None
    }
}

/// Runs a reference generator, `python SCRIPT ARGS...`, with `python` as [`required_env`] gave it from
/// `KNOWHOW_PYTHON`. `TZ=UTC`, because a script that reads Python's local clock (chat templates' `strftime_now`)
/// must agree with knowhow's UTC one. Panics with the script's stderr when it fails.
pub fn run_python<A: AsRef<OsStr>>(python: &str, script: &Path, args: impl IntoIterator<Item = A>) {
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|error| panic!("{python} could not be started ({error})"));
    assert!(
        output.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
