//! [`TuneError`]: why preparing a base model, a fine-tuning run or an evaluation failed.
//!
//! The texts speak of what the library was given (a batch size, a length limit, a pattern), never of the
//! command-line flags that may have set it: the `knowhow` binary names its flags when it prints these.

use std::path::PathBuf;

use crate::data::DataError;
use crate::registry::RegistryError;
use crate::train::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] knowhow_models::Error),
    #[error(transparent)]
    Template(#[from] knowhow_models::ChatTemplateError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the batch size must be at least 1")]
    ZeroBatchSize,
    #[error("nothing to resume: {} holds no checkpoint", dir.display())]
    NothingToResume { dir: PathBuf },
    #[error(
        "no training row could be encoded within the length limit of {max_length} tokens ({dropped} dropped, \
         {failed} failed)"
    )]
    NothingEncoded {
        max_length: usize,
        dropped: usize,
        failed: usize,
    },
    #[error("{pattern:?} is not a valid pattern: {message}")]
    InvalidRegex { pattern: String, message: String },
}
