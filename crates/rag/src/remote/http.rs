//! JSON POST with the retry policy shared by every remote client.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::{Error, RemoteConfig};

/// Responses larger than this are refused (ureq's default of 10 MiB is too small for 64 vectors of 3,072 floats
/// written as JSON text).
const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// How much of a response body goes into an error message.
const ERROR_BODY_CHARS: usize = 300;

/// Posts JSON bodies to one URL and retries what is worth retrying.
#[derive(Debug)]
pub(crate) struct JsonPoster {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

/// Why one attempt failed, and whether another may succeed.
enum Failure {
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    Transport(ureq::Error),
}

impl Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Failure::Transport(error) => is_transient_transport(error),
        }
    }
}

/// Whether a transport error (connection refused or reset, timeout, garbled response) may go away on a retry.
pub(crate) fn is_transient_transport(error: &ureq::Error) -> bool {
    matches!(
        error,
        ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_)
    )
}

impl JsonPoster {
    /// Checks the configuration that every client shares and prepares the HTTP agent.
    pub(crate) fn new(config: &RemoteConfig, url: String) -> Result<Self, Error> {
        if !(config.base_url.starts_with("http://") || config.base_url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "base_url {:?} must start with http:// or https://",
                config.base_url
            )));
        }
        if config.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        if config.timeout.is_zero() {
            return Err(Error::Config("timeout must be longer than 0".into()));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .user_agent(concat!("knowhow/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Self {
            agent,
            url,
            authorization: config.api_key.as_ref().map(|key| format!("Bearer {key}")),
            max_retries: config.max_retries,
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// POSTs `body` (JSON) and returns the text of the first successful (2xx) response.
    pub(crate) fn post(&self, body: &[u8]) -> Result<String, Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.attempt(body) {
                Ok(text) => return Ok(text),
                Err(failure) => failure,
            };
            if !failure.is_transient() || attempts > self.max_retries {
                return Err(self.error(failure, attempts));
            }
            let retry_after = match &failure {
                Failure::Status { retry_after, .. } => *retry_after,
                Failure::Transport(_) => None,
            };
            std::thread::sleep(self.delay_before_retry(attempts, retry_after));
        }
    }

    fn attempt(&self, body: &[u8]) -> Result<String, Failure> {
        let mut request = self.agent.post(&self.url).header("Content-Type", "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request.send(body).map_err(Failure::Transport)?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .lossy_utf8(true)
            .read_to_string();
        if (200..300).contains(&status) {
            return text.map_err(Failure::Transport);
        }
        let message = match text {
            Ok(text) => server_message(&text),
            Err(error) => format!("(the response body could not be read: {error})"),
        };
        Err(Failure::Status {
            status,
            message,
            retry_after,
        })
    }

    fn error(&self, failure: Failure, attempts: u32) -> Error {
        let url = self.url.clone();
        match failure {
            Failure::Status { status, message, .. } => Error::Status {
                url,
                status,
                message,
                attempts,
            },
            Failure::Transport(source) => Error::Transport { url, attempts, source },
        }
    }

    /// The pause after the `attempts`-th failure: the server's `Retry-After` when it gave one, else exponential
    /// back-off with "equal jitter" (a random point in the upper half of the doubled delay, so clients that failed
    /// together do not retry together, yet each still waits at least half the delay). Both are capped by
    /// `max_backoff`.
    fn delay_before_retry(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        backoff_delay(self.initial_backoff, self.max_backoff, attempts, retry_after)
    }
}

/// The pause after the `attempts`-th failure (see [`JsonPoster::delay_before_retry`]), for every remote client.
pub(crate) fn backoff_delay(
    initial_backoff: Duration,
    max_backoff: Duration,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Duration {
    if let Some(retry_after) = retry_after {
        return retry_after.min(max_backoff);
    }
    let doubled = initial_backoff.saturating_mul(2u32.saturating_pow(attempts - 1));
    let delay = doubled.min(max_backoff);
    delay / 2 + (delay / 2).mul_f64(random_fraction())
}

/// A number in [0, 1) that differs between calls; std's per-process random hash keys are enough for jitter.
pub(crate) fn random_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait a server asks for: `retry-after-ms` (OpenAI and Azure) or `Retry-After` in seconds. The HTTP-date
/// form of `Retry-After` is not read; the computed back-off applies then.
pub(crate) fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let seconds = match number("retry-after-ms") {
        Some(millis) => millis / 1000.0,
        None => number("retry-after")?,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// The human part of an error body: OpenAI's `{"error": {"message": ..}}`, TEI's `{"error": ..}`, Cohere's and
/// Jina's `{"message": ..}` or `{"detail": ..}`; otherwise the start of the body as it is.
pub(crate) fn server_message(body: &str) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = json.as_ref().and_then(|json| {
        [
            json.pointer("/error/message"),
            json.get("error"),
            json.get("message"),
            json.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(serde_json::Value::as_str)
    });
    match message {
        Some(message) => message.to_string(),
        None if body.trim().is_empty() => "(empty response body)".to_string(),
        None => start_of(body),
    }
}

/// The first characters of a response, for error messages.
pub(crate) fn start_of(body: &str) -> String {
    match body.char_indices().nth(ERROR_BODY_CHARS) {
        Some((end, _)) => format!("{}…", &body[..end]),
        None => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poster(initial_backoff: Duration, max_backoff: Duration) -> JsonPoster {
        let config = RemoteConfig {
            initial_backoff,
            max_backoff,
            ..RemoteConfig::new("http://127.0.0.1:9", "m")
        };
        JsonPoster::new(&config, "http://127.0.0.1:9/v1/embeddings".into()).unwrap()
    }

    #[test]
    fn back_off_doubles_with_jitter_in_the_upper_half_and_is_capped() {
        let poster = poster(Duration::from_millis(100), Duration::from_secs(1));
        for attempts in 1..=10 {
            let full = Duration::from_millis(100 * 2u64.pow(attempts - 1)).min(Duration::from_secs(1));
            let delay = poster.delay_before_retry(attempts, None);
            assert!(
                delay >= full / 2 && delay <= full,
                "attempt {attempts}: {delay:?} outside [{full:?}/2, {full:?}]"
            );
        }
        let delays: Vec<Duration> = (0..20).map(|_| poster.delay_before_retry(3, None)).collect();
        assert!(delays.iter().any(|d| *d != delays[0]), "no jitter: {delays:?}");
    }

    #[test]
    fn retry_after_replaces_back_off_but_is_capped() {
        let poster = poster(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(
            poster.delay_before_retry(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            poster.delay_before_retry(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn retry_after_headers_are_read_in_seconds_or_milliseconds() {
        let mut headers = ureq::http::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        headers.remove("retry-after-ms");
        headers.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "-3".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn server_messages_are_found_in_each_api_error_shape() {
        assert_eq!(
            server_message(r#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#),
            "bad key"
        );
        assert_eq!(
            server_message(r#"{"error":"batch too large","error_type":"Validation"}"#),
            "batch too large"
        );
        assert_eq!(server_message(r#"{"message":"invalid model"}"#), "invalid model");
        assert_eq!(server_message(r#"{"detail":"Not authenticated"}"#), "Not authenticated");
        assert_eq!(server_message("upstream timed out"), "upstream timed out");
        assert_eq!(server_message(""), "(empty response body)");
        let long = "x".repeat(1000);
        assert_eq!(server_message(&long).chars().count(), ERROR_BODY_CHARS + 1);
    }

    #[test]
    fn configuration_mistakes_are_refused() {
        let bad_scheme = RemoteConfig::new("api.openai.com", "m");
        let err = JsonPoster::new(&bad_scheme, String::new()).unwrap_err();
        assert!(err.to_string().contains("must start with http"), "{err}");
        let no_batch = RemoteConfig {
            batch_size: 0,
            ..RemoteConfig::new("http://h", "m")
        };
        assert!(JsonPoster::new(&no_batch, String::new())
            .unwrap_err()
            .to_string()
            .contains("batch_size"));
    }
}
