use serde_json::{json, Value as Json};

use super::environment::without_generation_tags;
use super::messages::prepare_messages;
use super::repr::python_float;
use super::strftime::strftime;
use super::{ChatTemplate, ChatTemplateError};

fn render(template: &str, messages: Json) -> Result<String, ChatTemplateError> {
    let template = ChatTemplate::from_str(template, Some("<s>"), Some("</s>"))?;
    template.render(messages.as_array().unwrap(), None, false)
}

#[test]
fn floats_print_as_python_repr() {
    let cases = [
        (1.0, "1.0"),
        (-0.0, "-0.0"),
        (0.1, "0.1"),
        (21.5, "21.5"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (123456789.125, "123456789.125"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (2.5e300, "2.5e+300"),
        (-3.25, "-3.25"),
    ];
    for (number, expected) in cases {
        assert_eq!(python_float(number, false), expected, "{number:e}");
    }
    assert_eq!(python_float(f64::NAN, true), "NaN");
    assert_eq!(python_float(f64::NEG_INFINITY, true), "-Infinity");
}

#[test]
fn values_print_as_python_prints_them() {
    let out = render(
        "{{ messages[0].x }}|{{ messages[0].y }}|{{ none }}|{{ messages[0].z }}|{{ messages[0] }}",
        json!([{"x": true, "y": [1, "a'b", null, 2.0], "z": "plain"}]),
    )
    .unwrap();
    assert_eq!(
        out,
        "True|[1, \"a'b\", None, 2.0]|None|plain|{'x': True, 'y': [1, \"a'b\", None, 2.0], 'z': 'plain'}"
    );
}

#[test]
fn tojson_follows_json_dumps_layout() {
    let messages = json!([{"a": {"k": [1, 2.5, "é<>&\"\n"], "e": {}, "l": []}}]);
    let out = render("{{ messages[0].a | tojson }}", messages.clone()).unwrap();
    assert_eq!(out, r#"{"k": [1, 2.5, "é<>&\"\n"], "e": {}, "l": []}"#);
    let out = render("{{ messages[0].a | tojson(indent=2) }}", messages.clone()).unwrap();
    assert_eq!(
        out,
        "{\n  \"k\": [\n    1,\n    2.5,\n    \"é<>&\\\"\\n\"\n  ],\n  \"e\": {},\n  \"l\": []\n}"
    );
    let out = render(
        "{{ messages[0].a | tojson(separators=(',', ':'), sort_keys=true, ensure_ascii=true) }}",
        messages,
    )
    .unwrap();
    assert_eq!(out, r#"{"e":{},"k":[1,2.5,"\u00e9<>&\"\n"],"l":[]}"#);
}

#[test]
fn generation_tags_render_their_body() {
    let template = "{% for m in messages %}{%- generation -%}\n[{{ m.content }}]\n{%- endgeneration %}{% endfor %}";
    assert_eq!(without_generation_tags("{%- generation -%}"), "{%- if true -%}");
    assert_eq!(without_generation_tags("{% endgeneration %}x"), "{% endif %}x");
    assert_eq!(without_generation_tags("{% generations %}"), "{% generations %}");
    let out = render(template, json!([{"content": "a"}, {"content": "b"}])).unwrap();
    assert_eq!(out, "[a][b]");
}

#[test]
fn messages_are_prepared_like_transformers_and_vllm() {
    let prepared = prepare_messages(&[json!({
        "role": "assistant",
        "content": null,
        "reasoning": "think",
        "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"b\": 1, \"a\": 2}"}},
                       {"id": "2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]
    })])
    .unwrap();
    let message = prepared[0].as_object().unwrap();
    let keys: Vec<&str> = message.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["thinking", "role", "reasoning", "tool_calls", "reasoning_content"]
    );
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        json!({"b": 1, "a": 2})
    );
    let first_key = message["tool_calls"][0]["function"]["arguments"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert_eq!(first_key, "b", "argument order must be kept");
    assert_eq!(message["tool_calls"][1]["function"]["arguments"], json!("not json"));
    assert!(prepare_messages(&[json!("hello")]).unwrap_err().contains("message 0"));
}

#[test]
fn errors_name_the_origin_and_the_template_line() {
    let err = ChatTemplate::from_str("line one\n{% if %}", None, None).unwrap_err();
    assert!(matches!(err, ChatTemplateError::Syntax { line: 2, .. }), "{err}");
    assert!(err.to_string().contains("template line 2"), "{err}");
    let err = render(
        "a\nb\n{{ raise_exception('roles must alternate') }}",
        json!([{"role": "user"}]),
    )
    .unwrap_err();
    assert!(matches!(err, ChatTemplateError::Raised { line: 3, .. }), "{err}");
    assert!(err.to_string().contains("roles must alternate"), "{err}");
    let err = render("{{ messages[0].content + 1 }}", json!([{"content": "x"}])).unwrap_err();
    assert!(matches!(err, ChatTemplateError::Render { line: 1, .. }), "{err}");
}

#[test]
fn strftime_formats_known_dates() {
    // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
    let at = 1_721_999_109;
    assert_eq!(strftime("%d %b %Y", at).unwrap(), "26 Jul 2024");
    assert_eq!(
        strftime("%A %-d %B %y, %H:%M:%S %I%p %j %% %e", at).unwrap(),
        "Friday 26 July 24, 13:05:09 01PM 208 % 26"
    );
    assert_eq!(strftime("%Y-%m-%d %a", 0).unwrap(), "1970-01-01 Thu");
    assert_eq!(strftime("%Y-%m-%d", 951_782_400).unwrap(), "2000-02-29");
    assert!(strftime("%Q", at).is_err());
}
