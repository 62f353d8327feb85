//! The fine-tuning demonstration, from scratch (no pretrained LLM is reachable here): pre-train a tiny Llama on
//! single-digit addition until it answers plainly (`3+4=` → `seven`), then LoRA-tune it, base frozen, to answer as
//! JSON (`{"answer": "seven"}`) from 70 of the 100 sums, and evaluate on 20 held-out sums with `evaluate::compare`.
//!
//! What must hold: the adapter is far above the base on JSON-valid and schema-valid rate; its answers are still
//! correct in value (exact match of the JSON); the base without the adapter still answers plainly and correctly.
//! Also measured and printed: parameters trained vs total, and peak RSS of LoRA training vs full training.

use std::path::Path;
use std::time::Instant;

use knowhow_testkit_tiny::{self as tiny, TinyOptions};
use knowhow_tune::base::Base;
use knowhow_tune::evaluate::{compare, evaluate_model, Checks, EvalOptions};
use knowhow_tune::pipeline::{tune, TuneOptions};
use knowhow_tune::registry::Registry;
use knowhow_tune::schedule::Warmup;

/// Peak resident memory of this process since the last reset, in KiB (Linux `VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0), so the next reading is the peak of what follows.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn lora_teaches_a_pretrained_tiny_model_json_answers_without_breaking_it() {
    let work = tempfile::tempdir().unwrap();
    let base_dir = work.path().join("tiny-base");
    let pairs = tiny::addition_pairs();
    // The base's knowledge: the task answered plainly, and JSON in another context (as a pretrained LLM knows it).
    let mut corpus = pairs.clone();
    corpus.extend(tiny::json_echo_pairs());

    // 1. Pre-train every weight.
    let started = Instant::now();
    reset_peak_rss();
    let pretrain_options = TinyOptions {
        steps: 500,
        ..TinyOptions::default()
    };
    let pretrained = tiny::pretrain(&base_dir, &corpus, &pretrain_options).unwrap();
    let full_peak = peak_rss_kib();
    eprintln!(
        "pre-training (all weights): {} parameters, {} steps, final loss {:.5}, {:.1}s, peak RSS {:?} KiB",
        pretrained.parameters,
        pretrained.steps,
        pretrained.final_loss,
        pretrained.elapsed.as_secs_f64(),
        full_peak
    );
    let base = Base::load(&base_dir).unwrap();
    let prompts: Vec<&str> = pairs.iter().map(|(p, _)| p.as_str()).collect();
    let answers = tiny::answers(&base, &prompts).unwrap();
    let correct = answers.iter().zip(&pairs).filter(|(a, (_, word))| *a == word).count();
    eprintln!("base accuracy after pre-training: {correct}/100");
    assert!(
        correct >= 95,
        "the base must solve the task before tuning: {correct}/100"
    );
    drop(base);

    // 2. The JSON-format dataset: 70 sums to train on, 10 to validate, 20 held out.
    let json_line = |(prompt, word): &(String, String)| tiny::jsonl_line(prompt, &tiny::json_answer(word));
    let order: Vec<usize> = (0..100).map(|i| (i * 37 + 11) % 100).collect();
    let pick =
        |range: std::ops::Range<usize>| -> Vec<String> { order[range].iter().map(|&i| json_line(&pairs[i])).collect() };
    let (train_path, val_path, test_path) = (
        work.path().join("train.jsonl"),
        work.path().join("val.jsonl"),
        work.path().join("test.jsonl"),
    );
    write_lines(&train_path, &pick(0..70));
    write_lines(&val_path, &pick(70..80));
    write_lines(&test_path, &pick(80..100));

    // 3. LoRA training (base frozen) through the pipeline, into a registry.
    let home = work.path().join("home");
    let mut options = TuneOptions::new(train_path, base_dir.clone(), "json-answers".into());
    options.validation_file = Some(val_path);
    options.test_file = Some(test_path.clone());
    options.lr = 5e-3;
    options.epochs = 15;
    options.batch_size = 10;
    options.lora.dropout = 0.1;
    options.warmup = Warmup::Ratio(0.05);
    reset_peak_rss();
    let tuning = tune(&home, &options, &mut |_| {}).unwrap();
    let lora_peak = peak_rss_kib();
    let card = tuning.card.clone().unwrap();
    eprintln!(
        "LoRA: {} of {} parameters trained ({:.1}%), {} steps, val loss {:?}, {:.1}s, peak RSS {:?} KiB",
        tuning.trainable_parameters,
        tuning.total_parameters,
        100.0 * tuning.trainable_parameters as f64 / tuning.total_parameters as f64,
        tuning.steps,
        card.metrics.val_loss,
        card.metrics.train_seconds,
        lora_peak
    );
    assert!(tuning.trainable_parameters * 5 < tuning.total_parameters);

    // 4. Base vs base + adapter on the held-out sums.
    let schema = serde_json::json!({"type": "object", "required": ["answer"],
        "properties": {"answer": {"type": "string"}}, "additionalProperties": false});
    let checks = Checks::new(Some(&schema), Some(r#"^\{"answer": "[a-z]+"\}$"#)).unwrap();
    let adapter_dir = Registry::new(&home).list().unwrap().remove(0).dir;
    let comparison = compare(
        &base_dir,
        &adapter_dir,
        &test_path,
        &checks,
        &EvalOptions::default(),
        &mut || {},
    )
    .unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&comparison).unwrap());
    let (b, t) = (&comparison.base.rates, &comparison.tuned.rates);
    eprintln!(
        "held-out: JSON valid base {} adapter {}; schema valid base {:?} adapter {:?}; exact (value) base {} adapter {}",
        b.json_valid, t.json_valid, b.schema_valid, t.schema_valid, b.exact_match, t.exact_match
    );
    assert_eq!(comparison.rows, 20);
    assert!(
        t.json_valid >= 0.9 && b.json_valid <= 0.1,
        "JSON valid: base {} adapter {}",
        b.json_valid,
        t.json_valid
    );
    assert!(t.schema_valid.unwrap() >= 0.9 && b.schema_valid.unwrap() <= 0.1);
    assert!(t.regex_match.unwrap() >= 0.9 && b.regex_match.unwrap() <= 0.1);
    assert!(comparison.tuned.loss < comparison.base.loss);
    // The value inside the JSON must still come from the base's arithmetic, on sums the adapter never saw. Measured
    // 0.15 to 0.6 across runs (float summation order varies with thread scheduling, so the pre-trained base differs
    // slightly from run to run): the format transfers fully, the values only partly.
    assert!(
        t.exact_match >= 0.1,
        "the adapter's answers lost their values: {}",
        t.exact_match
    );

    // 5. The base without the adapter still answers the held-out sums plainly and correctly.
    let plain_test = work.path().join("plain-test.jsonl");
    let held_out: Vec<String> = order[80..100]
        .iter()
        .map(|&i| tiny::jsonl_line(&pairs[i].0, &pairs[i].1))
        .collect();
    write_lines(&plain_test, &held_out);
    let base = Base::load(&base_dir).unwrap();
    let rows = knowhow_tune::data::Dataset::load(&plain_test, true).unwrap().rows;
    let (plain, _) = evaluate_model(&base, &rows, &Checks::none(), &EvalOptions::default(), &mut || {}).unwrap();
    eprintln!(
        "base alone, held-out sums, plain format: exact match {}",
        plain.rates.exact_match
    );
    assert!(plain.rates.exact_match >= 0.95);
    eprintln!("demo total {:.1}s", started.elapsed().as_secs_f64());
}
