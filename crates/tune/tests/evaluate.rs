//! The task metrics of `eval tune`: exact match, JSON validity, JSON-schema validity, regex match.

use knowhow_tune::evaluate::{exact_match, parse_json, Checks, TaskCounts};
use serde_json::json;

#[test]
fn exact_match_compares_json_as_values_and_text_trimmed() {
    assert!(exact_match(r#"{"answer":7}"#, r#"{"answer": 7}"#));
    assert!(exact_match(" {\"a\": 1, \"b\": 2}\n", r#"{"b": 2, "a": 1}"#));
    assert!(!exact_match(r#"{"answer": 7}"#, r#"{"answer": "7"}"#));
    assert!(exact_match(" Paris\n", "Paris"));
    assert!(!exact_match("paris", "Paris"));
}

#[test]
fn json_validity_needs_exactly_one_value() {
    assert!(parse_json(r#" {"a": [1, 2]} "#).is_some());
    assert!(parse_json("seven").is_none());
    assert!(parse_json(r#"{"a": 1} trailing"#).is_none());
    assert!(parse_json(r#"{"a": 1"#).is_none());
}

#[test]
fn counts_and_rates_over_outputs() {
    let schema = json!({"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}});
    let checks = Checks::new(Some(&schema), Some(r#"^\{"answer": "[a-z]+"\}$"#)).unwrap();
    let mut counts = TaskCounts::new(&checks);
    let reference = r#"{"answer": "seven"}"#;
    for output in [
        r#"{"answer": "seven"}"#, // all four
        r#"{"answer": "six"}"#,   // valid, schema, regex; wrong value
        r#"{"answer": 7}"#,       // valid JSON, fails the schema and the regex
        "seven",                  // plain text
    ] {
        counts.add(&checks, output, reference);
    }
    assert_eq!(
        counts,
        TaskCounts {
            rows: 4,
            exact_match: 1,
            json_valid: 3,
            schema_valid: Some(2),
            regex_match: Some(2),
        }
    );
    let rates = counts.rates();
    assert_eq!(
        (rates.exact_match, rates.json_valid, rates.schema_valid),
        (0.25, 0.75, Some(0.5))
    );

    let unchecked = TaskCounts::new(&Checks::none());
    assert_eq!((unchecked.schema_valid, unchecked.regex_match), (None, None));
}

#[test]
fn bad_schema_and_bad_pattern_are_refused_with_a_message() {
    let bad_schema = json!({"type": "no-such-type"});
    let error = Checks::new(Some(&bad_schema), None).err().unwrap().to_string();
    assert!(error.contains("JSON schema"), "{error}");
    let error = Checks::new(None, Some("(unclosed")).err().unwrap().to_string();
    assert!(error.contains("\"(unclosed\" is not a valid pattern"), "{error}");
}
