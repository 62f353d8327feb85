use std::fs;

use knowhow_core::CollectionRef;
use knowhow_index::Home;

use super::*;

struct Run {
    summary: Summary,
    reports: Vec<FileReport>,
    batches: usize,
}

fn collection() -> CollectionRef {
    CollectionRef::new("test", "pipeline").unwrap()
}

fn run(home: &Home, paths: &[PathBuf], options: &IngestOptions) -> Run {
    let writer = home.open_writer(&collection(), true).unwrap();
    let mut reports = Vec::new();
    let mut batches = 0;
    let summary = ingest(writer, None, paths, options, &mut |event| match event {
        Event::File(report) => reports.push(report.clone()),
        Event::Batch { .. } => batches += 1,
        _ => {}
    })
    .unwrap();
    reports.sort_by(|a, b| a.source.cmp(&b.source));
    Run {
        summary,
        reports,
        batches,
    }
}

fn statuses(run: &Run) -> Vec<(String, FileStatus)> {
    run.reports
        .iter()
        .map(|r| {
            let name = Path::new(&r.source).file_name().unwrap().to_string_lossy().into_owned();
            (name, r.status)
        })
        .collect()
}

#[test]
fn reingest_reads_only_what_changed_and_a_bad_file_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    fs::create_dir(&docs).unwrap();
    fs::write(docs.join("a.md"), "# Refunds\n\nAnnual plans are refunded pro rata.\n").unwrap();
    fs::write(docs.join("b.txt"), "Support answers within one business day.\n").unwrap();
    fs::write(docs.join("c.pdf"), "this is not a PDF").unwrap();
    let home = Home::new(dir.path().join("home"));
    let options = IngestOptions::default();

    let first = run(&home, std::slice::from_ref(&docs), &options);
    assert_eq!(
        statuses(&first),
        [
            ("a.md".into(), FileStatus::Added),
            ("b.txt".into(), FileStatus::Added),
            ("c.pdf".into(), FileStatus::Failed)
        ]
    );
    assert_eq!((first.summary.files, first.summary.documents_added), (3, 2));
    assert!(first.summary.chunks_written >= 2);
    assert_eq!(first.summary.failures.len(), 1);
    assert!(first.summary.failures[0].source.ends_with("c.pdf"));
    assert!(first.reports[2].error.is_some());
    assert_eq!(first.batches, 1);
    let reader = home.open_reader(&collection()).unwrap();
    assert_eq!(reader.rank("refunded annual", 5).unwrap().len(), 1);

    // Untouched files are not even read: no document counts.
    let second = run(&home, std::slice::from_ref(&docs), &options);
    assert_eq!(second.reports[0].status, FileStatus::Unchanged);
    assert_eq!(second.reports[0].counts, None);
    assert_eq!(second.summary.files_unchanged, 2);

    // A changed file is updated, the other stays unchanged.
    fs::write(docs.join("b.txt"), "Support answers within one hour.\n").unwrap();
    let third = run(&home, std::slice::from_ref(&docs), &options);
    assert_eq!(third.reports[1].status, FileStatus::Updated);
    assert_eq!(third.reports[1].counts.unwrap().updated, 1);
    assert_eq!(third.summary.documents_updated, 1);

    // Pruning removes the documents of a deleted file.
    fs::remove_file(docs.join("a.md")).unwrap();
    let pruned = IngestOptions {
        prune: true,
        ..IngestOptions::default()
    };
    let fourth = run(&home, &[docs], &pruned);
    assert!(fourth
        .reports
        .iter()
        .any(|r| r.status == FileStatus::Pruned && r.source.ends_with("a.md")));
    assert_eq!(fourth.summary.documents_removed, 1);
    let reader = home.open_reader(&collection()).unwrap();
    assert!(reader.rank("refunded annual", 5).unwrap().is_empty());
}

#[test]
fn bad_rows_are_reported_by_line_and_the_good_rows_go_in() {
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("tickets.jsonl");
    fs::write(
        &rows,
        "{\"id\":\"t1\",\"text\":\"printer jams on tray two\"}\nnot json\n{\"id\":\"t2\",\"text\":\"vpn drops hourly\"}\n",
    )
    .unwrap();
    let home = Home::new(dir.path().join("home"));
    let result = run(&home, &[rows], &IngestOptions::default());
    assert_eq!(result.summary.documents_added, 2);
    assert_eq!(result.summary.failures.len(), 1);
    assert_eq!(result.summary.failures[0].line, Some(2));
    let errors = result.reports[0].errors.as_ref().unwrap();
    assert_eq!(errors[0].line, Some(2));
    // The JSON acknowledgement is the CLI's and the server's wire shape.
    let value = serde_json::to_value(&result.reports[0]).unwrap();
    assert_eq!(value["status"], "added");
    assert_eq!(value["added"], 2);
    assert_eq!(value["errors"][0]["line"], 2);
}

