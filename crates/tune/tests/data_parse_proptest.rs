//! The dataset parser on arbitrary input: it never panics, accounts for every non-blank line, and what it accepts
//! survives a round trip through the normalized shape.

use std::collections::HashSet;

use knowhow_tune::data::parse_jsonl;
use proptest::prelude::*;
use serde_json::Value;

/// JSON values built from the keys and roles the parser looks at, so that generated lines reach deep validation.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(Value::from),
        prop_oneof![
            Just("system"),
            Just("user"),
            Just("assistant"),
            Just("tool"),
            Just("text"),
            Just(""),
            Just(" "),
            Just("hé\u{1}llo")
        ]
        .prop_map(Value::from),
        ".{0,6}".prop_map(Value::from),
    ];
    let keys = prop_oneof![
        Just("messages"),
        Just("role"),
        Just("content"),
        Just("weight"),
        Just("prompt"),
        Just("completion"),
        Just("instruction"),
        Just("input"),
        Just("output"),
        Just("system"),
        Just("type"),
        Just("text"),
        Just("id"),
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone().prop_map(String::from), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn check_accounting(bytes: &[u8]) {
    let parsed = parse_jsonl(bytes, "fuzz.jsonl");
    let mut lines = HashSet::new();
    for line in parsed
        .rows
        .iter()
        .map(|r| r.line)
        .chain(parsed.errors.iter().map(|e| e.line))
    {
        assert!(line >= 1 && line <= parsed.lines, "line {line} of {}", parsed.lines);
        assert!(lines.insert(line), "line {line} reported twice");
    }
    for error in &parsed.errors {
        assert!(error
            .to_string()
            .starts_with(&format!("fuzz.jsonl: line {}: ", error.line)));
    }
    for row in &parsed.rows {
        let again = parse_jsonl(row.conversation.to_json_line().as_bytes(), "again");
        assert!(again.errors.is_empty(), "{:?}", again.errors);
        assert_eq!(again.rows[0].conversation, row.conversation);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_accounting(&bytes);
    }

    #[test]
    fn arbitrary_lines_of_text_never_panic(lines in prop::collection::vec(".{0,40}", 0..8)) {
        check_accounting(lines.join("\n").as_bytes());
    }

    #[test]
    fn shaped_json_is_validated_without_panics(values in prop::collection::vec(json_value(), 1..6), crlf in any::<bool>()) {
        let separator = if crlf { "\r\n" } else { "\n" };
        let text: Vec<String> = values.iter().map(Value::to_string).collect();
        let text = text.join(separator);
        check_accounting(text.as_bytes());
        let parsed = parse_jsonl(text.as_bytes(), "fuzz.jsonl");
        prop_assert_eq!(parsed.rows.len() + parsed.errors.len(), values.len());
    }
}
