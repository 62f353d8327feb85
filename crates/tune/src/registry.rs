//! The adapter registry: every trained adapter, versioned, with the card that says how it was made.
//!
//! ```text
//! HOME/adapters/NAME/v1/adapter_config.json        PEFT's files, as `PeftModel.from_pretrained` reads them
//!                       adapter_model.safetensors
//!                       card.json                  Card: base model and its sha256, dataset sha256,
//!                                                  hyper-parameters, metrics, creation time, knowhow version
//!                    v2/...
//! ```
//!
//! Names are validated to `[A-Za-z0-9_.-]` (not starting with `.`), so no name can reach outside
//! `HOME/adapters/`. A version is written into a temporary folder and renamed into place: a crash never leaves a
//! half adapter under a version number. An adapter is referred to as `NAME` (its latest version) or `NAME@N`
//! (`NAME@vN` works too).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use knowhow_models::decoder::peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};

/// The card's file name inside a version folder.
pub const CARD_FILE: &str = "card.json";
const VERSION_PREFIX: &str = "v";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid adapter name {name:?}: {problem}")]
    InvalidName { name: String, problem: String },
    #[error("no adapter named {name:?} in {root} (see `knowhow adapters list`)")]
    NotFound { name: String, root: PathBuf },
    #[error("adapter {name:?} has no version {version} (it has: {available})")]
    NoSuchVersion {
        name: String,
        version: u32,
        available: String,
    },
    #[error("{0} is neither an adapter folder (no adapter_config.json) nor a valid adapter name")]
    NotAnAdapter(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid adapter card: {source}")]
    Card { path: PathBuf, source: serde_json::Error },
    #[error("{path} has no {file}: an adapter folder needs adapter_config.json and adapter_model.safetensors")]
    MissingFile { path: PathBuf, file: &'static str },
    #[error("{0} already exists; export into a new folder")]
    Exists(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The base model an adapter was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModel {
    /// The folder it was loaded from (what PEFT records as `base_model_name_or_path`).
    pub path: String,
    /// [`weights_sha256`] of the folder: an adapter only makes sense on the exact weights it was trained on.
    pub sha256: String,
}

/// The data an adapter was trained on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub path: String,
    /// `data::checksum` of the input's unique valid rows (equal to the `checksum` of `knowhow data check`).
    pub sha256: String,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub test_rows: usize,
    /// `data::rows_checksum` of the held-out test rows, so an evaluation can say whether it ran on them.
    pub test_sha256: String,
    /// General-purpose rows mixed into training (`--mix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<MixInfo>,
}

/// The general-purpose data mixed into training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixInfo {
    pub path: String,
    /// `data::checksum` of the file's unique valid rows.
    pub sha256: String,
    /// The requested share of the training part.
    pub ratio: f64,
    /// Rows mixed in.
    pub rows: usize,
}

/// Everything that shaped the training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HyperParameters {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<String>,
    pub lr: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_length: usize,
    pub warmup_steps: usize,
    pub seed: u64,
}

/// What training (and, once run, evaluation) measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub steps: usize,
    pub tokens: u64,
    pub train_seconds: f64,
    /// The last step's training loss.
    pub train_loss: Option<f64>,
    /// The validation loss of the saved parameters.
    pub val_loss: Option<f64>,
    /// The step whose parameters were saved (the best validation loss, else the last step).
    pub saved_step: Option<usize>,
    pub stop_reason: String,
    pub trainable_parameters: usize,
    pub total_parameters: usize,
    /// The last `knowhow eval tune` result (base vs adapter), when one was run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<serde_json::Value>,
}

/// `card.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    pub name: String,
    pub version: u32,
    pub base_model: BaseModel,
    pub dataset: DatasetInfo,
    pub hyper_parameters: HyperParameters,
    pub metrics: Metrics,
    /// UTC, RFC 3339 (`2025-01-31T12:00:00Z`).
    pub created: String,
    pub knowhow_version: String,
}

/// `NAME` or `NAME@N` as typed on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterRef {
    pub name: String,
    /// `None`: the latest version.
    pub version: Option<u32>,
}

impl AdapterRef {
    pub fn parse(text: &str) -> Result<AdapterRef, RegistryError> {
        let (name, version) = match text.split_once('@') {
            None => (text, None),
            Some((name, version)) => {
                let digits = version.strip_prefix(VERSION_PREFIX).unwrap_or(version);
                let number =
                    digits
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| RegistryError::InvalidName {
                            name: text.to_string(),
                            problem: format!(
                                "the version after @ must be a number from 1 (like {name}@2), not {version:?}"
                            ),
                        })?;
                (name, Some(number))
            }
        };
        validate_name(name)?;
        Ok(AdapterRef {
            name: name.to_string(),
            version,
        })
    }
}

