//! Downloads from the Hugging Face Hub: `GET /api/models/REPO/revision/main?blobs=true` lists the files (with
//! the sha256 of large ones) and the commit; `GET /REPO/resolve/COMMIT/FILE` downloads each file of
//! [`MODEL_FILES`] the repository has, all from that one commit.

use std::fs;
use std::time::Duration;

use serde::Deserialize;

use crate::cache::{self, FileEntry, Provenance, Staged};
use crate::error::io_error;
use crate::http::{self, Expected};
use crate::model_ref::ModelRef;
use crate::{Error, ResolveOptions, ResolvedModel, Source, MODEL_FILES, REQUIRED_FILES, WEIGHTS_FILE};

#[derive(Deserialize)]
struct RepoInfo {
    /// The commit `main` points at.
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    /// Present for files stored with Git LFS (weights): their sha256 and size.
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

pub(crate) fn repo_url(endpoint: &str, id: &str) -> String {
    format!("{}/{id}", endpoint.trim_end_matches('/'))
}

pub(crate) fn fetch(
    agent: &ureq::Agent,
    model: &ModelRef,
    options: &ResolveOptions,
    connect_within: Duration,
) -> Result<ResolvedModel, Error> {
    let endpoint = options.hf_endpoint.trim_end_matches('/');
    let bearer = options.hf_token.as_ref().map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    let api_url = format!("{endpoint}/api/models/{}/revision/main?blobs=true", model.id);
    let mut response = http::get(agent, &api_url, &headers, Some(connect_within))?;
    let remote = |why: String| Error::Remote {
        url: http::redact(&api_url),
        why,
    };
    match response.status().as_u16() {
        200 => {}
        401 => {
            return Err(remote(
                "HTTP 401: no such repository, or it is private or gated; for private or gated ones set HF_TOKEN"
                    .to_string(),
            ))
        }
        403 => {
            return Err(remote(
                "HTTP 403: the token in HF_TOKEN may not read this repository (gated: accept its terms on the Hub)"
                    .to_string(),
            ))
        }
        404 => return Err(remote("HTTP 404: no such repository (check the name)".to_string())),
        status => return Err(remote(format!("HTTP {status}"))),
    }
    let info: RepoInfo = response
        .body_mut()
        .with_config()
        .limit(http::MAX_PAGE_BYTES)
        .read_json()
        .map_err(|e| remote(format!("not an answer of the Hub's model API: {e}")))?;
    let wanted: Vec<&Sibling> = MODEL_FILES
        .iter()
        .filter_map(|name| info.siblings.iter().find(|s| s.rfilename == *name))
        .collect();
    for required in REQUIRED_FILES {
        if !wanted.iter().any(|s| s.rfilename == *required) {
            let why = if *required == WEIGHTS_FILE {
                "the repository has no model.safetensors (knowhow reads safetensors only, never pytorch_model.bin)"
            } else {
                "the repository has no config.json, so it is not a transformers model"
            };
            return Err(remote(why.to_string()));
        }
    }
    let declared: u64 = wanted.iter().filter_map(|s| declared_size(s)).sum();
    if declared > options.max_model_bytes {
        return Err(Error::TooLarge {
            what: format!("{} from the Hub", model.id),
            limit: options.max_model_bytes,
        });
    }
    if let Some(lfs) = wanted
        .iter()
        .find(|s| s.rfilename == WEIGHTS_FILE)
        .and_then(|s| s.lfs.as_ref())
    {
        crate::check_weights_pin(
            model,
            &lfs.sha256,
            &format!("{WEIGHTS_FILE} listed at {}", http::redact(&api_url)),
            "The Hub's main branch has other weights than knowhow pins; nothing was downloaded.",
        )?;
    }
    let commit = info.sha.unwrap_or_else(|| "main".to_string());
    let provenance = Provenance {
        source: Source::Hub,
        origin: http::redact(&repo_url(endpoint, &model.id)),
        revision: commit.clone(),
    };
    cache::install(&options.home, model, provenance, |staging| {
        let mut files = Vec::new();
        let mut budget = options.max_model_bytes;
        for sibling in &wanted {
            let name = &sibling.rfilename;
            let dest = staging.join(name);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            let url = format!("{endpoint}/{}/resolve/{commit}/{name}", model.id);
            let expected = Expected {
                sha256: sibling.lfs.as_ref().map(|lfs| lfs.sha256.as_str()),
                size: declared_size(sibling),
            };
            let got = http::download(
                agent,
                &http::Download {
                    url: &url,
                    headers: &headers,
                    dest: &dest,
                    label: name,
                    expected,
                    max_bytes: budget,
                },
                options.progress.as_ref(),
            )?;
            budget -= got.size;
            if name == WEIGHTS_FILE {
                crate::check_weights_pin(
                    model,
                    &got.sha256,
                    &format!("{WEIGHTS_FILE} from {}", http::redact(&url)),
                    "Nothing was installed.",
                )?;
            }
            files.push(FileEntry {
                path: name.clone(),
                size: got.size,
                sha256: got.sha256,
            });
        }
        Ok(Staged {
            files,
            wheel_sha256: None,
        })
    })
}

fn declared_size(sibling: &Sibling) -> Option<u64> {
    sibling.lfs.as_ref().map(|lfs| lfs.size).or(sibling.size)
}
