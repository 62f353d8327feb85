//! Vectors in the store and the dense scan, through the public API: model
//! pins, validation, exact top k, filters, tombstones and compaction,
//! catch-up of a deleted or stale vector file, and re-embedding.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{chunk_vector, collection, metadata, pin, source_update, unit_vector, update, DIMENSION};
use knowhow_core::ChunkId;
use knowhow_index::{Error, Filter, Home, ScoredChunk, Writer};
use serde_json::json;

const MODEL: &str = "model-a";

fn home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = Home::new(dir.path());
    (dir, home)
}

fn vectors_dir(home: &Home) -> PathBuf {
    let c = collection();
    home.root()
        .join("collections")
        .join(&c.namespace)
        .join(&c.collection)
        .join("vectors")
}

fn pinned_writer(home: &Home) -> Writer {
    let mut writer = home.open_writer(&collection(), true).expect("writer");
    writer.pin_model(&pin(MODEL, DIMENSION)).expect("pin");
    writer
}

/// Writes `docs` documents `d0..` with 1 to 4 chunks each, at `version`,
/// two per source; returns chunk id → vector of everything written.
fn ingest(writer: &mut Writer, docs: u32, version: u32) -> HashMap<ChunkId, Vec<f32>> {
    let mut expected = HashMap::new();
    let mut updates = Vec::new();
    for pair in 0..docs.div_ceil(2) {
        let mut documents = Vec::new();
        for id in [2 * pair, 2 * pair + 1].into_iter().filter(|&i| i < docs) {
            let name = format!("d{id}");
            let lang = if id % 3 == 0 { "fr" } else { "en" };
            let chunks = 1 + id % 4;
            for o in 0..chunks {
                expected.insert(ChunkId::new(&name, o), chunk_vector(&name, version, o, MODEL));
            }
            documents.push(update(
                &name,
                &format!("s{pair}"),
                version,
                chunks,
                metadata(&[("lang", json!(lang)), ("id", json!(id))]),
                Some(MODEL),
            ));
        }
        updates.push(source_update(&format!("s{pair}"), documents));
    }
    writer.apply(updates).expect("apply");
    expected
}