impl std::fmt::Display for AdapterRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(version) => write!(f, "{}@{version}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Adapter names become folder names: 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let problem = if name.is_empty() || name.len() > 64 {
        Some("must be 1 to 64 characters".to_string())
    } else if name.starts_with('.') {
        Some("must not start with '.'".to_string())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .map(|c| format!("{c:?} is not allowed; use letters, digits, '_', '.' and '-'"))
    };
    match problem {
        Some(problem) => Err(RegistryError::InvalidName {
            name: name.to_string(),
            problem,
        }),
        None => Ok(()),
    }
}

/// One registered version.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub card: Card,
    /// The version folder: a PEFT adapter folder.
    pub dir: PathBuf,
}

/// `HOME/adapters`.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// The registry of a knowhow home folder.
    pub fn new(home: &Path) -> Registry {
        Registry {
            root: home.join("adapters"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every version of every adapter, by name then version.
    pub fn list(&self) -> Result<Vec<Entry>, RegistryError> {
        let mut names = Vec::new();
        match std::fs::read_dir(&self.root) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io(&self.root))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if validate_name(&name).is_ok() && entry.path().is_dir() {
                        names.push(name);
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io(&self.root)(error)),
        }
        names.sort();
        let mut all = Vec::new();
        for name in names {
            for version in self.versions(&name)? {
                all.push(self.entry(&name, version)?);
            }
        }
        Ok(all)
    }

    /// The versions of `name`, ascending; empty when there is no such adapter.
    pub fn versions(&self, name: &str) -> Result<Vec<u32>, RegistryError> {
        validate_name(name)?;
        let dir = self.root.join(name);
        let mut versions = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(versions),
            Err(error) => return Err(io(&dir)(error)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let file_name = entry.file_name();
            let version = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(VERSION_PREFIX))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(version) = version.filter(|_| entry.path().join(CARD_FILE).is_file()) {
                versions.push(version);
            }
        }
        versions.sort_unstable();
        Ok(versions)
    }

    /// The version `reference` names (the latest when it names none).
    pub fn get(&self, reference: &AdapterRef) -> Result<Entry, RegistryError> {
        let versions = self.versions(&reference.name)?;
        let Some(&latest) = versions.last() else {
            return Err(RegistryError::NotFound {
                name: reference.name.clone(),
                root: self.root.clone(),
            });
        };
        let version = reference.version.unwrap_or(latest);
        if !versions.contains(&version) {
            return Err(RegistryError::NoSuchVersion {
                name: reference.name.clone(),
                version,
                available: versions.iter().map(|v| format!("@{v}")).collect::<Vec<_>>().join(", "),
            });
        }
        self.entry(&reference.name, version)
    }

    fn entry(&self, name: &str, version: u32) -> Result<Entry, RegistryError> {
        let dir = self.version_dir(name, version);
        let card = read_card(&dir)?;
        Ok(Entry { card, dir })
    }

    fn version_dir(&self, name: &str, version: u32) -> PathBuf {
        self.root.join(name).join(format!("{VERSION_PREFIX}{version}"))
    }

    /// Registers the PEFT folder `adapter_dir` as the next version of `card.name`; the card's version is set here.
    /// The files are copied, so `adapter_dir` can be a training run's scratch folder.
    pub fn register(&self, adapter_dir: &Path, mut card: Card) -> Result<Entry, RegistryError> {
        validate_name(&card.name)?;
        check_adapter_folder(adapter_dir)?;
        let name_dir = self.root.join(&card.name);
        std::fs::create_dir_all(&name_dir).map_err(io(&name_dir))?;
        let version = self.versions(&card.name)?.last().map_or(1, |v| v + 1);
        card.version = version;
        let staging = name_dir.join(format!(".staging-{version}-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        for file in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
            let to = staging.join(file);
            std::fs::copy(adapter_dir.join(file), &to).map_err(io(&to))?;
        }
        write_card(&staging, &card)?;
        let dir = self.version_dir(&card.name, version);
        std::fs::rename(&staging, &dir).map_err(io(&dir))?;
        Ok(Entry { card, dir })
    }

    /// Replaces the card of a registered version (to record evaluation results).
    pub fn update_card(&self, entry: &Entry) -> Result<(), RegistryError> {
        write_card(&entry.dir, &entry.card)
    }

    /// Removes one version (`NAME@N`) or, for a bare `NAME`, every version. Returns the folders removed.
    pub fn remove(&self, reference: &AdapterRef) -> Result<Vec<PathBuf>, RegistryError> {
        let removed = match reference.version {
            Some(_) => {
                let entry = self.get(reference)?;
                std::fs::remove_dir_all(&entry.dir).map_err(io(&entry.dir))?;
                vec![entry.dir]
            }
            None => {
                let versions = self.versions(&reference.name)?;
                if versions.is_empty() {
                    return Err(RegistryError::NotFound {
                        name: reference.name.clone(),
                        root: self.root.clone(),
                    });
                }
                versions.iter().map(|v| self.version_dir(&reference.name, *v)).collect()
            }
        };
        let name_dir = self.root.join(&reference.name);
        // The name goes with its last version.
        if reference.version.is_none() || self.versions(&reference.name)?.is_empty() {
            std::fs::remove_dir_all(&name_dir).map_err(io(&name_dir))?;
        }
        Ok(removed)
    }

    /// Copies a version's PEFT folder (card included) to `dest`, which must not exist yet.
    pub fn export(&self, reference: &AdapterRef, dest: &Path) -> Result<Entry, RegistryError> {
        let entry = self.get(reference)?;
        if dest.exists() {
            return Err(RegistryError::Exists(dest.to_path_buf()));
        }
        std::fs::create_dir_all(dest).map_err(io(dest))?;
        for file in [ADAPTER_CONFIG, ADAPTER_WEIGHTS, CARD_FILE] {
            let to = dest.join(file);
            std::fs::copy(entry.dir.join(file), &to).map_err(io(&to))?;
        }
        Ok(entry)
    }
}

