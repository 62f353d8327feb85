//! Chat templates rendered by [`ChatTemplate`] against transformers' `apply_chat_template(..., tokenize=False)`.
//!
//! `fixtures/render_chat_templates.py` writes model folders holding real-world templates (Llama 2, Llama 3, Llama 3.1
//! with tools, Mistral v0.3 with tools, Qwen 2.5 with tools, plain ChatML, named `default`/`tool_use` templates, a
//! template with `{% generation %}` tags, `strftime_now`) in each way Hugging Face repositories store them, renders
//! a set of conversations (multi-turn, tool calls and results, bad role order, awkward text) with transformers, and
//! records the text or the exception. These tests load the same folders and must produce the same bytes, or fail
//! where the template raised. It needs a Python with transformers:
//!
//! ```text
//! KNOWHOW_PYTHON=/work/pyref/venv/bin/python cargo test -p knowhow-models --test chat_templates
//! ```

mod python_reference;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use knowhow_models::{ChatTemplate, ChatTemplateError};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
    special_tokens: HashMap<String, HashMap<String, String>>,
    results: Vec<Outcome>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    messages: Vec<Value>,
    tools: Option<Vec<Value>>,
    add_generation_prompt: bool,
}

#[derive(Deserialize)]
struct Outcome {
    model: String,
    case: String,
    rendered: Option<String>,
    error: Option<PythonError>,
}

#[derive(Deserialize)]
struct PythonError {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

/// The generator's folder and reference; `None` (skipped) without KNOWHOW_PYTHON.
fn reference(test: &str) -> Option<&'static (PathBuf, Reference)> {
    static GENERATED: OnceLock<(PathBuf, Reference)> = OnceLock::new();
    python_reference::once(&GENERATED, test, |python| {
        python_reference::generate(&python, "render_chat_templates.py", "knowhow-models-chat-templates")
    })
}

fn load(dir: &Path, model: &str) -> ChatTemplate {
    ChatTemplate::from_model_dir(&dir.join(model))
        .unwrap_or_else(|err| panic!("{model}: {err}"))
        .unwrap_or_else(|| panic!("{model}: no chat template found"))
}

fn case<'a>(reference: &'a Reference, name: &str) -> &'a Case {
    reference.cases.iter().find(|case| case.name == name).unwrap()
}

#[test]
fn renders_every_conversation_as_transformers_does() {
    let Some((dir, reference)) = reference("renders_every_conversation_as_transformers_does") else {
        return;
    };
    let mut templates = HashMap::new();
    let mut failures = Vec::new();
    let mut rendered_count = 0;
    for outcome in &reference.results {
        let template = templates
            .entry(outcome.model.clone())
            .or_insert_with(|| load(dir, &outcome.model));
        let case = case(reference, &outcome.case);
        let ours = template.render(&case.messages, case.tools.as_deref(), case.add_generation_prompt);
        let label = format!("{} / {}", outcome.model, outcome.case);
        match (&outcome.rendered, &outcome.error, ours) {
            (Some(expected), _, Ok(text)) => {
                rendered_count += 1;
                if &text != expected {
                    failures.push(format!(
                        "{label}: differs\n  transformers: {expected:?}\n  ours:         {text:?}"
                    ));
                }
            }
            (Some(expected), _, Err(err)) => failures.push(format!("{label}: failed ({err}), expected {expected:?}")),
            (None, Some(python), Ok(text)) => failures.push(format!(
                "{label}: rendered {text:?}, but transformers raised {}: {}",
                python.kind, python.message
            )),
            (None, Some(python), Err(err)) => {
                // A template's own raise_exception must come through with its message; other failures (undefined
                // values) only need to fail too.
                let raised_by_template = python.kind == "TemplateError";
                let matches = match &err {
                    ChatTemplateError::Raised { message, .. } => raised_by_template && *message == python.message,
                    _ => !raised_by_template,
                };
                if !matches {
                    failures.push(format!(
                        "{label}: our error `{err}` does not match transformers' {}: {}",
                        python.kind, python.message
                    ));
                }
            }
            (None, None, _) => panic!("{label}: the reference has neither text nor error"),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        rendered_count > 50,
        "only {rendered_count} rendered conversations were compared"
    );
}

#[test]
fn special_tokens_are_read_as_transformers_reads_them() {
    let Some((dir, reference)) = reference("special_tokens_are_read_as_transformers_reads_them") else {
        return;
    };
    for (model, tokens) in &reference.special_tokens {
        let template = load(dir, model);
        for name in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            assert_eq!(
                template.special_token(name),
                tokens.get(name).map(String::as_str),
                "{model}: {name}"
            );
        }
    }
}

/// OpenAI clients send tool-call arguments as a JSON string; templates must see the same object transformers was
/// given, so the output matches byte for byte.
#[test]
fn string_tool_arguments_render_like_objects() {
    let Some((dir, reference)) = reference("string_tool_arguments_render_like_objects") else {
        return;
    };
    let mut compared = 0;
    for outcome in reference
        .results
        .iter()
        .filter(|outcome| outcome.case.contains("tool_call"))
    {
        let Some(expected) = &outcome.rendered else { continue };
        let case = case(reference, &outcome.case);
        let mut messages = case.messages.clone();
        for message in &mut messages {
            let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) else {
                continue;
            };
            for call in calls {
                let arguments = &mut call["function"]["arguments"];
                *arguments = Value::String(serde_json::to_string(arguments).unwrap());
            }
        }
        let text = load(dir, &outcome.model)
            .render(&messages, case.tools.as_deref(), case.add_generation_prompt)
            .unwrap();
        assert_eq!(&text, expected, "{} / {}", outcome.model, outcome.case);
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} tool-call renders compared");
}

#[test]
fn named_templates_pick_tool_use_only_when_tools_are_given() {
    let Some((dir, _)) = reference("named_templates_pick_tool_use_only_when_tools_are_given") else {
        return;
    };
    let template = load(dir, "named_templates");
    assert_eq!(template.template_names(), ["default", "tool_use"]);
    let messages = [serde_json::json!({"role": "user", "content": "hi"})];
    let plain = template.render(&messages, None, true).unwrap();
    let with_tools = template.render(&messages, Some(&[]), true).unwrap();
    assert_eq!(plain, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    assert!(
        with_tools.starts_with("<|im_start|>system\nYou are Qwen"),
        "{with_tools}"
    );
}
