use std::time::{Duration, Instant};

use knowhow_rag::remote::{Error, OpenAiEmbedder, RemoteConfig};
use knowhow_testkit::http::{closed_url, Request, Response, Server};
use serde_json::json;

use crate::support::strings;
use crate::test_config;

/// The vector the test servers give a text, so that a misplaced vector shows: its length, its first byte, 1.
fn vector_for(text: &str) -> Vec<f32> {
    vec![text.len() as f32, f32::from(text.bytes().next().unwrap_or(0)), 1.0]
}

/// An OpenAI-shaped answer to `request`, with `data` in the order `arrange` leaves it.
fn embeddings_reply(request: &Request, arrange: impl FnOnce(&mut Vec<serde_json::Value>)) -> Response {
    let mut data: Vec<serde_json::Value> = strings(request, "input")
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": vector_for(text)}))
        .collect();
    arrange(&mut data);
    Response::json(&json!({"object": "list", "data": data, "model": "test-model", "usage": {"total_tokens": 1}}))
}

fn in_order(request: &Request) -> Response {
    embeddings_reply(request, |_| {})
}

fn embedder(config: RemoteConfig) -> OpenAiEmbedder {
    OpenAiEmbedder::new(config).expect("valid test configuration")
}

#[test]
fn local_test_server_embeddings_request_body_and_headers() {
    let server = Server::start(in_order);
    let config = RemoteConfig {
        api_key: Some("sk-test".into()),
        ..test_config(server.url())
    };
    let embedder = embedder(config);

    let vectors = embedder.embed(&["hello", "world!"]).unwrap();

    assert_eq!(vectors, vec![vector_for("hello"), vector_for("world!")]);
    let received = server.requests();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("POST", "/v1/embeddings")
    );
    assert_eq!(request.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json(),
        json!({"model": "test-model", "input": ["hello", "world!"], "encoding_format": "float"})
    );
}

#[test]
fn local_test_server_embeddings_base_ending_in_v1_and_dimensions() {
    let server = Server::start(in_order);
    let embedder = embedder(test_config(&format!("{}/v1/", server.url()))).with_dimensions(3);
    assert_eq!(embedder.url(), format!("{}/v1/embeddings", server.url()));
    assert_eq!(embedder.dimension(), None);

    embedder.embed(&["one"]).unwrap();

    assert_eq!(embedder.dimension(), Some(3));
    let request = &server.requests()[0];
    assert_eq!(request.target, "/v1/embeddings");
    assert_eq!(request.header("authorization"), None, "no key, no Authorization header");
    assert_eq!(request.json()["dimensions"], json!(3));
}

#[test]
fn local_test_server_embeddings_batches_split() {
    let server = Server::start(in_order);
    let embedder = embedder(RemoteConfig {
        batch_size: 2,
        ..test_config(server.url())
    });
    let texts = ["a", "bb", "ccc", "dddd", "eeeee"];

    let vectors = embedder.embed(&texts).unwrap();

    assert_eq!(vectors, texts.iter().map(|t| vector_for(t)).collect::<Vec<_>>());
    let batches: Vec<Vec<String>> = server.requests().iter().map(|r| strings(r, "input")).collect();
    assert_eq!(batches, [vec!["a", "bb"], vec!["ccc", "dddd"], vec!["eeeee"]]);
}

#[test]
fn local_test_server_embeddings_ordered_by_index_when_shuffled() {
    let server = Server::start(|request| {
        embeddings_reply(request, |data| {
            data.reverse();
            data.rotate_left(2);
        })
    });
    let texts = ["alpha", "be", "gamma ray", "d", "epsilon"];

    let vectors = embedder(test_config(server.url())).embed(&texts).unwrap();

    assert_eq!(vectors, texts.iter().map(|t| vector_for(t)).collect::<Vec<_>>());
}

#[test]
fn local_test_server_embeddings_missing_index_is_an_error() {
    let server = Server::start(|request| embeddings_reply(request, |data| data.truncate(1)));

    let err = embedder(test_config(server.url())).embed(&["a", "b"]).unwrap_err();

    assert!(matches!(err, Error::Response { .. }), "{err:?}");
    assert!(err.to_string().contains("no result for index 1 of 2"), "{err}");
}

#[test]
fn local_test_server_embeddings_dimension_change_is_an_error() {
    let server = Server::start(|request| {
        embeddings_reply(request, |data| {
            if request.number == 1 {
                data[0]["embedding"] = json!([0.5, 0.5]);
            }
        })
    });
    let embedder = embedder(test_config(server.url()));
    embedder.embed(&["first"]).unwrap();

    let err = embedder.embed(&["second"]).unwrap_err();

    assert!(
        err.to_string()
            .contains("got a vector of 2 numbers, but earlier vectors had 3"),
        "{err}"
    );
}

#[test]
fn local_test_server_embeddings_requested_dimensions_not_honoured() {
    let server = Server::start(in_order);

    let err = embedder(test_config(server.url()))
        .with_dimensions(8)
        .embed(&["x"])
        .unwrap_err();

    assert!(err.to_string().contains("asked for 8 dimensions but got 3"), "{err}");
}