/// An adapter folder holds PEFT's two files.
fn check_adapter_folder(dir: &Path) -> Result<(), RegistryError> {
    for file in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
        if !dir.join(file).is_file() {
            return Err(RegistryError::MissingFile {
                path: dir.to_path_buf(),
                file,
            });
        }
    }
    Ok(())
}

/// Reads `DIR/card.json`.
pub fn read_card(dir: &Path) -> Result<Card, RegistryError> {
    let path = dir.join(CARD_FILE);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    serde_json::from_slice(&bytes).map_err(|source| RegistryError::Card { path, source })
}

fn write_card(dir: &Path, card: &Card) -> Result<(), RegistryError> {
    let path = dir.join(CARD_FILE);
    let temporary = dir.join(format!(".{CARD_FILE}.tmp"));
    let mut text = serde_json::to_string_pretty(card).expect("a card always serializes");
    text.push('\n');
    std::fs::write(&temporary, text).map_err(io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io(&path))
}

/// What `--adapter NAME_OR_PATH` means: a folder holding `adapter_config.json` is used as it is; anything else must
/// be a registered `NAME` or `NAME@N`, whose version folder is returned.
pub fn resolve_adapter(home: &Path, name_or_path: &str) -> Result<PathBuf, RegistryError> {
    let path = Path::new(name_or_path);
    if path.join(ADAPTER_CONFIG).is_file() {
        return Ok(path.to_path_buf());
    }
    let reference =
        AdapterRef::parse(name_or_path).map_err(|_| RegistryError::NotAnAdapter(name_or_path.to_string()))?;
    Ok(Registry::new(home).get(&reference)?.dir)
}

/// sha256 (hex) of a model folder's weights: its `*.safetensors` files in name order, read as one stream. Equal to
/// `sha256sum model.safetensors` for a single-file model.
pub fn weights_sha256(model_dir: &Path) -> Result<String, RegistryError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(model_dir)
        .map_err(io(model_dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "safetensors") && path.is_file())
        .collect();
    files.sort();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for file in &files {
        let mut reader = std::fs::File::open(file).map_err(io(file))?;
        loop {
            let read = reader.read(&mut buffer).map_err(io(file))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_and_rejects_bad_names() {
        assert_eq!(AdapterRef::parse("json-fmt").unwrap().version, None);
        assert_eq!(AdapterRef::parse("json-fmt@3").unwrap().version, Some(3));
        assert_eq!(AdapterRef::parse("json-fmt@v2").unwrap().version, Some(2));
        for bad in ["", "../x", "a/b", ".hidden", "x@0", "x@latest", "sp ace"] {
            assert!(AdapterRef::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
