//! The remote clients against the workspace's local test server (`knowhow_testkit::http`), since the hosted APIs
//! cannot be reached from tests: request bodies and headers as received, batching, result order, retries and error
//! messages.

mod embeddings;
mod rerank;
mod support;

use std::time::Duration;

use knowhow_rag::remote::RemoteConfig;

/// A configuration for a local test server, with back-off short enough for tests.
fn test_config(base_url: &str) -> RemoteConfig {
    RemoteConfig {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(10),
        ..RemoteConfig::new(base_url, "test-model")
    }
}
