//! Tiny random checkpoints, in the real Hugging Face formats, against sentence-transformers and transformers.
//!
//! `fixtures/make_tiny_checkpoints.py` creates BERT and XLM-RoBERTa encoders (sentence-transformers folders with
//! mean, CLS and max pooling) and `BertForSequenceClassification` / `XLMRobertaForSequenceClassification`
//! cross-encoders, runs the Python libraries on them, and writes their outputs; these tests load the same folders and
//! must agree within 1e-4. It needs a Python with torch, transformers, sentence-transformers and tokenizers:
//!
//! ```text
//! KNOWHOW_PYTHON=/work/pyref/venv/bin/python cargo test -p knowhow-models --test hf_tiny_random
//! ```

mod python_reference;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use knowhow_models::{CrossEncoder, Error, LoadOptions, Pooling, SentenceEmbedder};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Reference {
    embedders: Vec<EmbedderCase>,
    cross_encoders: Vec<CrossEncoderCase>,
}

#[derive(Deserialize)]
struct EmbedderCase {
    name: String,
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    token_counts: Vec<usize>,
    max_seq_length: usize,
    pooling: Pooling,
    normalize: bool,
}

#[derive(Deserialize)]
struct CrossEncoderCase {
    name: String,
    query: String,
    passages: Vec<String>,
    logits: Vec<f32>,
    max_seq_length: usize,
}

/// The generator's folder and reference; `None` (skipped) without KNOWHOW_PYTHON.
fn checkpoints(test: &str) -> Option<&'static (PathBuf, Reference)> {
    static GENERATED: OnceLock<(PathBuf, Reference)> = OnceLock::new();
    python_reference::once(&GENERATED, test, |python| {
        python_reference::generate(&python, "make_tiny_checkpoints.py", "knowhow-models-tiny-checkpoints")
    })
}

/// Largest absolute difference between two equally long slices.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check_embedder(dir: &Path, case: &EmbedderCase) {
    let texts: Vec<&str> = case.texts.iter().map(String::as_str).collect();
    // Batch size 1 runs every text alone; 4 packs texts of different lengths together (the Python side padded them).
    for batch_size in [1, 4] {
        let options = LoadOptions {
            batch_size,
            ..LoadOptions::default()
        };
        let embedder = SentenceEmbedder::load(&dir.join(&case.name), options).unwrap();
        let info = embedder.info();
        assert_eq!(
            (info.pooling, info.normalize),
            (case.pooling, case.normalize),
            "{}",
            case.name
        );
        assert_eq!(embedder.max_seq_length(), case.max_seq_length, "{}", case.name);
        assert!(
            case.token_counts.iter().any(|&n| n + 2 > case.max_seq_length),
            "a text must be truncated"
        );

        let counts: Vec<usize> = texts.iter().map(|text| embedder.count_tokens(text)).collect();
        assert_eq!(counts, case.token_counts, "{}: token counts", case.name);
        let vectors = embedder.embed(&texts).unwrap();
        assert_eq!(vectors.len(), case.embeddings.len());
        for (index, (ours, theirs)) in vectors.iter().zip(&case.embeddings).enumerate() {
            assert_eq!(ours.len(), embedder.dimension());
            let diff = max_abs_diff(ours, theirs);
            assert!(
                diff <= TOLERANCE,
                "{} batch {batch_size} text {index}: max abs diff {diff}",
                case.name
            );
        }
    }
}

fn check_cross_encoder(dir: &Path, case: &CrossEncoderCase) {
    let passages: Vec<&str> = case.passages.iter().map(String::as_str).collect();
    for batch_size in [1, 3] {
        let options = LoadOptions {
            batch_size,
            ..LoadOptions::default()
        };
        let cross_encoder = CrossEncoder::load(&dir.join(&case.name), options).unwrap();
        assert_eq!(cross_encoder.max_seq_length(), case.max_seq_length, "{}", case.name);
        let scores = cross_encoder.score(&case.query, &passages).unwrap();
        let diff = max_abs_diff(&scores, &case.logits);
        eprintln!(
            "{} batch {batch_size}: logits {scores:?}, max abs diff {diff:e}",
            case.name
        );
        assert!(
            diff <= TOLERANCE,
            "{} batch {batch_size}: max abs diff {diff}",
            case.name
        );
    }
}

fn embedder_case<'a>(reference: &'a Reference, name: &str) -> &'a EmbedderCase {
    reference.embedders.iter().find(|case| case.name == name).unwrap()
}

#[test]
fn bert_mean_pooling_matches_sentence_transformers() {
    let Some((dir, reference)) = checkpoints("bert_mean_pooling_matches_sentence_transformers") else {
        return;
    };
    check_embedder(dir, embedder_case(reference, "bert-mean"));
}

#[test]
fn bert_cls_pooling_with_normalize_matches_sentence_transformers() {
    let Some((dir, reference)) = checkpoints("bert_cls_pooling_with_normalize_matches_sentence_transformers") else {
        return;
    };
    check_embedder(dir, embedder_case(reference, "bert-cls-normalized"));
}

#[test]
fn xlm_roberta_max_pooling_matches_sentence_transformers() {
    let Some((dir, reference)) = checkpoints("xlm_roberta_max_pooling_matches_sentence_transformers") else {
        return;
    };
    check_embedder(dir, embedder_case(reference, "xlmr-max-normalized"));
}

#[test]
fn bert_cross_encoder_matches_transformers() {
    let Some((dir, reference)) = checkpoints("bert_cross_encoder_matches_transformers") else {
        return;
    };
    let case = reference
        .cross_encoders
        .iter()
        .find(|case| case.name == "bert-cross-encoder")
        .unwrap();
    check_cross_encoder(dir, case);
}

#[test]
fn xlm_roberta_cross_encoder_matches_transformers() {
    let Some((dir, reference)) = checkpoints("xlm_roberta_cross_encoder_matches_transformers") else {
        return;
    };
    let case = reference
        .cross_encoders
        .iter()
        .find(|case| case.name == "xlmr-cross-encoder")
        .unwrap();
    check_cross_encoder(dir, case);
}

#[test]
fn loading_errors_name_the_file() {
    let Some((dir, _)) = checkpoints("loading_errors_name_the_file") else {
        return;
    };
    // An embedder folder is not a cross-encoder: its config declares no single label and its weights have no head.
    let err = CrossEncoder::load(&dir.join("bert-mean"), LoadOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Config { path, field, .. } if path.ends_with("config.json") && field == "id2label"),
        "{err}"
    );
    let missing = dir.join("no-such-model");
    let err = SentenceEmbedder::load(&missing, LoadOptions::default()).err().unwrap();
    assert!(
        matches!(&err, Error::Read { path, .. } if *path == missing.join("config.json")),
        "{err}"
    );
}
