//! Why one attempt failed, and whether another attempt may succeed.

use std::time::Duration;

use crate::remote::http::is_transient_transport;

/// Why one attempt failed.
#[derive(Debug)]
pub(super) enum Failure {
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    Transport(ureq::Error),
    /// Reading the body failed (connection reset, timeout between chunks).
    Io(std::io::Error),
    /// The stream carried an error object (vLLM, llama.cpp and OpenAI send one when generation fails midway).
    Event {
        message: String,
        transient: bool,
    },
    /// The body ended with no `finish_reason` and no `[DONE]`.
    Ended,
    /// Not an OpenAI chat response.
    Malformed(String),
}

impl Failure {
    /// The server went quiet for longer than the read timeout.
    pub(super) fn is_timeout(&self) -> bool {
        match self {
            Failure::Transport(ureq::Error::Timeout(_)) => true,
            Failure::Io(error) => {
                matches!(
                    error.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) || error
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<ureq::Error>())
                    .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)))
            }
            _ => false,
        }
    }

    pub(super) fn is_transient(&self) -> bool {
        match self {
            Failure::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Failure::Transport(error) => is_transient_transport(error),
            Failure::Io(_) | Failure::Ended => true,
            Failure::Event { transient, .. } => *transient,
            Failure::Malformed(_) => false,
        }
    }
}
