//! Helpers for tests that drive the real `knowhow` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// A scratch home directory plus a way to run the binary against it.
pub struct Knowhow {
    pub home: tempfile::TempDir,
}

impl Knowhow {
    pub fn new() -> Knowhow {
        Knowhow {
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_knowhow"));
        command
            .env("KNOWHOW_HOME", self.home.path())
            // No downloads from tests: without a model, ingest is lexical
            // only. Tests of embeddings pass --embed-model FOLDER.
            .env("KNOWHOW_OFFLINE", "1")
            // Nor this machine's Hugging Face cache: tests see only what they set up.
            .env("HF_HUB_CACHE", self.home.path().join("hf-cache"))
            .env_remove("KNOWHOW_NAMESPACE")
            .env_remove("KNOWHOW_COLLECTION")
            .env_remove("KNOWHOW_LLM");
        command
    }

    /// Runs with the given arguments and returns the output, whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs, requires success, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(self.command(), args)
    }

    /// Runs with `--json`, requires success, and parses the one JSON value.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        json(&self.ok(&all))
    }

    /// Runs `ingest --json` and returns every JSON line (files, then summary).
    pub fn ingest(&self, args: &[&str]) -> (Vec<serde_json::Value>, Output) {
        let mut all = vec!["--json", "ingest"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let lines = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (lines, out)
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `command` (the binary, its environment set) with `args`, requires success, and returns stdout.
pub fn run_ok(mut command: Command, args: &[&str]) -> String {
    let out = command.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "knowhow {args:?} failed: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
    stdout(&out)
}

/// The one JSON value `text` holds (surrounding white space allowed).
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Writes a file, creating its folder.
pub fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}
