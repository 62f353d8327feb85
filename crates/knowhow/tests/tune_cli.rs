//! `knowhow data`, `tune`, `adapters` and `eval tune`, driven through the binary on a tiny Llama that the test
//! pre-trains itself (knowhow_testkit_tiny: character tokenizer, chat template, a few seconds of training).

mod common;

use std::path::Path;

use common::{stderr, stdout, write, Knowhow};
use knowhow_testkit_tiny::{self as tiny, TinyOptions};

fn tiny_base(dir: &Path) {
    let options = TinyOptions {
        steps: 20,
        ..TinyOptions::default()
    };
    tiny::pretrain(dir, &tiny::addition_pairs(), &options).unwrap();
}

fn json_rows(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(p, w)| tiny::jsonl_line(p, &tiny::json_answer(w)) + "\n")
        .collect()
}

#[test]
fn data_check_reports_bad_lines_with_line_and_field_and_fails() {
    let kh = Knowhow::new();
    let file = kh.home.path().join("data.jsonl");
    write(
        &file,
        "{\"prompt\": \"1+1\", \"completion\": \"two\"}\n{\"prompt\": \"1+2\", \"completion\": 3}\nnot json\n\
         {\"prompt\": \"1+1\", \"completion\": \"two\"}\n",
    );
    let out = kh.run(&["data", "check", file.to_str().unwrap()]);
    assert!(!out.status.success(), "bad lines must fail the check");
    let text = stdout(&out);
    assert!(text.contains("line 2 [completion]"), "{text}");
    assert!(text.contains("line 3"), "{text}");

    let out = kh.run(&["--json", "data", "check", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["invalid_lines"], 2);
    assert_eq!(report["errors"][0]["line"], 2);
    assert_eq!(report["errors"][0]["field"], "completion");
    assert_eq!(report["duplicates"][0]["line"], 4);
    assert_eq!(report["unique_rows"], 1);

    let good = kh.home.path().join("good.jsonl");
    write(&good, &json_rows(&tiny::addition_pairs()[..10]));
    assert!(kh.run(&["data", "check", good.to_str().unwrap()]).status.success());
    let stats = kh.json(&["data", "stats", good.to_str().unwrap()]);
    assert_eq!(stats["input"]["unique_rows"], 10);
}

#[test]
fn data_split_mixes_general_rows_into_the_training_part_only() {
    let kh = Knowhow::new();
    let pairs = tiny::addition_pairs();
    let (task, general) = (kh.home.path().join("task.jsonl"), kh.home.path().join("general.jsonl"));
    write(&task, &json_rows(&pairs[..50]));
    write(&general, &json_rows(&pairs[50..100]));
    let out_dir = kh.home.path().join("split");
    let args = [
        "data",
        "split",
        task.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let plain = kh.json(&args);
    assert!(plain["mix"].is_null());
    let mixed = kh.json(&[&args[..], &["--mix", general.to_str().unwrap(), "--mix-ratio", "0.2"]].concat());
    assert_eq!(mixed["validation"]["rows"], plain["validation"]["rows"]);
    assert_eq!(mixed["test"]["rows"], plain["test"]["rows"]);
    let task_train = plain["train"]["rows"].as_u64().unwrap();
    let added = mixed["mix"]["mixed"].as_u64().unwrap();
    assert_eq!(added, (task_train as f64 * 0.2 / 0.8).round() as u64);
    assert_eq!(mixed["train"]["rows"].as_u64().unwrap(), task_train + added);
    let train = std::fs::read_to_string(out_dir.join("train.jsonl")).unwrap();
    assert_eq!(train.lines().count() as u64, task_train + added);

    let without_file = kh.run(&[
        "data",
        "split",
        task.to_str().unwrap(),
        "--out",
        "x",
        "--mix-ratio",
        "0.2",
    ]);
    assert!(!without_file.status.success());
    assert!(stderr(&without_file).contains("--mix"), "{}", stderr(&without_file));
}

#[test]
fn tune_registers_an_adapter_that_adapters_and_eval_tune_use() {
    let kh = Knowhow::new();
    let base = kh.home.path().join("tiny-base");
    tiny_base(&base);
    let pairs = tiny::addition_pairs();
    let data = kh.home.path().join("train.jsonl");
    // A bad line is reported and skipped; training goes on.
    write(&data, &(json_rows(&pairs[..60]) + "{\"prompt\": 5}\n"));
    let test = kh.home.path().join("test.jsonl");
    write(&test, &json_rows(&pairs[90..96]));
    let general = kh.home.path().join("general.jsonl");
    write(&general, &json_rows(&pairs[60..90]));
    let out = kh.run(&[
        "--json",
        "tune",
        "--mix",
        general.to_str().unwrap(),
        "--mix-ratio",
        "0.2",
        data.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--name",
        "json-fmt",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--lr",
        "5e-3",
        "--rank",
        "4",
        "--targets",
        "q,v",
        "--test",
        test.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "tune failed: {}\n{}", stderr(&out), stdout(&out));
    assert!(
        stderr(&out).contains("line 61"),
        "the bad line is reported: {}",
        stderr(&out)
    );
    let outcome: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(outcome["card"]["name"], "json-fmt");
    assert_eq!(outcome["card"]["version"], 1);
    assert_eq!(
        outcome["card"]["hyper_parameters"]["targets"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(outcome["split"]["test"]["rows"], 6);
    // General rows make up 20% of the training part, and the card records them.
    let split = &outcome["split"];
    let (task, mixed) = (
        split["task_train_rows"].as_u64().unwrap(),
        split["mix"]["mixed"].as_u64().unwrap(),
    );
    assert_eq!(mixed, (task as f64 * 0.2 / 0.8).round() as u64);
    assert_eq!(split["train"]["rows"].as_u64().unwrap(), task + mixed);
    assert_eq!(outcome["card"]["dataset"]["mix"]["rows"].as_u64().unwrap(), mixed);
    assert_eq!(
        outcome["card"]["dataset"]["mix"]["sha256"],
        split["mix"]["input"]["checksum"]
    );
    let adapter_dir = kh.home.path().join("adapters/json-fmt/v1");
    for file in ["adapter_config.json", "adapter_model.safetensors", "card.json"] {
        assert!(adapter_dir.join(file).is_file(), "{file} missing");
    }

    let list = kh.json(&["adapters", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["version"], 1);
    let show = kh.json(&["adapters", "show", "json-fmt@1"]);
    assert_eq!(show["card"]["dataset"]["train_rows"], outcome["split"]["train"]["rows"]);
    assert_eq!(show["card"]["base_model"]["sha256"].as_str().unwrap().len(), 64);

    let schema = kh.home.path().join("schema.json");
    write(&schema, r#"{"type": "object", "required": ["answer"]}"#);
    let eval = kh.json(&[
        "eval",
        "tune",
        "json-fmt",
        "--data",
        test.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
        "--regex",
        "answer",
        "--max-new-tokens",
        "24",
    ]);
    assert_eq!(eval["rows"], 6);
    assert_eq!(eval["held_out_split"], true);
    for side in ["base", "with_adapter"] {
        let rates = &eval[side]["rates"];
        for metric in ["exact_match", "json_valid", "schema_valid", "regex_match"] {
            let rate = rates[metric]
                .as_f64()
                .unwrap_or_else(|| panic!("{side}.{metric} missing: {eval}"));
            assert!((0.0..=1.0).contains(&rate));
        }
        assert!(eval[side]["loss"].as_f64().unwrap().is_finite());
    }
    let card = kh.json(&["adapters", "show", "json-fmt"]);
    assert_eq!(
        card["card"]["metrics"]["evaluation"]["rows"], 6,
        "the evaluation is stored on the card"
    );

    let exported = kh.home.path().join("exported");
    kh.ok(&["adapters", "export", "json-fmt", exported.to_str().unwrap()]);
    assert!(exported.join("adapter_model.safetensors").is_file());
    let merged = kh.home.path().join("merged");
    kh.ok(&["adapters", "merge", "json-fmt", "--out", merged.to_str().unwrap()]);
    assert!(merged.join("model.safetensors").is_file() && merged.join("tokenizer.json").is_file());

    assert!(
        !kh.run(&["adapters", "rm", "json-fmt@2"]).status.success(),
        "no such version"
    );
    kh.ok(&["adapters", "rm", "json-fmt@1"]);
    assert_eq!(kh.json(&["adapters", "list"]), serde_json::json!([]));
}
