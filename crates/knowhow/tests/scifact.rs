//! BM25 quality on the real BEIR SciFact test split.

mod common;

use common::Knowhow;
use knowhow_testkit::env::shared_data;

#[test]
fn bm25_on_scifact_reaches_the_published_baseline() {
    let Some(data) = shared_data("bm25_on_scifact_reaches_the_published_baseline") else {
        return;
    };
    let kh = Knowhow::new();
    let scores = kh.json(&[
        "eval",
        "beir",
        data.join("scifact").to_str().unwrap(),
        "--split",
        "test",
    ]);
    eprintln!("SciFact test BM25: {scores}");
    assert_eq!(scores["queries"], 300);
    // BEIR paper BM25: 0.665; Anserini BM25 flat: 0.679.
    assert!(scores["ndcg@10"].as_f64().unwrap() >= 0.679, "{scores}");
    assert!(scores["recall@100"].as_f64().unwrap() >= 0.88, "{scores}");
}
