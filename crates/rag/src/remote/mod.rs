//! Clients for hosted embedding and re-ranking servers: OpenAI-compatible `/v1/embeddings`, and the `/rerank`
//! shapes of Text Embeddings Inference, Cohere and Jina.
//!
//! Both clients share [`RemoteConfig`] and one retry policy: transient failures (HTTP 408, 429 and 5xx,
//! connection errors, timeouts) are retried up to `max_retries` times with exponential back-off and jitter; a
//! `Retry-After` (or `retry-after-ms`) header from the server replaces the computed back-off, capped by
//! `max_backoff`. Anything else (401, 404, a malformed response) fails at once with an [`Error`] that carries the
//! status code and the server's own message.

pub mod embeddings;
pub(crate) mod http;
pub mod rerank;

use std::time::Duration;

pub use embeddings::OpenAiEmbedder;
pub use rerank::{RemoteReranker, RerankFlavor};

/// Where a remote server is and how patiently to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    /// The server's root (`https://api.openai.com`) or its `/v1` prefix (`https://api.openai.com/v1`); each
    /// client documents which paths it appends.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>`; `None` sends no `Authorization` header (local servers).
    pub api_key: Option<String>,
    /// The model name sent with each request. Text Embeddings Inference's `/rerank` serves one model and
    /// ignores it.
    pub model: String,
    /// How many texts go in one request.
    pub batch_size: usize,
    /// Retries after the first attempt of each request; 0 never retries.
    pub max_retries: u32,
    /// Limit for one HTTP attempt, from connecting to the last byte of the response.
    pub timeout: Duration,
    /// Back-off before the first retry; it doubles for each following retry.
    pub initial_backoff: Duration,
    /// Cap on the back-off, and on a server's `Retry-After`.
    pub max_backoff: Duration,
}

impl RemoteConfig {
    pub const DEFAULT_BATCH_SIZE: usize = 64;
    pub const DEFAULT_MAX_RETRIES: u32 = 4;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

    /// A configuration with no API key and the default batch size, retries, timeout and back-off.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            batch_size: Self::DEFAULT_BATCH_SIZE,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            timeout: Self::DEFAULT_TIMEOUT,
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
        }
    }
}

/// Why a remote call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid remote configuration: {0}")]
    Config(String),
    #[error("POST {url} answered HTTP {status} (after {attempts} attempt(s)): {message}; {}", status_hint(*.status))]
    Status {
        url: String,
        status: u16,
        message: String,
        attempts: u32,
    },
    #[error("POST {url} failed after {attempts} attempt(s): {source}; check that the server is running and reachable")]
    Transport {
        url: String,
        attempts: u32,
        #[source]
        source: ureq::Error,
    },
    #[error("POST {url} returned an unexpected response: {problem}; the response begins: {start:?}")]
    Response {
        url: String,
        problem: String,
        start: String,
    },
}

/// What to do about an HTTP error status.
fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "check the API key",
        404 => "check the base URL and the model name",
        413 => "the request is too large: lower the batch size",
        400 | 422 => "the server refused the request: check the model name, the batch size and the input lengths",
        408 | 429 => "the server kept asking to slow down: wait, lower the batch size or raise max_retries",
        500..=599 => "the server kept failing: check its health or raise max_retries",
        _ => "see the server's message",
    }
}

/// `{base}/v1/{endpoint}`, or `{base}/{endpoint}` when `base` already ends in `/v1` (trailing slashes ignored).
fn versioned_url(base: &str, endpoint: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/{endpoint}")
    } else {
        format!("{base}/v1/{endpoint}")
    }
}

/// Puts `(index, value)` pairs from a server into input order, checking that every index in `0..count` comes
/// exactly once (servers may return items in any order, e.g. sorted by score).
fn in_input_order<T>(items: impl IntoIterator<Item = (usize, T)>, count: usize) -> Result<Vec<T>, String> {
    let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None).take(count).collect();
    for (index, value) in items {
        let slot = slots
            .get_mut(index)
            .ok_or_else(|| format!("index {index} is out of range for a request of {count} input(s)"))?;
        if slot.replace(value).is_some() {
            return Err(format!("index {index} appears twice"));
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(index, slot)| slot.ok_or_else(|| format!("no result for index {index} of {count} input(s)")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_url_accepts_root_and_v1_bases() {
        assert_eq!(versioned_url("http://h:1", "embeddings"), "http://h:1/v1/embeddings");
        assert_eq!(versioned_url("http://h:1/", "embeddings"), "http://h:1/v1/embeddings");
        assert_eq!(versioned_url("http://h:1/v1", "rerank"), "http://h:1/v1/rerank");
        assert_eq!(
            versioned_url("http://h:1/proxy/v1/", "rerank"),
            "http://h:1/proxy/v1/rerank"
        );
    }

    #[test]
    fn in_input_order_reorders_and_checks_coverage() {
        assert_eq!(
            in_input_order([(2, 'c'), (0, 'a'), (1, 'b')], 3),
            Ok(vec!['a', 'b', 'c'])
        );
        assert!(in_input_order([(0, 'a'), (0, 'b')], 2).unwrap_err().contains("twice"));
        assert!(in_input_order([(3, 'a')], 2).unwrap_err().contains("out of range"));
        assert!(in_input_order([(1, 'b')], 2)
            .unwrap_err()
            .contains("no result for index 0"));
    }
}
