//! Kill -9 at random moments while documents with vectors are written: no
//! acknowledged document is lost, none is left half written (chunks without
//! vectors, vectors of another version), the dense scan finds every one, and
//! a re-run completes.
//!
//! The test re-executes its own binary as the writer: with
//! `KNOWHOW_VECTORS_CRASH_HOME` set, the test body runs the writer instead,
//! printing `ack VERSION SOURCE...` once each batch is acknowledged
//! (`Writer::apply` returned). Set `KNOWHOW_CRASH_SEED` to replay a run.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{chunk_vector, collection, metadata, pin, source_update, update, version_of, DIMENSION};
use knowhow_core::ChunkId;
use knowhow_index::Home;

const HOME_ENV: &str = "KNOWHOW_VECTORS_CRASH_HOME";
const VERSION_ENV: &str = "KNOWHOW_VECTORS_CRASH_VERSION";
const TEST_NAME: &str = "kill_9_loses_no_acknowledged_document_or_vector";
const MODEL: &str = "crash-model";
const SOURCES: u32 = 24;
const SOURCES_PER_BATCH: u32 = 2;
const KILLS: u32 = 24;

/// What version `version` of source `j` holds: document `a` always, `b` in
/// most versions (so versions also remove and re-add documents), each with
/// 1 to 4 chunks.
fn expected_documents(j: u32, version: u32) -> Vec<(String, u32)> {
    let mut docs = vec![(format!("s{j}-a"), 1 + (j + version) % 4)];
    if (j + version) % 5 != 4 {
        docs.push((format!("s{j}-b"), 1 + (j * 7 + version) % 4));
    }
    docs
}

fn source_name(j: u32) -> String {
    format!("src{j}")
}

/// The writer: rewrites every source at `version`, a batch at a time.
fn run_writer(home: &Path, version: u32) {
    let home = Home::new(home);
    let mut writer = home.open_writer(&collection(), true).expect("open writer");
    writer.pin_model(&pin(MODEL, DIMENSION)).expect("pin");
    for (batch, first) in (0..SOURCES).step_by(SOURCES_PER_BATCH as usize).enumerate() {
        let sources: Vec<u32> = (first..first + SOURCES_PER_BATCH).collect();
        let updates = sources
            .iter()
            .map(|&j| {
                let documents = expected_documents(j, version)
                    .into_iter()
                    .map(|(id, chunks)| {
                        let meta = metadata(&[("source", serde_json::json!(j))]);
                        update(&id, &source_name(j), version, chunks, meta, Some(MODEL))
                    })
                    .collect();
                source_update(&source_name(j), documents)
            })
            .collect();
        writer.apply(updates).expect("apply");
        let names: Vec<String> = sources.iter().map(|j| j.to_string()).collect();
        println!("ack {version} {}", names.join(" "));
        // Commit the derived indexes now and then, so kills also land in
        // vector file commits and compactions, not only in store commits.
        if batch % 3 == 2 {
            writer.flush().expect("flush");
        }
    }
    writer.finish().expect("finish");
    println!("done {version}");
}

/// When to kill a writer: once it has printed `lines` lines, `delay` later.
/// Counting lines rather than time keeps kills mid-run however loaded the
/// machine is.
struct Kill {
    lines: usize,
    delay: Duration,
}

/// Runs the writer as a child, killing it as `kill` says if given. Returns
/// the acknowledged (version, source) pairs and whether it finished.
fn run_child(home: &Path, version: u32, kill: Option<Kill>) -> (Vec<(u32, u32)>, bool) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(HOME_ENV, home)
        .env(VERSION_ENV, version.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            // A line cut by the kill has no newline: it was not acknowledged.
            while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.ends_with('\n') {
                    lines.lock().expect("lines").push(line.trim_end().to_string());
                }
                line.clear();
            }
        })
    };
    let killed = kill.is_some();
    if let Some(kill) = kill {
        while lines.lock().expect("lines").len() < kill.lines && child.try_wait().expect("writer status").is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(kill.delay);
        // SIGKILL on Unix: no destructor, no flush, no finish.
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for writer");
    reader.join().expect("stdout reader");
    if !killed {
        assert!(status.success(), "the writer failed: {status}");
    }
    let lines = lines.lock().expect("lines");
    let mut acked = Vec::new();
    let mut done = false;
    for line in lines.iter() {
        let mut words = line.split(' ');
        match words.next() {
            Some("ack") => {
                let v: u32 = words.next().and_then(|w| w.parse().ok()).expect("a version");
                acked.extend(words.map(|w| (v, w.parse::<u32>().expect("a source number"))));
            }
            Some("done") => done = true,
            _ => {}
        }
    }
    (acked, done)
}

