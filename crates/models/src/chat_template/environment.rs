//! The minijinja environment that stands in for transformers' Jinja2 one, and how its errors are reported.

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind};
use serde_json::Value as Json;

use super::error::ChatTemplateError;
use super::repr::python_str;
use super::strftime::strftime_now;
use super::tojson::tojson;

/// A minijinja environment configured like transformers' `ImmutableSandboxedEnvironment`.
pub(super) fn jinja2_like_environment() -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(false)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        out.write_str(&python_str(value))?;
        Ok(())
    });
    env.add_filter("tojson", tojson);
    env.add_filter("string", |value: Value| python_str(&value));
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

/// A JSON value as a template value; objects keep their key order.
pub(super) fn to_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::from(()),
        Json::Bool(flag) => Value::from(*flag),
        Json::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(integer), _, _) => Value::from(integer),
            (None, Some(integer), _) => Value::from(integer),
            (None, None, Some(float)) => Value::from(float),
            (None, None, None) => Value::from(number.to_string()),
        },
        Json::String(text) => Value::from(text.as_str()),
        Json::Array(items) => items.iter().map(to_value).collect(),
        Json::Object(fields) => Value::from_pairs(fields.iter().map(|(key, value)| (key.as_str(), to_value(value)))),
    }
}

/// Marks an error as the template's own `raise_exception`, so that it is reported as a refusal.
#[derive(Debug)]
struct RaisedByTemplate;

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raised by the template")
    }
}

impl std::error::Error for RaisedByTemplate {}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message).with_source(RaisedByTemplate))
}

/// A failure to render the template that came from `origin`: a refusal when the template raised it, else a render
/// error.
pub(super) fn render_error(origin: &str, error: &minijinja::Error) -> ChatTemplateError {
    let origin = origin.to_string();
    let line = error.line().unwrap_or(0);
    let raised = std::error::Error::source(error).is_some_and(|source| source.is::<RaisedByTemplate>());
    if raised {
        let message = error.detail().unwrap_or_default().to_string();
        return ChatTemplateError::Raised { origin, line, message };
    }
    let message = error_message(error);
    ChatTemplateError::Render { origin, line, message }
}

/// The error's kind and detail, without minijinja's own location suffix (the caller names file and line).
pub(super) fn error_message(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    }
}

/// Rewrites transformers' `{% generation %}` / `{% endgeneration %}` (which only mark assistant text for training
/// masks) as `{% if true %}` / `{% endif %}`, keeping their whitespace-control markers, so the body renders as is.
pub(super) fn without_generation_tags(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match generation_tag(tag) {
            Some((length, replacement)) => {
                out.push_str(&replacement);
                rest = &tag[length..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// For a `tag` starting with `{%`: when it is a whole `generation` or `endgeneration` tag, its length and the
/// equivalent `if`/`endif` tag.
fn generation_tag(tag: &str) -> Option<(usize, String)> {
    let after_open = &tag[2..];
    let open_marker = after_open.chars().next().filter(|c| *c == '-' || *c == '+');
    let body = &after_open[open_marker.map_or(0, char::len_utf8)..];
    let word_start = body.len() - body.trim_start().len();
    let word_len = body[word_start..]
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(body.len() - word_start);
    let keyword = match &body[word_start..word_start + word_len] {
        "generation" => "if true",
        "endgeneration" => "endif",
        _ => return None,
    };
    let after_word = &body[word_start + word_len..];
    let closing = after_word.trim_start();
    let close_marker = closing.chars().next().filter(|c| *c == '-' || *c == '+');
    let close = &closing[close_marker.map_or(0, char::len_utf8)..];
    if !close.starts_with("%}") {
        return None;
    }
    let length = tag.len() - close.len() + 2;
    let marker = |m: Option<char>| m.map(String::from).unwrap_or_default();
    Some((
        length,
        format!("{{%{} {keyword} {}%}}", marker(open_marker), marker(close_marker)),
    ))
}