/// Hostile and malformed files in one folder, as a user's folder holds them: 100,000 nested `<div>`s (which
/// overflowed a worker's stack and aborted the whole run), a CSV row whose quote never closes (which silently
/// swallowed the rows after it), an empty Markdown file (which became a document of no chunks). Each fails alone,
/// saying which bound or row, and everything else goes in.
#[test]
fn hostile_files_fail_alone_and_everything_else_goes_in() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    fs::create_dir(&docs).unwrap();
    let deep = format!(
        "<html><body>{}abyss{}",
        "<div>".repeat(100_000),
        "</div>".repeat(100_000)
    );
    fs::write(docs.join("deep.html"), deep).unwrap();
    fs::write(
        docs.join("tickets.csv"),
        "id,text\nt1,printer jams on tray two\nt2,\"vpn drops hourly\nt3,laptop battery swells\nt4,monitor flickers\n",
    )
    .unwrap();
    fs::write(docs.join("empty.md"), "").unwrap();
    fs::write(docs.join("blank.txt"), " \n\n").unwrap();
    fs::write(
        docs.join("guide.md"),
        "# Refunds\n\nAnnual plans are refunded pro rata.\n",
    )
    .unwrap();
    fs::write(
        docs.join("page.html"),
        "<html><head><title>Support</title></head><body><p>Support answers within one business day.</p></body></html>",
    )
    .unwrap();
    let home = Home::new(dir.path().join("home"));

    let result = run(&home, &[docs], &IngestOptions::default());
    assert_eq!(
        statuses(&result),
        [
            ("blank.txt".into(), FileStatus::Failed),
            ("deep.html".into(), FileStatus::Failed),
            ("empty.md".into(), FileStatus::Failed),
            ("guide.md".into(), FileStatus::Added),
            ("page.html".into(), FileStatus::Added),
            ("tickets.csv".into(), FileStatus::Added),
        ]
    );
    // guide.md, page.html and the three good rows.
    assert_eq!(result.summary.documents_added, 5);
    let failure = |name: &str| {
        let found = result.summary.failures.iter().find(|f| f.source.ends_with(name));
        found.unwrap_or_else(|| panic!("no failure for {name}: {:?}", result.summary.failures))
    };
    let bound = format!("more than {} levels deep", knowhow_ingest::load::MAX_NESTING_DEPTH);
    assert!(
        failure("deep.html").error.contains(&bound),
        "{}",
        failure("deep.html").error
    );
    let quote = failure("tickets.csv");
    assert_eq!(quote.line, Some(3));
    assert!(
        quote.error.starts_with("a quote opened on line 3 is never closed")
            && quote.error.contains("would swallow the 2 rows after it"),
        "{}",
        quote.error
    );
    assert_eq!(
        failure("empty.md").error,
        "has no text: the file is empty; there is nothing to index"
    );
    assert!(failure("blank.txt").error.starts_with("has no text"));
    let reader = home.open_reader(&collection()).unwrap();
    for found in [
        "battery swells",
        "monitor flickers",
        "printer jams",
        "refunded pro rata",
        "business day",
    ] {
        assert_eq!(reader.rank(found, 5).unwrap().len(), 1, "{found}");
    }
    assert!(reader.rank("abyss", 5).unwrap().is_empty());
}

#[test]
fn settings_that_change_the_chunks_change_the_fingerprint() {
    let options = IngestOptions::default();
    let chunk = ChunkOptions::new(512, 64).unwrap();
    let base = settings_fingerprint(&options, chunk, None);
    assert_eq!(base, settings_fingerprint(&options, chunk, None));
    assert_ne!(base, settings_fingerprint(&options, chunk, Some("all-MiniLM-L6-v2")));
    assert_ne!(
        base,
        settings_fingerprint(&options, ChunkOptions::new(256, 64).unwrap(), None)
    );
    let mut other_field = options.clone();
    other_field.load.row_fields.text = Some("body".into());
    assert_ne!(base, settings_fingerprint(&other_field, chunk, None));
}
