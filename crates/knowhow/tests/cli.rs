//! End-to-end tests of the `knowhow` binary on real files.

mod common;

use common::{stderr, stdout, write, Knowhow};
use knowhow_testkit::env::shared_data;
use serde_json::Value;

fn summary(lines: &[Value]) -> &Value {
    let last = lines.last().expect("ingest printed nothing");
    assert_eq!(last["type"], "summary", "{last}");
    last
}

fn file_status<'a>(lines: &'a [Value], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l["type"] == "file" && l["source"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no line for {name} in {lines:?}"))["status"]
        .as_str()
        .unwrap()
}

#[test]
fn ingest_is_incremental_replaces_changed_files_and_prunes_deleted_ones() {
    let kh = Knowhow::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        &root.join("guide.md"),
        "# Guide\n\nThe frobnicator needs calibration weekly.\n\n## Safety\n\nWear goggles near the frobnicator.\n",
    );
    write(
        &root.join("notes/policy.txt"),
        "Expense reports are due on the fifth business day.\n",
    );
    write(&root.join("rows.jsonl"), "{\"id\":\"r1\",\"title\":\"Leave\",\"text\":\"Employees get twenty days of leave.\"}\n{\"id\":\"r2\",\"text\":\"Travel must be booked through the portal.\"}\n");
    let root_str = root.to_str().unwrap();

    let (lines, out) = kh.ingest(&[root_str]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&lines);
    assert_eq!(s["documents_added"], 4, "{s}");
    assert_eq!(file_status(&lines, "guide.md"), "added");

    // Nothing changed: no work.
    let (lines, _) = kh.ingest(&[root_str]);
    let s = summary(&lines);
    assert_eq!(
        (s["documents_added"].as_u64(), s["documents_updated"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(s["files_unchanged"], 3);

    // A changed file replaces its old chunks; a changed row only that row.
    write(
        &root.join("guide.md"),
        "# Guide\n\nThe frobnicator needs calibration monthly.\n",
    );
    write(&root.join("rows.jsonl"), "{\"id\":\"r1\",\"title\":\"Leave\",\"text\":\"Employees get twenty days of leave.\"}\n{\"id\":\"r2\",\"text\":\"Travel is booked by the travel desk.\"}\n");
    let (lines, _) = kh.ingest(&[root_str]);
    let s = summary(&lines);
    assert_eq!(s["documents_updated"], 2, "{s}");
    assert_eq!(s["documents_unchanged"], 1, "{s}");
    let hits = kh.json(&["search", "goggles"]);
    assert_eq!(
        hits["hits"].as_array().unwrap().len(),
        0,
        "old chunk still searchable: {hits}"
    );
    let hits = kh.json(&["search", "calibration monthly"]);
    assert_eq!(hits["hits"][0]["title"], "Guide");

    // A deleted file's documents go with --prune, and only then.
    std::fs::remove_file(root.join("notes/policy.txt")).unwrap();
    kh.ingest(&[root_str]);
    assert_eq!(kh.json(&["docs", "list"])["documents"].as_array().unwrap().len(), 4);
    let (lines, _) = kh.ingest(&[root_str, "--prune"]);
    assert_eq!(summary(&lines)["documents_removed"], 1);
    let listed = kh.json(&["docs", "list"]);
    assert_eq!(listed["documents"].as_array().unwrap().len(), 3);
    assert!(kh.json(&["docs", "check"])["problems"].as_array().unwrap().is_empty());
}

#[test]
fn search_returns_ranked_chunks_with_heading_and_marked_terms() {
    let kh = Knowhow::new();
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("manual.md"), "# Manual\n\nIntro text about nothing.\n\n## Installing on Linux\n\nRun the installer as root, then reboot the server.\n");
    write(
        &dir.path().join("other.md"),
        "# Other\n\nA server room needs cooling.\n",
    );
    // Offline with no model anywhere: ingest still works, lexically, and
    // says so once.
    let out = kh.run(&["ingest", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let notes = common::stderr(&out).matches("working lexically").count();
    assert_eq!(notes, 1, "{}", common::stderr(&out));
    let result = kh.json(&["search", "reboot the server", "-k", "5"]);
    assert_eq!(result["mode"], "lexical");
    let hits = result["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["title"], "Manual");
    assert_eq!(
        hits[0]["heading_path"],
        serde_json::json!(["Manual", "Installing on Linux"])
    );
    assert!(hits[0]["score"].as_f64() > hits[1]["score"].as_f64());
    let snippet = hits[0]["snippet"].as_str().unwrap();
    let marked: Vec<&str> = hits[0]["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &snippet[r[0].as_u64().unwrap() as usize..r[1].as_u64().unwrap() as usize])
        .collect();
    assert!(marked.contains(&"reboot") && marked.contains(&"server"), "{marked:?}");
    // The human form marks terms too and names heading and source.
    let text = kh.ok(&["search", "reboot"]);
    assert!(text.contains("**reboot**"), "{text}");
    assert!(text.contains("Manual › Installing on Linux"), "{text}");
}

#[test]
fn an_ingest_whose_filters_left_nothing_says_which_filter_did_it() {
    let kh = Knowhow::new();
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("notes.md"), "# Notes\n\nNot a text file.\n");
    write(&dir.path().join(".draft.md"), "# Draft\n");
    let out = kh.ok(&["ingest", dir.path().to_str().unwrap(), "--glob", "*.txt"]);
    assert!(out.contains("no file to ingest"), "{out}");
    assert!(out.contains("2 files there, 1 are hidden"), "{out}");
    assert!(out.contains("1 do not match --glob"), "{out}");
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly_with_success() {
    use std::io::Read as _;
    let kh = Knowhow::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.md");
    let paragraphs: Vec<String> = (0..4000)
        .map(|i| format!("Paragraph {i} about refunds and renewals."))
        .collect();
    write(&file, &format!("# Long\n\n{}\n", paragraphs.join("\n\n")));
    kh.ok(&["-c", "team", "ingest", file.to_str().unwrap()]);
    // `knowhow docs show ... --json | head -c 100`: far more than a pipe holds, and the reader leaves early.
    let mut child = kh
        .command()
        .args(["--json", "-c", "team", "docs", "show", file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    let errors = stderr(&out);
    assert!(out.status.success(), "{:?}: {errors}", out.status);
    assert!(errors.is_empty(), "nothing on stderr: {errors}");
    assert!(String::from_utf8_lossy(&head).starts_with('{'));
}

#[test]
fn docs_show_rm_and_collections_manage_what_is_stored() {
    let kh = Knowhow::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.md");
    write(&file, "# Alpha\n\nFirst document text.\n");
    kh.ok(&["-c", "team", "ingest", file.to_str().unwrap()]);
    let shown = kh.json(&["-c", "team", "docs", "show", file.to_str().unwrap()]);
    assert_eq!(shown["title"], "Alpha");
    let chunk = &shown["chunks"][0];
    assert_eq!(chunk["text"], "# Alpha\n\nFirst document text.");
    assert_eq!(
        (chunk["char_start"].as_u64(), chunk["char_end"].as_u64()),
        (Some(0), Some(29))
    );

    // Namespaces are separate: the same collection name elsewhere is empty.
    let other = kh.run(&["-n", "other", "-c", "team", "docs", "list"]);
    assert!(!other.status.success());
    assert!(stderr(&other).contains("does not exist"), "{}", stderr(&other));

    let id = shown["id"].as_str().unwrap();
    kh.ok(&["-c", "team", "docs", "rm", id]);
    assert!(kh.json(&["-c", "team", "docs", "list"])["documents"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(kh.json(&["-c", "team", "search", "document"])["hits"]
        .as_array()
        .unwrap()
        .is_empty());
    let missing = kh.run(&["-c", "team", "docs", "rm", "nope"]);
    assert_eq!(missing.status.code(), Some(2));

    kh.ok(&["collections", "create", "empty"]);
    let listed = kh.json(&["collections", "list"]);
    let names: Vec<&str> = listed["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["collection"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["empty", "team"]);
    assert!(
        !kh.run(&["collections", "drop", "team"]).status.success(),
        "drop without --yes"
    );
    kh.ok(&["collections", "drop", "team", "--yes"]);
    assert_eq!(
        kh.json(&["collections", "list"])["collections"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn one_bad_file_never_stops_the_batch_and_every_failure_is_listed() {
    let kh = Knowhow::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("good.md"), "# Good\n\nfine\n");
    std::fs::write(root.join("latin1.txt"), b"caf\xe9 au lait").unwrap();
    write(&root.join("broken.pdf"), "%PDF-1.4 this is not really a pdf");
    write(
        &root.join("rows.jsonl"),
        "{\"id\":\"1\",\"text\":\"ok\"}\nnot json\n{\"id\":\"3\"}\n",
    );
    write(&root.join("big.txt"), &"x ".repeat(600));
    let (lines, out) = kh.ingest(&[root.to_str().unwrap(), "--max-file-size", "1000"]);
    assert_eq!(out.status.code(), Some(2), "failures give exit code 2");
    let s = summary(&lines);
    assert_eq!(s["documents_added"], 2, "{s}");
    let failures = s["failures"].as_array().unwrap();
    let find = |name: &str| {
        failures
            .iter()
            .find(|f| f["source"].as_str().unwrap().ends_with(name))
            .cloned()
    };
    assert!(find("latin1.txt").unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("not UTF-8"));
    assert!(find("broken.pdf").is_some());
    let rows: Vec<u64> = failures.iter().filter_map(|f| f["line"].as_u64()).collect();
    assert_eq!(rows, [2, 3]);
    assert!(s["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["path"].as_str().unwrap().ends_with("big.txt")));

    // The human summary lists them with file:line.
    write(&root.join("rows.jsonl"), "{\"id\":\"1\",\"text\":\"ok\"}\nnot json\n");
    let out = kh.run(&["ingest", root.to_str().unwrap()]);
    assert!(stdout(&out).contains("rows.jsonl:2: invalid JSON"), "{}", stdout(&out));
    // --encoding makes the latin-1 file loadable.
    let out = kh.run(&[
        "ingest",
        root.join("latin1.txt").to_str().unwrap(),
        "--encoding",
        "latin1",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn every_real_document_loads_or_fails_with_a_reason() {
    let Some(data) = shared_data("every_real_document_loads_or_fails_with_a_reason") else {
        return;
    };
    let kh = Knowhow::new();
    let (lines, _) = kh.ingest(&[data.join("docs").to_str().unwrap()]);
    let s = summary(&lines);
    let failures = s["failures"].as_array().unwrap();
    for failure in failures {
        eprintln!("{}: {}", failure["source"], failure["error"]);
        assert!(
            failure["error"].as_str().unwrap().len() > 20,
            "unclear reason: {failure}"
        );
    }
    let failed = |name: &str| failures.iter().any(|f| f["source"].as_str().unwrap().ends_with(name));
    assert!(
        failed("zen_of_python_corrupted.pdf"),
        "the corrupted PDF must fail: {failures:?}"
    );
    for must_load in [
        "test.docx",
        "hdr-header-footer.docx",
        "encryption_base.pdf",
        "simple1.pdf",
    ] {
        assert!(!failed(must_load), "{must_load} failed: {failures:?}");
    }
    let documents = kh.json(&["docs", "list"])["documents"].as_array().unwrap().clone();
    let files = std::fs::read_dir(data.join("docs/pdf")).unwrap().count()
        + std::fs::read_dir(data.join("docs/docx")).unwrap().count();
    assert!(
        documents.len() > 10 && documents.len() < files + 10,
        "{} documents",
        documents.len()
    );
    for doc in &documents {
        assert!(doc["chunks"].as_u64().unwrap() > 0, "empty document {doc}");
    }
    assert!(kh.json(&["docs", "check"])["problems"].as_array().unwrap().is_empty());
}

#[test]
fn eval_beir_computes_metrics_on_a_small_folder_and_caches_the_corpus() {
    let kh = Knowhow::new();
    let dir = tempfile::tempdir().unwrap();
    let beir = dir.path().join("tiny");
    write(
        &beir.join("corpus.jsonl"),
        concat!(
            "{\"_id\":\"d1\",\"title\":\"Aspirin\",\"text\":\"Aspirin lowers fever and pain.\"}\n",
            "{\"_id\":\"d2\",\"title\":\"Statins\",\"text\":\"Statins lower cholesterol.\"}\n",
            "{\"_id\":\"d3\",\"title\":\"Sleep\",\"text\":\"Sleep improves memory.\"}\n",
        ),
    );
    write(&beir.join("queries.jsonl"), "{\"_id\":\"q1\",\"text\":\"does aspirin reduce fever\"}\n{\"_id\":\"q2\",\"text\":\"cholesterol drugs\"}\n{\"_id\":\"q3\",\"text\":\"unjudged\"}\n");
    write(
        &beir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n",
    );
    let scores = kh.json(&["eval", "beir", beir.to_str().unwrap()]);
    let mut keys: Vec<&String> = scores.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["mrr@10", "ndcg@10", "queries", "recall@100"]);
    assert_eq!(scores["queries"], 2);
    // q1 finds d1 first (1.0); q2's relevant d3 shares no term (0.0).
    assert!((scores["ndcg@10"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{scores}");
    assert!((scores["recall@100"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{scores}");
    let again = kh.json(&["eval", "beir", beir.to_str().unwrap(), "--timings"]);
    assert_eq!(
        again["timings"]["ingested_documents"], 0,
        "second run must skip ingestion"
    );
    assert_eq!(again["ndcg@10"], scores["ndcg@10"]);
}