#[test]
fn local_test_server_embeddings_empty_input_sends_nothing() {
    let server = Server::start(in_order);

    assert!(embedder(test_config(server.url())).embed(&[]).unwrap().is_empty());
    assert!(server.requests().is_empty());
}

#[test]
fn local_test_server_retry_on_503_then_success() {
    let server = Server::start(|request| match request.number {
        0 => Response::new(503, "text/plain", "upstream overloaded"),
        _ => in_order(request),
    });

    let vectors = embedder(test_config(server.url())).embed(&["retry me"]).unwrap();

    assert_eq!(vectors, vec![vector_for("retry me")]);
    let received = server.requests();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].body, received[1].body, "the retry resends the same request");
}

#[test]
fn local_test_server_connection_dropped_is_retried() {
    let server = Server::start(|request| match request.number {
        0 => Response::hang_up(),
        _ => in_order(request),
    });

    let vectors = embedder(test_config(server.url())).embed(&["again"]).unwrap();

    assert_eq!(vectors, vec![vector_for("again")]);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn local_test_server_retry_after_honoured() {
    let server = Server::start(|request| match request.number {
        0 => Response::json(&json!({"error": {"message": "slow down"}}))
            .with_status(429)
            .with_header("Retry-After", "1"),
        _ => in_order(request),
    });
    // Back-off alone would wait about 1 ms; only Retry-After explains a wait of a second.
    let config = RemoteConfig {
        max_backoff: Duration::from_secs(5),
        ..test_config(server.url())
    };

    let started = Instant::now();
    embedder(config).embed(&["patience"]).unwrap();

    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "retried after {waited:?}, before the server's Retry-After of 1 s"
    );
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn local_test_server_retry_after_bounded_by_max_backoff() {
    let server = Server::start(|request| match request.number {
        0 => Response::new(503, "text/plain", "maintenance").with_header("Retry-After", "3600"),
        _ => in_order(request),
    });
    let config = RemoteConfig {
        max_backoff: Duration::from_millis(100),
        ..test_config(server.url())
    };

    let started = Instant::now();
    embedder(config).embed(&["soon"]).unwrap();

    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited {:?}",
        started.elapsed()
    );
}

#[test]
fn local_test_server_gives_up_after_max_retries() {
    let server = Server::start(|_| Response::json(&json!({"error": {"message": "model overloaded"}})).with_status(503));
    let config = RemoteConfig {
        max_retries: 2,
        ..test_config(server.url())
    };

    let err = embedder(config).embed(&["never"]).unwrap_err();

    assert_eq!(server.requests().len(), 3, "one attempt and two retries");
    match &err {
        Error::Status {
            status,
            attempts,
            message,
            url,
        } => {
            assert_eq!((*status, *attempts, message.as_str()), (503, 3, "model overloaded"));
            assert_eq!(url, &format!("{}/v1/embeddings", server.url()));
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    let shown = err.to_string();
    for part in ["HTTP 503", "after 3 attempt(s)", "model overloaded", "/v1/embeddings"] {
        assert!(shown.contains(part), "{shown:?} lacks {part:?}");
    }
}

#[test]
fn local_test_server_401_not_retried() {
    let server = Server::start(|_| {
        Response::json(&json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}))
            .with_status(401)
    });
    let config = RemoteConfig {
        api_key: Some("sk-wrong".into()),
        ..test_config(server.url())
    };

    let err = embedder(config).embed(&["secret"]).unwrap_err();

    assert_eq!(server.requests().len(), 1);
    assert!(
        matches!(
            err,
            Error::Status {
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("Incorrect API key provided") && shown.contains("check the API key"),
        "{shown}"
    );
}

#[test]
fn local_test_server_malformed_json_error_message() {
    let server = Server::start(|_| Response::ok("application/json", r#"{"data": [{"index": 0, "embedding": [0.1,"#));

    let err = embedder(test_config(server.url())).embed(&["x"]).unwrap_err();

    assert!(matches!(err, Error::Response { .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1, "a malformed answer is not retried");
    let shown = err.to_string();
    assert!(
        shown.contains("/v1/embeddings") && shown.contains("expected {\"data\""),
        "{shown}"
    );
    assert!(
        shown.contains(r#"{\"data\": [{\"index\": 0"#),
        "the error quotes the response: {shown}"
    );
}

#[test]
fn local_test_server_timeout_is_retried_then_reported() {
    let server = Server::start(|request| in_order(request).after(Duration::from_secs(1)));
    let config = RemoteConfig {
        timeout: Duration::from_millis(200),
        max_retries: 1,
        ..test_config(server.url())
    };

    // Without the timeout, the first attempt would succeed after a second.
    let err = embedder(config).embed(&["slow"]).unwrap_err();

    assert!(
        matches!(
            err,
            Error::Transport {
                attempts: 2,
                source: ureq::Error::Timeout(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn refused_connection_gives_up_with_a_clear_error() {
    let config = RemoteConfig {
        max_retries: 1,
        ..test_config(&closed_url())
    };

    let err = embedder(config).embed(&["anyone there?"]).unwrap_err();

    assert!(matches!(err, Error::Transport { attempts: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("check that the server is running"), "{err}");
}