fn brute_force(vectors: &HashMap<ChunkId, Vec<f32>>, query: &[f32], k: usize) -> Vec<ChunkId> {
    let mut scored: Vec<(ChunkId, f32)> = vectors
        .iter()
        .map(|(key, v)| (key.clone(), v.iter().zip(query).map(|(a, b)| a * b).sum()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.into_iter().take(k).map(|(key, _)| key).collect()
}

fn keys(hits: &[ScoredChunk]) -> Vec<ChunkId> {
    hits.iter().map(|h| h.id.clone()).collect()
}

fn assert_consistent(home: &Home) {
    let report = home
        .open_catalog(&collection())
        .expect("catalog")
        .check()
        .expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn dense_top_k_equals_brute_force_and_scores_are_inner_products() {
    let (_dir, home) = home();
    let mut writer = pinned_writer(&home);
    let expected = ingest(&mut writer, 80, 1);
    writer.finish().expect("finish");
    let reader = home.open_reader(&collection()).expect("reader");
    for q in 0..5 {
        let query = unit_vector(&format!("query {q}"), DIMENSION);
        let hits = reader.dense(&query, 10, None).expect("dense");
        assert_eq!(keys(&hits), brute_force(&expected, &query, 10));
        for hit in &hits {
            let v = &expected[&hit.id];
            let dot: f32 = v.iter().zip(&query).map(|(a, b)| a * b).sum();
            assert!((hit.score - dot).abs() < 1e-5);
        }
    }
    // Every chunk's own vector finds that chunk first, with score 1.
    for (id, v) in expected.iter().take(20) {
        let top = &reader.dense(v, 1, None).expect("dense")[0];
        assert_eq!(&top.id, id);
        assert!((top.score - 1.0).abs() < 1e-5);
    }
    assert!(reader
        .dense(&expected[&ChunkId::new("d0", 0)], 0, None)
        .expect("dense")
        .is_empty());
    assert_eq!(
        reader
            .dense(&expected[&ChunkId::new("d0", 0)], 1000, None)
            .expect("dense")
            .len(),
        expected.len()
    );
    assert_consistent(&home);
}

#[test]
fn a_metadata_filter_keeps_only_matching_documents() {
    let (_dir, home) = home();
    let mut writer = pinned_writer(&home);
    let expected = ingest(&mut writer, 40, 1);
    writer.finish().expect("finish");
    let reader = home.open_reader(&collection()).expect("reader");
    let french: HashMap<ChunkId, Vec<f32>> = expected
        .iter()
        .filter(|(id, _)| id.document_id[1..].parse::<u32>().expect("numeric id") % 3 == 0)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let filter = Filter {
        metadata: vec![("lang".into(), "fr".into())],
    };
    let query = unit_vector("filtered query", DIMENSION);
    let hits = reader.dense(&query, 5, Some(&filter)).expect("dense");
    assert_eq!(keys(&hits), brute_force(&french, &query, 5));
    let one = Filter {
        metadata: vec![("lang".into(), "fr".into()), ("id".into(), "9".into())],
    };
    let hits = reader.dense(&query, 50, Some(&one)).expect("dense");
    assert!(!hits.is_empty() && hits.iter().all(|h| h.id.document_id == "d9"));
    let none = Filter {
        metadata: vec![("lang".into(), "de".into())],
    };
    assert!(reader.dense(&query, 5, Some(&none)).expect("dense").is_empty());
}

fn generation_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("vector dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "manifest.json")
        .collect();
    names.sort();
    names
}

#[test]
fn replaced_and_removed_documents_leave_the_scan_and_compaction_reclaims_their_rows() {
    let (_dir, home) = home();
    let mut writer = pinned_writer(&home);
    ingest(&mut writer, 30, 1);
    writer.flush().expect("flush");
    let first_files = generation_files(&vectors_dir(&home));
    // Each re-ingest replaces every document: the dead rows soon exceed
    // half, and a commit moves the live ones to a new generation.
    let mut expected = HashMap::new();
    for version in 2..=4 {
        expected = ingest(&mut writer, 30, version);
        writer.flush().expect("flush");
    }
    let removed = writer.remove_sources(&["s0".to_string()]).expect("remove");
    assert_eq!(removed, 2);
    expected.retain(|id, _| id.document_id != "d0" && id.document_id != "d1");
    writer.finish().expect("finish");

    let files = generation_files(&vectors_dir(&home));
    assert_eq!(files.len(), 3, "one generation remains: {files:?}");
    assert_ne!(files, first_files, "compaction moved to a new generation");
    let rows_file = files.iter().find(|f| f.starts_with("rows.")).expect("a rows file");
    let rows_bytes = std::fs::metadata(vectors_dir(&home).join(rows_file))
        .expect("rows")
        .len();
    let live = expected.len() as u64;
    assert!(
        rows_bytes <= 2 * live * u64::from(DIMENSION) * 4,
        "{rows_bytes} bytes of rows for {live} live ones"
    );

    let reader = home.open_reader(&collection()).expect("reader");
    for q in 0..3 {
        let query = unit_vector(&format!("q{q}"), DIMENSION);
        assert_eq!(
            keys(&reader.dense(&query, 8, None).expect("dense")),
            brute_force(&expected, &query, 8)
        );
    }
    // An old version's vector now matches nothing exactly.
    let old = chunk_vector("d5", 1, 0, MODEL);
    let top = &reader.dense(&old, 1, None).expect("dense")[0];
    assert!(top.score < 0.99, "a replaced vector is still searched: {top:?}");
    let gone = chunk_vector("d0", 4, 0, MODEL);
    assert!(reader
        .dense(&gone, 100, None)
        .expect("dense")
        .iter()
        .all(|h| h.id.document_id != "d0"));
    assert_consistent(&home);
}

#[test]
fn another_model_is_refused_for_ingest_and_query_naming_both_and_reembed() {
    let (_dir, home) = home();
    let mut writer = pinned_writer(&home);
    ingest(&mut writer, 4, 1);
    writer.finish().expect("finish");

    let mut writer = home.open_writer(&collection(), false).expect("writer");
    assert_eq!(writer.model_pin(), Some(&pin(MODEL, DIMENSION)));
    writer.pin_model(&pin(MODEL, DIMENSION)).expect("the same pin is fine");
    let other = pin("model-b", 384);
    let error = writer.pin_model(&other).expect_err("another model");
    assert!(matches!(error, Error::ModelMismatch { .. }), "{error}");
    // The message shows the user the way out: both models, and re-embedding.
    let message = error.to_string();
    for part in ["model-a", "model-b", "re-embed", "test/vectors"] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    let mut same_id_other_weights = pin(MODEL, DIMENSION);
    same_id_other_weights.checksum = knowhow_index::WeightsChecksum::Known("sha256-of-retrained".into());
    assert!(matches!(
        writer.pin_model(&same_id_other_weights),
        Err(Error::ModelMismatch { .. })
    ));
    writer.finish().expect("finish");

    let reader = home.open_reader(&collection()).expect("reader");
    assert_eq!(reader.model_pin().expect("pin"), Some(pin(MODEL, DIMENSION)));
    reader.check_model(&pin(MODEL, DIMENSION)).expect("the pinned model");
    let error = reader.check_model(&other).expect_err("another model");
    assert!(
        matches!(&error, Error::ModelMismatch { pinned, given, .. } if pinned.id == MODEL && given.id == "model-b"),
        "{error}"
    );
    let catalog = home.open_catalog(&collection()).expect("catalog");
    assert_eq!(catalog.model_pin().expect("pin"), Some(pin(MODEL, DIMENSION)));
}

#[test]
fn a_collection_with_unembedded_documents_cannot_be_pinned_by_ingesting() {
    let (_dir, home) = home();
    let mut writer = home.open_writer(&collection(), true).expect("writer");
    writer
        .apply(vec![source_update(
            "s",
            vec![update("d", "s", 1, 2, metadata(&[]), None)],
        )])
        .expect("lexical-only ingest");
    let error = writer
        .pin_model(&pin(MODEL, DIMENSION))
        .expect_err("unembedded documents");
    assert!(matches!(error, Error::Unembedded { documents: 1, .. }), "{error}");
    assert!(error.to_string().contains("re-embed them all with model-a"), "{error}");
    writer.finish().expect("finish");
    let reader = home.open_reader(&collection()).expect("reader");
    let query = unit_vector("q", DIMENSION);
    assert!(matches!(reader.dense(&query, 3, None), Err(Error::NoModel(_))));
    assert_consistent(&home);
}

#[test]
fn vectors_that_do_not_fit_the_pin_are_refused_and_nothing_is_written() {
    let (_dir, home) = home();
    let mut writer = pinned_writer(&home);
    let good = || update("good", "s", 1, 2, metadata(&[]), Some(MODEL));
    let mut short = update("short", "s", 1, 2, metadata(&[]), Some(MODEL));
    short.vectors.as_mut().expect("vectors")[1].pop();
    let mut infinite = update("inf", "s", 1, 2, metadata(&[]), Some(MODEL));
    infinite.vectors.as_mut().expect("vectors")[0][3] = f32::INFINITY;
    let mut missing_one = update("few", "s", 1, 3, metadata(&[]), Some(MODEL));
    missing_one.vectors.as_mut().expect("vectors").pop();
    let unembedded = update("none", "s", 1, 2, metadata(&[]), None);
    let cases = [
        (short, "chunk 1: 23 values, but model-a has 24"),
        (infinite, "chunk 0: value 3 is inf"),
        (missing_one, "2 vectors for 3 chunks"),
        (unembedded, "every chunk needs its vector"),
    ];
    for (bad, problem) in cases {
        let id = bad.document.id.clone();
        let error = writer
            .apply(vec![source_update("s", vec![good(), bad])])
            .expect_err("invalid vectors");
        assert!(
            matches!(&error, Error::InvalidVectors { document, problem: p } if *document == id && p.contains(problem)),
            "{error}"
        );
    }
    writer.finish().expect("finish");
    let catalog = home.open_catalog(&collection()).expect("catalog");
    assert!(
        catalog.documents().expect("documents").is_empty(),
        "a refused batch wrote nothing"
    );
    drop(catalog);

    let reader = home.open_reader(&collection()).expect("reader");
    let error = reader.dense(&[0.5; 3], 3, None).expect_err("wrong query dimension");
    assert!(
        matches!(&error, Error::InvalidQuery { problem, .. } if problem.contains("3 values") && problem.contains("24")),
        "{error}"
    );
    let mut nan = unit_vector("q", DIMENSION);
    nan[0] = f32::NAN;
    assert!(matches!(reader.dense(&nan, 3, None), Err(Error::InvalidQuery { .. })));

    let (_dir2, unpinned) = self::home();
    let mut writer = unpinned.open_writer(&collection(), true).expect("writer");
    let error = writer
        .apply(vec![source_update(
            "s",
            vec![update("d", "s", 1, 1, metadata(&[]), Some(MODEL))],
        )])
        .expect_err("vectors without a model");
    assert!(
        matches!(&error, Error::InvalidVectors { problem, .. } if problem.contains("no embedding model")),
        "{error}"
    );
}

#[test]
fn a_deleted_vector_file_is_rebuilt_from_the_store() {
    let (_dir, home) = home();
    let mut writer = pinned_writer(&home);
    let expected = ingest(&mut writer, 20, 1);
    writer.finish().expect("finish");
    std::fs::remove_dir_all(vectors_dir(&home)).expect("delete the vector file");
    let reader = home.open_reader(&collection()).expect("reader");
    let query = unit_vector("after deletion", DIMENSION);
    assert_eq!(
        keys(&reader.dense(&query, 6, None).expect("dense")),
        brute_force(&expected, &query, 6)
    );
    assert_consistent(&home);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn restore_dir(from: &Path, to: &Path) {
    std::fs::remove_dir_all(to).expect("remove");
    copy_dir(from, to);
}

#[test]
fn a_stale_vector_file_is_caught_up_from_the_log_or_rebuilt_when_the_log_is_trimmed() {
    let (dir, home) = home();
    let saved = dir.path().join("saved-vectors");
    let mut writer = pinned_writer(&home);
    ingest(&mut writer, 12, 1);
    writer.finish().expect("finish");
    copy_dir(&vectors_dir(&home), &saved);

    // Behind, with the log intact: the writer dropped without `finish`
    // (as in a crash) keeps the log; the old vector file is replayed.
    let mut writer = home.open_writer(&collection(), false).expect("writer");
    let expected = ingest(&mut writer, 12, 2);
    writer.flush().expect("flush");
    drop(writer);
    restore_dir(&saved, &vectors_dir(&home));
    let reader = home.open_reader(&collection()).expect("reader");
    let query = unit_vector("stale", DIMENSION);
    assert_eq!(
        keys(&reader.dense(&query, 5, None).expect("dense")),
        brute_force(&expected, &query, 5)
    );
    assert_consistent(&home);
    drop(reader);

    // Behind past the trimmed log: rebuilt from the store.
    let mut writer = home.open_writer(&collection(), false).expect("writer");
    let expected = ingest(&mut writer, 12, 3);
    writer.finish().expect("finish");
    restore_dir(&saved, &vectors_dir(&home));
    let reader = home.open_reader(&collection()).expect("reader");
    assert_eq!(
        keys(&reader.dense(&query, 5, None).expect("dense")),
        brute_force(&expected, &query, 5)
    );
    assert_consistent(&home);
}

#[test]
fn bytes_past_the_manifest_left_by_a_crash_are_cut_off() {
    let (_dir, home) = home();
    let mut writer = pinned_writer(&home);
    ingest(&mut writer, 6, 1);
    writer.finish().expect("finish");
    for name in generation_files(&vectors_dir(&home)) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(vectors_dir(&home).join(name))
            .expect("open");
        file.write_all(b"half a row\n{\"torn").expect("append garbage");
    }
    let mut writer = home.open_writer(&collection(), false).expect("writer");
    let expected = ingest(&mut writer, 8, 2);
    writer.finish().expect("finish");
    let reader = home.open_reader(&collection()).expect("reader");
    let query = unit_vector("after garbage", DIMENSION);
    assert_eq!(
        keys(&reader.dense(&query, 7, None).expect("dense")),
        brute_force(&expected, &query, 7)
    );
    assert_consistent(&home);
}

/// The score of the best hit for `probe`.
fn best_score(reader: &knowhow_index::Reader, probe: &[f32]) -> f32 {
    reader.dense(probe, 1, None).expect("dense")[0].score
}

#[test]
fn searches_see_the_last_durable_state_while_a_writer_appends() {
    let (_dir, home) = home();
    let mut writer = pinned_writer(&home);
    let first = ingest(&mut writer, 10, 1);
    writer.flush().expect("flush");
    // The writer holds the store: readers open without it.
    let reader = home.open_reader(&collection()).expect("reader during ingest");
    let (old, new) = (chunk_vector("d3", 1, 0, MODEL), chunk_vector("d3", 2, 0, MODEL));
    assert!((best_score(&reader, &old) - 1.0).abs() < 1e-5);
    ingest(&mut writer, 10, 2);
    // A reader opened now sees one whole state: version 1, or version 2 if
    // the writer's periodic commit ran; never a mix, never half a document.
    let during = home.open_reader(&collection()).expect("reader during ingest");
    let sees_old = (best_score(&during, &old) - 1.0).abs() < 1e-5;
    let sees_new = (best_score(&during, &new) - 1.0).abs() < 1e-5;
    assert!(sees_old != sees_new, "old visible: {sees_old}, new visible: {sees_new}");
    assert_eq!(during.dense(&old, 100, None).expect("dense").len(), first.len());
    // The first reader keeps its state until it refreshes.
    assert!((best_score(&reader, &old) - 1.0).abs() < 1e-5);
    writer.flush().expect("flush");
    reader.refresh().expect("refresh");
    assert!((best_score(&reader, &new) - 1.0).abs() < 1e-5);
    assert!(best_score(&reader, &old) < 0.99);
    writer.finish().expect("finish");
}

#[test]
fn catch_up_moves_a_reader_to_the_last_commit_only_when_there_is_one() {
    let (_dir, home) = home();
    let mut writer = pinned_writer(&home);
    ingest(&mut writer, 4, 1);
    writer.flush().expect("flush");
    let reader = home.open_reader(&collection()).expect("reader");
    let (old, new) = (chunk_vector("d3", 1, 0, MODEL), chunk_vector("d3", 2, 0, MODEL));
    assert!((best_score(&reader, &old) - 1.0).abs() < 1e-5);
    assert!(!reader.catch_up().expect("catch up"), "nothing was committed");
    ingest(&mut writer, 4, 2);
    writer.flush().expect("flush");
    assert!(
        (best_score(&reader, &old) - 1.0).abs() < 1e-5,
        "the view holds until caught up"
    );
    assert!(reader.catch_up().expect("catch up"));
    assert!((best_score(&reader, &new) - 1.0).abs() < 1e-5);
    let ranked = reader.rank("Document d3 paragraph", 1).expect("rank");
    let texts = reader.chunk_texts(&[ranked[0].id.clone()]).expect("texts");
    assert_eq!(
        common::version_of(texts[0].as_deref().expect("a text")),
        2,
        "the lexical view moved too"
    );
    assert!(!reader.catch_up().expect("catch up"));
    writer.finish().expect("finish");
}

#[test]
fn a_reembed_interrupted_midway_keeps_the_old_model_and_a_rerun_finishes() {
    let (_dir, home) = home();
    let new_model = pin("model-b", DIMENSION);
    let mut writer = pinned_writer(&home);
    ingest(&mut writer, 10, 1);
    writer.finish().expect("finish");

    // First run: stages about half the chunks, then dies (no finish).
    let mut writer = home.open_writer(&collection(), false).expect("writer");
    let progress = writer.start_reembed(&new_model).expect("start");
    assert_eq!(progress.staged, 0);
    let total = progress.chunks;
    let todo = writer.reembed_todo(total as usize / 2).expect("todo");
    let vectors: Vec<Vec<f32>> = todo
        .iter()
        .map(|c| chunk_vector(&c.id.document_id, common::version_of(&c.text), c.id.ordinal, "model-b"))
        .collect();
    assert_eq!(writer.stage_vectors(&todo, &vectors).expect("stage"), todo.len());
    let error = writer.finish_reembed().expect_err("incomplete");
    assert!(
        matches!(&error, Error::Reembed { problem, .. } if problem.contains("have no vector from model-b")),
        "{error}"
    );
    drop(writer);

    // Meanwhile: the old model is in force, for searching and ingesting.
    let reader = home.open_reader(&collection()).expect("reader");
    reader.check_model(&pin(MODEL, DIMENSION)).expect("still model-a");
    assert!(reader.check_model(&new_model).is_err());
    drop(reader);
    let mut writer = home.open_writer(&collection(), false).expect("writer");
    assert_eq!(writer.reembed_target().expect("target"), Some(new_model.clone()));
    // An ingest replaces d0 (staged or not) and adds d10, with model-a.
    writer
        .apply(vec![source_update(
            "s0",
            vec![
                update("d0", "s0", 7, 2, metadata(&[]), Some(MODEL)),
                update("d10", "s0", 7, 3, metadata(&[]), Some(MODEL)),
            ],
        )])
        .expect("ingest during a reembed");

    // The re-run picks up where the first stopped, including the new chunks.
    let progress = writer.start_reembed(&new_model).expect("resume");
    assert!(progress.staged > 0 && progress.staged < progress.chunks, "{progress:?}");
    let mut embedded = 0;
    loop {
        let todo = writer.reembed_todo(4).expect("todo");
        if todo.is_empty() {
            break;
        }
        let vectors: Vec<Vec<f32>> = todo
            .iter()
            .map(|c| chunk_vector(&c.id.document_id, common::version_of(&c.text), c.id.ordinal, "model-b"))
            .collect();
        embedded += writer.stage_vectors(&todo, &vectors).expect("stage");
    }
    assert_eq!(embedded as u64, progress.chunks - progress.staged);
    writer.finish_reembed().expect("finish reembed");
    assert_eq!(writer.model_pin(), Some(&new_model));
    assert_eq!(writer.reembed_target().expect("target"), None);
    writer.finish().expect("finish");

    let reader = home.open_reader(&collection()).expect("reader");
    reader.check_model(&new_model).expect("now model-b");
    assert!(reader.check_model(&pin(MODEL, DIMENSION)).is_err());
    for (id, version, chunks) in [("d0", 7, 2), ("d10", 7, 3), ("d5", 1, 2)] {
        for o in 0..chunks {
            let top = &reader
                .dense(&chunk_vector(id, version, o, "model-b"), 1, None)
                .expect("dense")[0];
            assert_eq!(top.id, ChunkId::new(id, o));
            assert!((top.score - 1.0).abs() < 1e-5);
        }
    }
    assert_consistent(&home);
}

#[test]
fn a_reembed_gives_an_unembedded_collection_its_first_model() {
    let (_dir, home) = home();
    let mut writer = home.open_writer(&collection(), true).expect("writer");
    writer
        .apply(vec![source_update(
            "s",
            vec![
                update("a", "s", 1, 3, metadata(&[]), None),
                update("b", "s", 1, 2, metadata(&[]), None),
            ],
        )])
        .expect("lexical-only ingest");
    assert!(writer.reembed_todo(10).is_err(), "no reembed started");
    writer.start_reembed(&pin(MODEL, DIMENSION)).expect("start");
    let todo = writer.reembed_todo(100).expect("todo");
    assert_eq!(todo.len(), 5);
    let vectors: Vec<Vec<f32>> = todo
        .iter()
        .map(|c| chunk_vector(&c.id.document_id, 1, c.id.ordinal, MODEL))
        .collect();
    let mut wrong = vectors.clone();
    wrong[2].push(0.0);
    assert!(matches!(
        writer.stage_vectors(&todo, &wrong),
        Err(Error::InvalidVectors { .. })
    ));
    writer.stage_vectors(&todo, &vectors).expect("stage");
    assert!(writer.reembed_todo(100).expect("todo").is_empty());
    writer.finish_reembed().expect("finish reembed");
    writer.finish().expect("finish");
    let reader = home.open_reader(&collection()).expect("reader");
    let top = &reader.dense(&chunk_vector("a", 1, 2, MODEL), 1, None).expect("dense")[0];
    assert_eq!(top.id, ChunkId::new("a", 2));
    assert_consistent(&home);
}

#[test]
fn an_unchanged_document_needs_no_vectors_again() {
    let (_dir, home) = home();
    let mut writer = pinned_writer(&home);
    let first = update("d", "s", 1, 3, metadata(&[]), Some(MODEL));
    let hash = first.document.hash.clone();
    writer.apply(vec![source_update("s", vec![first])]).expect("apply");
    let stored = writer.stored_document("d").expect("read").expect("stored");
    assert_eq!((stored.document.hash, stored.chunk_count), (hash, 3));
    let again = update("d", "s", 1, 3, metadata(&[]), None);
    let applied = writer.apply(vec![source_update("s", vec![again])]).expect("unchanged");
    assert_eq!(applied[0].unchanged, 1);
    let changed = update("d", "s", 2, 3, metadata(&[]), None);
    assert!(matches!(
        writer.apply(vec![source_update("s", vec![changed])]),
        Err(Error::InvalidVectors { .. })
    ));
    writer.finish().expect("finish");
    let reader = home.open_reader(&collection()).expect("reader");
    let top = &reader.dense(&chunk_vector("d", 1, 2, MODEL), 1, None).expect("dense")[0];
    assert_eq!(top.id, ChunkId::new("d", 2));
    assert_consistent(&home);
}
