//! HTTP for the remote steps: one agent configuration, a shared connect budget so that an offline machine
//! fails fast, and streaming downloads that hash and check what they write.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ureq::http::Response;
use ureq::Body;

use crate::error::io_error;
use crate::{Error, Progress, ProgressFn};

/// Once a host has answered, a stalled transfer still ends: no read may wait longer than this.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to a host the first request has shown to be reachable (a CDN after a redirect, say).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Index pages and repository listings are small; a larger answer is not one.
pub(crate) const MAX_PAGE_BYTES: u64 = 32 << 20;

/// An agent that returns HTTP error statuses as responses (the callers explain them), trusts the system's
/// certificate store (as pip and curl do; TLS-intercepting proxies install their CA there), and keeps a
/// token only on redirects to the same host.
pub(crate) fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .user_agent(concat!("knowhow/", env!("CARGO_PKG_VERSION")))
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build()
        .into()
}

/// The time the remote steps of one resolution may spend connecting, shared between them.
pub(crate) struct Budget {
    deadline: Instant,
}

impl Budget {
    pub(crate) fn new(total: Duration) -> Budget {
        Budget {
            deadline: Instant::now() + total,
        }
    }

    /// The connect time for the next of `remaining` steps: an even share of what is left, so that a host
    /// that never answers cannot starve the steps after it.
    pub(crate) fn share(&self, remaining: usize) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        left / u32::try_from(remaining.max(1)).unwrap_or(u32::MAX)
    }
}

/// GET `url`. With `connect_within`, name resolution and connecting (TLS included) must finish within it:
/// this is the first contact with a host, which is where an offline machine is found out.
pub(crate) fn get(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&str, &str)],
    connect_within: Option<Duration>,
) -> Result<Response<Body>, Error> {
    let mut request = agent.get(url);
    if let Some(limit) = connect_within {
        // Lookups are usually quick and TLS takes several round trips: give connecting the larger part.
        let resolve = limit / 3;
        request = request
            .config()
            .timeout_resolve(Some(resolve))
            .timeout_connect(Some(limit - resolve))
            .build();
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.call().map_err(|e| Error::Remote {
        url: redact(url),
        why: describe(&e),
    })
}

/// A transport error in words a user can act on.
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::HostNotFound => "host not found (offline, or a wrong URL?)".to_string(),
        ureq::Error::Timeout(ureq::Timeout::Resolve) => "name lookup timed out (offline?)".to_string(),
        ureq::Error::Timeout(ureq::Timeout::Connect) => "no connection within the time allowed (offline?)".to_string(),
        ureq::Error::Timeout(phase) => format!("timed out ({phase})"),
        ureq::Error::Io(e) => format!("{e} (offline, or a wrong URL?)"),
        other => other.to_string(),
    }
}

/// What a download must turn out to be.
#[derive(Default)]
pub(crate) struct Expected<'a> {
    pub sha256: Option<&'a str>,
    pub size: Option<u64>,
}

/// A file written by [`download`].
pub(crate) struct Downloaded {
    pub sha256: String,
    pub size: u64,
}

/// One file to fetch.
pub(crate) struct Download<'a> {
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    /// A file in a staging folder.
    pub dest: &'a Path,
    /// The name progress reports and messages use.
    pub label: &'a str,
    pub expected: Expected<'a>,
    pub max_bytes: u64,
}

/// Streams a download into its destination, hashing as it goes and reporting progress. More than
/// `max_bytes` is refused while reading (a `Content-Length` cannot be trusted to say so). A size or sha256
/// other than the expected one is an error; the caller discards the staging folder.
pub(crate) fn download(
    agent: &ureq::Agent,
    job: &Download<'_>,
    progress: Option<&ProgressFn>,
) -> Result<Downloaded, Error> {
    let Download {
        url,
        headers,
        dest,
        label,
        ref expected,
        max_bytes,
    } = *job;
    let response = get(agent, url, headers, None)?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Error::Remote {
            url: redact(url),
            why: format!("HTTP {status} while downloading {label}"),
        });
    }
    let total = response.body().content_length().or(expected.size);
    if total.is_some_and(|t| t > max_bytes) {
        return Err(Error::TooLarge {
            what: label.to_string(),
            limit: max_bytes,
        });
    }
    let report = |done: u64| {
        if let Some(progress) = progress {
            progress(&Progress {
                file: label,
                done,
                total,
            });
        }
    };
    report(0);
    let mut reader = response.into_body().into_reader().take(max_bytes.saturating_add(1));
    let mut file = File::create(dest).map_err(io_error(dest))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        let n = reader.read(&mut buffer).map_err(|e| Error::Remote {
            url: redact(url),
            why: format!("download of {label} broke off after {done} bytes: {e}"),
        })?;
        if n == 0 {
            break;
        }
        file.write_all(&buffer[..n]).map_err(io_error(dest))?;
        hasher.update(&buffer[..n]);
        done += n as u64;
        if done > max_bytes {
            return Err(Error::TooLarge {
                what: label.to_string(),
                limit: max_bytes,
            });
        }
        report(done);
    }
    file.sync_all().map_err(io_error(dest))?;
    if let Some(size) = expected.size.filter(|&s| s != done) {
        return Err(Error::Remote {
            url: redact(url),
            why: format!("{label}: received {done} bytes, expected {size}"),
        });
    }
    let sha256 = hex(&hasher.finalize());
    if let Some(want) = expected.sha256.filter(|want| !want.eq_ignore_ascii_case(&sha256)) {
        return Err(Error::Checksum {
            what: format!("{label} from {}", redact(url)),
            expected: want.to_ascii_lowercase(),
            actual: sha256,
            advice: "The server sent other bytes than it declared or than knowhow pins; nothing was installed."
                .to_string(),
        });
    }
    Ok(Downloaded { sha256, size: done })
}

/// The sha256 of a file, as 64 lowercase hex digits.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    std::io::copy(&mut reader, &mut HashWriter(&mut hasher)).map_err(io_error(path))?;
    Ok(hex(&hasher.finalize()))
}

/// Feeds `io::copy` into a hasher.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Is `text` a sha256 in hex?
pub(crate) fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `url` with any `user:password@` replaced, for messages and manifests.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find('/')
        .map_or(url.len(), |i| authority_start + i);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..authority_start], &url[authority_start + at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(
            redact("https://me:secret@pkgs.example/simple"),
            "https://***@pkgs.example/simple"
        );
        assert_eq!(redact("https://pypi.org/simple"), "https://pypi.org/simple");
        assert_eq!(redact("https://pypi.org/simple/a@b"), "https://pypi.org/simple/a@b");
    }

    #[test]
    fn the_budget_is_shared_evenly_between_the_remaining_steps() {
        let budget = Budget::new(Duration::from_millis(1800));
        let first = budget.share(2);
        assert!(
            first <= Duration::from_millis(900) && first > Duration::from_millis(800),
            "{first:?}"
        );
        assert!(budget.share(1) > first);
    }

    #[test]
    fn file_hashes_are_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
