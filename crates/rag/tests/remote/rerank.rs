use knowhow_rag::remote::{Error, RemoteConfig, RemoteReranker, RerankFlavor};
use knowhow_testkit::http::{Request, Response, Server};
use serde_json::json;

use crate::support::strings;
use crate::test_config;

/// The score the test servers give a passage, so that a misplaced score shows.
fn score_for(passage: &str) -> f32 {
    passage.len() as f32 / 100.0
}

/// (index, score) for each passage, best first, as both TEI and Cohere order their answers.
fn scored(passages: &[String]) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = passages.iter().enumerate().map(|(i, p)| (i, score_for(p))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
}

fn tei_reply(request: &Request) -> Response {
    let body: Vec<_> = scored(&strings(request, "texts"))
        .iter()
        .map(|(i, s)| json!({"index": i, "score": s}))
        .collect();
    Response::json(&json!(body))
}

fn cohere_reply(request: &Request) -> Response {
    let results: Vec<_> = scored(&strings(request, "documents"))
        .iter()
        .map(|(i, s)| json!({"index": i, "relevance_score": s}))
        .collect();
    Response::json(&json!({"id": "r-1", "results": results, "meta": {"api_version": {"version": "1"}}}))
}

fn reranker(config: RemoteConfig, flavor: RerankFlavor) -> RemoteReranker {
    RemoteReranker::new(config, flavor).expect("valid test configuration")
}

const PASSAGES: [&str; 3] = ["short", "a considerably longer passage", "mid-sized one"];

fn expected_scores(passages: &[&str]) -> Vec<f32> {
    passages.iter().map(|p| score_for(p)).collect()
}

#[test]
fn local_test_server_rerank_tei_request_and_scores() {
    let server = Server::start(tei_reply);

    let scores = reranker(test_config(server.url()), RerankFlavor::Tei)
        .rerank("q?", &PASSAGES)
        .unwrap();

    assert_eq!(scores, expected_scores(&PASSAGES));
    let request = &server.requests()[0];
    assert_eq!((request.method.as_str(), request.target.as_str()), ("POST", "/rerank"));
    assert_eq!(
        request.json(),
        json!({"query": "q?", "texts": PASSAGES, "raw_scores": false, "truncate": true})
    );
}

#[test]
fn local_test_server_rerank_tei_raw_scores() {
    let server = Server::start(tei_reply);

    reranker(test_config(server.url()), RerankFlavor::Tei)
        .with_raw_scores(true)
        .rerank("q", &["p"])
        .unwrap();

    assert_eq!(server.requests()[0].json()["raw_scores"], json!(true));
}

#[test]
fn local_test_server_rerank_cohere_request_and_scores() {
    let server = Server::start(cohere_reply);
    let config = RemoteConfig {
        api_key: Some("co-key".into()),
        ..test_config(server.url())
    };

    let scores = reranker(config, RerankFlavor::Cohere)
        .rerank("which?", &PASSAGES)
        .unwrap();

    assert_eq!(scores, expected_scores(&PASSAGES));
    let request = &server.requests()[0];
    assert_eq!(request.target, "/v1/rerank");
    assert_eq!(request.header("authorization"), Some("Bearer co-key"));
    assert_eq!(
        request.json(),
        json!({"model": "test-model", "query": "which?", "documents": PASSAGES, "top_n": 3, "return_documents": false})
    );
}

#[test]
fn local_test_server_rerank_jina_with_v1_base() {
    let server = Server::start(cohere_reply);
    let reranker = reranker(test_config(&format!("{}/v1", server.url())), RerankFlavor::Jina);

    let scores = reranker.rerank("q", &PASSAGES).unwrap();

    assert_eq!(scores, expected_scores(&PASSAGES));
    assert_eq!(server.requests()[0].target, "/v1/rerank");
    assert_eq!(strings(&server.requests()[0], "documents"), PASSAGES);
}