/// Checks the collection against the acknowledged versions: every
/// acknowledged source holds a whole version at least as new, with every
/// chunk's vector, each found by the dense scan as its own top hit.
fn verify(home: &Path, acked: &HashMap<u32, u32>, newest_started: u32) {
    let home = Home::new(home);
    // Opening the reader catches the derived indexes up (no writer runs).
    let reader = home.open_reader(&collection()).expect("reader");
    let catalog = home.open_catalog(&collection()).expect("catalog");
    let report = catalog.check().expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let sources: BTreeMap<String, Vec<String>> = catalog
        .sources()
        .expect("sources")
        .into_iter()
        .map(|(name, record)| (name, record.document_ids))
        .collect();
    let mut documents = 0;
    for j in 0..SOURCES {
        let Some(ids) = sources.get(&source_name(j)) else {
            assert!(!acked.contains_key(&j), "acknowledged source {j} is gone");
            continue;
        };
        let first = catalog.document(&ids[0]).expect("read").expect("listed document");
        let version = version_of(&first.1[0].text);
        if let Some(&acked_version) = acked.get(&j) {
            assert!(
                (acked_version..=newest_started).contains(&version),
                "source {j} holds version {version}, acknowledged {acked_version}"
            );
        }
        let expected = expected_documents(j, version);
        let expected_ids: Vec<&String> = expected.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.iter().collect::<Vec<_>>(), expected_ids, "documents of source {j}");
        for (id, chunk_count) in &expected {
            let (stored, chunks) = catalog.document(id).expect("read").expect("document of its source");
            assert_eq!(stored.chunk_count, *chunk_count, "{id}");
            assert_eq!(chunks.len() as u32, *chunk_count, "{id} has all its chunks");
            let vectors = catalog.vectors(id).expect("vectors");
            assert_eq!(vectors.len() as u32, *chunk_count, "{id} has all its vectors");
            for (chunk, (ordinal, vector)) in chunks.iter().zip(&vectors) {
                assert_eq!(version_of(&chunk.text), version, "{id} is one version throughout");
                assert_eq!(chunk.id.ordinal, *ordinal);
                assert_eq!(
                    *vector,
                    chunk_vector(id, version, *ordinal, MODEL),
                    "{id} chunk {ordinal}"
                );
                let top = &reader.dense(vector, 1, None).expect("dense")[0];
                assert_eq!(top.id, ChunkId::new(id, *ordinal));
                assert!((top.score - 1.0).abs() < 1e-5);
            }
            documents += 1;
        }
    }
    assert_eq!(
        catalog.documents().expect("documents").len(),
        documents,
        "no stray documents"
    );
}

#[test]
fn kill_9_loses_no_acknowledged_document_or_vector() {
    if let Ok(home) = std::env::var(HOME_ENV) {
        let version = std::env::var(VERSION_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .expect("a version for the writer");
        run_writer(Path::new(&home), version);
        return;
    }
    let seed = std::env::var("KNOWHOW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("vectors crash test seed {seed} (replay with KNOWHOW_CRASH_SEED={seed})");
    let mut state = seed | 1;
    let mut random = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below.max(1)
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let mut acked: HashMap<u32, u32> = HashMap::new();
    let started = Instant::now();
    let (first, done) = run_child(home, 1, None);
    // The lines a whole run prints: "running 1 test", the acks, "done".
    let batches = first.len() as u64 / u64::from(SOURCES_PER_BATCH);
    let batch_time = started.elapsed() / (batches as u32 + 1);
    assert!(done, "an uninterrupted run finishes");
    acked.extend(first.into_iter().map(|(v, j)| (j, v)));
    verify(home, &acked, 1);

    let mut finished_runs = 0;
    let mut acked_per_run = Vec::new();
    for round in 0..KILLS {
        let version = round + 2;
        // Anywhere from start-up (catching up after the last kill) to the
        // final commit: after a random number of lines, within a batch.
        let kill = Kill {
            lines: random(batches + 2) as usize,
            delay: Duration::from_micros(random(batch_time.as_micros() as u64 + 1)),
        };
        let (newly, done) = run_child(home, version, Some(kill));
        finished_runs += u32::from(done);
        acked_per_run.push(newly.len());
        acked.extend(newly.into_iter().map(|(v, j)| (j, v)));
        verify(home, &acked, version);
    }
    eprintln!("{KILLS} kills, {finished_runs} runs finished before their kill; sources acknowledged per run: {acked_per_run:?}");
    assert!(finished_runs < KILLS / 2, "most kills must land mid-run");

    let last = KILLS + 2;
    let (newly, done) = run_child(home, last, None);
    assert!(done, "a re-run after the kills completes");
    acked.extend(newly.into_iter().map(|(v, j)| (j, v)));
    assert!(acked.values().all(|&v| v == last));
    verify(home, &acked, last);
}
