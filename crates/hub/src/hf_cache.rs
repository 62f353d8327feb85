//! The Hugging Face cache layout, as `huggingface_hub` writes it:
//! `models--ORG--NAME/refs/main` holds a commit hash, `snapshots/COMMIT/` holds the files as symlinks into
//! `blobs/`, and a large (LFS) file's blob is named by its sha256.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::io_error;
use crate::http::is_sha256;
use crate::model_ref::ModelRef;
use crate::{Attempt, CachedModel, Error, Lookup, ResolvedModel, Source, WEIGHTS_FILE};

/// `HF_HOME`, else `XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub(crate) fn hf_home() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("HF_HOME")
        .or_else(|| env("XDG_CACHE_HOME").map(|cache| cache.join("huggingface")))
        .or_else(|| env("HOME").map(|home| home.join(".cache/huggingface")))
}

/// The Hugging Face cache folder as `huggingface_hub` finds it: `HF_HUB_CACHE` (or the older
/// `HUGGINGFACE_HUB_CACHE`), else `HF_HOME/hub`.
pub fn default_hf_cache() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("HF_HUB_CACHE")
        .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| hf_home().map(|home| home.join("hub")))
}

/// Looks for `model` at `refs/main` in the cache folder `cache`.
pub(crate) fn find(cache: Option<&Path>, model: &ModelRef) -> Result<Lookup, Error> {
    let Some(cache) = cache else {
        return Ok(Lookup::Missed(Attempt::new(
            "Hugging Face cache",
            "skipped: no cache folder (set HF_HUB_CACHE or HF_HOME)",
        )));
    };
    let repo = cache.join(format!("models--{}", model.dir_name()));
    let missed = |why: &str| {
        Ok(Lookup::Missed(Attempt::new(
            format!("Hugging Face cache {}", repo.display()),
            why,
        )))
    };
    if !repo.is_dir() {
        return missed("not there");
    }
    let snapshot = match main_snapshot(&repo) {
        Ok(snapshot) => snapshot,
        Err(why) => return missed(&why),
    };
    if !snapshot.join("config.json").is_file() {
        return missed("the snapshot at refs/main has no config.json");
    }
    let weights = snapshot.join(WEIGHTS_FILE);
    if !weights.is_file() {
        return missed("the snapshot at refs/main has no model.safetensors (knowhow does not read pytorch_model.bin)");
    }
    let mut weights_sha256 = blob_sha256(&weights);
    if let Some(pin) = model.weights_pin() {
        let actual = match weights_sha256.clone() {
            Some(sha) => sha,
            None => crate::sha256_file(&weights)?,
        };
        crate::check_weights_pin(
            model,
            &actual,
            &weights.display().to_string(),
            "The Hugging Face cache holds other weights than knowhow pins for this model; \
             run `knowhow model pull` to get the pinned copy into knowhow's cache, or pass a path.",
        )?;
        weights_sha256 = Some(pin.to_string());
    }
    Ok(Lookup::Found(ResolvedModel {
        id: model.id.clone(),
        dir: snapshot,
        source: Source::HfCache,
        origin: None,
        weights_sha256,
    }))
}

fn main_snapshot(repo: &Path) -> Result<PathBuf, String> {
    let refs = repo.join("refs/main");
    let commit = fs::read_to_string(&refs).map_err(|_| "no refs/main".to_string())?;
    let commit = commit.trim();
    if commit.is_empty() || commit.contains(['/', '\\']) || commit.starts_with('.') {
        return Err(format!("refs/main holds {commit:?}, not a commit hash"));
    }
    let snapshot = repo.join("snapshots").join(commit);
    if snapshot.is_dir() {
        Ok(snapshot)
    } else {
        Err(format!("refs/main names {commit}, which has no snapshot folder"))
    }
}

/// The sha256 a snapshot file's blob is named by (LFS files only), without reading the file.
fn blob_sha256(file: &Path) -> Option<String> {
    let target = fs::read_link(file).ok()?;
    let name = target.file_name()?.to_str()?;
    is_sha256(name).then(|| name.to_ascii_lowercase())
}

/// The usable models (config.json and model.safetensors at `refs/main`) in the Hugging Face cache folder
/// `cache`, by id. An absent folder has none.
pub fn list_hf_cache(cache: &Path) -> Result<Vec<CachedModel>, Error> {
    let entries = match fs::read_dir(cache) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                path: cache.to_path_buf(),
                source: e,
            })
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(cache))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix("models--").map(|rest| rest.replacen("--", "/", 1)) else {
            continue;
        };
        let Ok(snapshot) = main_snapshot(&entry.path()) else {
            continue;
        };
        let weights = snapshot.join(WEIGHTS_FILE);
        if !snapshot.join("config.json").is_file() || !weights.is_file() {
            continue;
        }
        found.push(CachedModel {
            id,
            source: Source::HfCache,
            origin: None,
            revision: snapshot.file_name().map(|c| c.to_string_lossy().into_owned()),
            size: folder_size(&snapshot),
            weights_sha256: blob_sha256(&weights),
            path: snapshot,
        });
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// Bytes of the files under `dir`, symlinks followed (snapshot files are links into `blobs/`).
fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let path = entry.path();
            match fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => folder_size(&path),
                Ok(meta) => meta.len(),
                Err(_) => 0,
            }
        })
        .sum()
}