#[test]
fn local_test_server_rerank_detects_the_response_shape() {
    // A proxy in front of TEI that answers in Cohere's shape, and the other way round.
    let cohere_shaped = Server::start(|request| {
        let passages: Vec<String> = strings(request, "texts");
        let results: Vec<_> = scored(&passages)
            .iter()
            .map(|(i, s)| json!({"index": i, "relevance_score": s}))
            .collect();
        Response::json(&json!({"results": results}))
    });
    let scores = reranker(test_config(cohere_shaped.url()), RerankFlavor::Tei)
        .rerank("q", &PASSAGES)
        .unwrap();
    assert_eq!(scores, expected_scores(&PASSAGES));

    let tei_shaped = Server::start(|request| {
        let passages: Vec<String> = strings(request, "documents");
        Response::json(&json!(scored(&passages)
            .iter()
            .map(|(i, s)| json!({"index": i, "score": s}))
            .collect::<Vec<_>>()))
    });
    let scores = reranker(test_config(tei_shaped.url()), RerankFlavor::Cohere)
        .rerank("q", &PASSAGES)
        .unwrap();
    assert_eq!(scores, expected_scores(&PASSAGES));
}

#[test]
fn local_test_server_rerank_batches_split() {
    let server = Server::start(cohere_reply);
    let config = RemoteConfig {
        batch_size: 2,
        ..test_config(server.url())
    };
    let passages = ["one", "three", "seventeen", "a", "twenty-two"];

    let scores = reranker(config, RerankFlavor::Cohere).rerank("q", &passages).unwrap();

    assert_eq!(scores, expected_scores(&passages));
    let received = server.requests();
    let batches: Vec<Vec<String>> = received.iter().map(|r| strings(r, "documents")).collect();
    assert_eq!(
        batches,
        [vec!["one", "three"], vec!["seventeen", "a"], vec!["twenty-two"]]
    );
    let top_ns: Vec<serde_json::Value> = received.iter().map(|r| r.json()["top_n"].clone()).collect();
    assert_eq!(top_ns, [json!(2), json!(2), json!(1)]);
}

#[test]
fn local_test_server_rerank_retry_on_503_then_success() {
    let server = Server::start(|request| match request.number {
        0 => Response::json(&json!({"error": "Model is overloaded", "error_type": "Overloaded"})).with_status(503),
        _ => tei_reply(request),
    });

    let scores = reranker(test_config(server.url()), RerankFlavor::Tei)
        .rerank("q", &PASSAGES)
        .unwrap();

    assert_eq!(scores, expected_scores(&PASSAGES));
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn local_test_server_rerank_tei_error_message_is_reported() {
    let server = Server::start(|_| {
        Response::json(&json!({"error": "batch size 64 > maximum allowed batch size 32", "error_type": "Validation"}))
            .with_status(413)
    });

    let err = reranker(test_config(server.url()), RerankFlavor::Tei)
        .rerank("q", &PASSAGES)
        .unwrap_err();

    assert_eq!(server.requests().len(), 1, "413 is not retried");
    let shown = err.to_string();
    assert!(
        shown.contains("maximum allowed batch size 32") && shown.contains("lower the batch size"),
        "{shown}"
    );
}

#[test]
fn local_test_server_rerank_missing_result_is_an_error() {
    let server = Server::start(|_| Response::json(&json!([{"index": 0, "score": 0.9}])));

    let err = reranker(test_config(server.url()), RerankFlavor::Tei)
        .rerank("q", &PASSAGES)
        .unwrap_err();

    assert!(matches!(err, Error::Response { .. }), "{err:?}");
    assert!(err.to_string().contains("no result for index 1 of 3"), "{err}");
}

#[test]
fn cohere_and_jina_need_a_model_name() {
    for flavor in [RerankFlavor::Cohere, RerankFlavor::Jina] {
        let err = RemoteReranker::new(RemoteConfig::new("http://127.0.0.1:1", ""), flavor).unwrap_err();
        assert!(
            matches!(err, Error::Config(_)) && err.to_string().contains("needs a model name"),
            "{err}"
        );
    }
}
