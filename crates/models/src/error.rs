//! The crate's error type and the JSON-file reader that every loader shares.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Everything that can go wrong while loading or running a model. Messages name the file (and field) involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("cannot write {}: {source} (check the folder exists and is writable)", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("{} is not valid: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },

    #[error("{}: `{field}` {problem}", path.display())]
    Config {
        path: PathBuf,
        field: String,
        problem: String,
    },

    #[error("cannot load the tokenizer {}: {message}", path.display())]
    TokenizerLoad { path: PathBuf, message: String },

    #[error("the tokenizer {} failed on an input: {message}", path.display())]
    Tokenize { path: PathBuf, message: String },

    #[error("cannot load weights from {}: {source}", path.display())]
    Weights { path: PathBuf, source: candle_core::Error },

    #[error("invalid option `{option}`: {problem}")]
    Option { option: &'static str, problem: String },

    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),

    /// Generation was cancelled (its [`knowhow_core::Cancellation`] raised) before it finished.
    #[error("generation was cancelled")]
    Cancelled,
}

/// A configuration error about `field` of the file at `path`.
pub(crate) fn config_error(path: &Path, field: &str, problem: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_owned(),
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// Reads and parses a JSON file; serde's message names the missing or mistyped field and its line.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })
}

/// Like [`read_json`], but a missing file is `Ok(None)`: for the optional files of a model folder.
pub(crate) fn read_optional_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}
