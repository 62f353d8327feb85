//! The `tojson` filter: Python's `json.dumps` with transformers' defaults and keyword arguments.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::ErrorKind;

use super::repr::python_float;

/// How `json.dumps` lays out its output.
struct JsonLayout {
    /// `Some(unit)`: one item per line, indented by `unit` per level.
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, which is
/// `json.dumps` with those arguments.
pub(super) fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(unit) if unit.is_none() => None,
        Some(unit) => match (unit.as_i64(), unit.as_str()) {
            (Some(spaces), _) => Some(" ".repeat(spaces.max(0) as usize)),
            (None, Some(text)) => Some(text.to_string()),
            _ => return Err(invalid("tojson: `indent` must be an integer or a string")),
        },
    };
    let (item_separator, key_separator) = match kwargs.get::<Option<Value>>("separators")? {
        Some(pair) if !pair.is_none() => {
            let parts: Vec<String> = pair
                .try_iter()?
                .map(|part| part.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| invalid("tojson: `separators` must be two strings"))?;
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => (item, key),
                Err(_) => return Err(invalid("tojson: `separators` must be two strings")),
            }
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let layout = JsonLayout {
        indent,
        item_separator,
        key_separator,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, &layout, 0)?;
    Ok(Value::from_safe_string(out))
}

/// An error of the `tojson` filter, as minijinja reports it.
fn invalid(message: &str) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, message.to_string())
}

fn write_json(out: &mut String, value: &Value, layout: &JsonLayout, level: usize) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => {
            let _ = write!(out, "{value}");
        }
        ValueKind::Number => {
            let number = f64::try_from(value.clone())?;
            out.push_str(&python_float(number, true));
        }
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or_default(), layout.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_json_container(out, ('[', ']'), &items, layout, level, |out, item, level| {
                write_json(out, item, layout, level)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if layout.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_json_container(out, ('{', '}'), &entries, layout, level, |out, (key, item), level| {
                write_json_string(out, key, layout.ensure_ascii);
                out.push_str(&layout.key_separator);
                write_json(out, item, layout, level)
            })?;
        }
        kind => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of type {kind} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// Writes `items` between `brackets` the way Python's encoder does: `[]` when empty, else on one line or, with an
/// indent, one item per line.
fn write_json_container<T>(
    out: &mut String,
    brackets: (char, char),
    items: &[T],
    layout: &JsonLayout,
    level: usize,
    mut write_item: impl FnMut(&mut String, &T, usize) -> Result<(), minijinja::Error>,
) -> Result<(), minijinja::Error> {
    out.push(brackets.0);
    if items.is_empty() {
        out.push(brackets.1);
        return Ok(());
    }
    let newline = |level: usize| layout.indent.as_ref().map(|unit| format!("\n{}", unit.repeat(level)));
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push_str(&layout.item_separator);
        }
        if let Some(newline) = newline(level + 1) {
            out.push_str(&newline);
        }
        write_item(out, item, level + 1)?;
    }
    if let Some(newline) = newline(level) {
        out.push_str(&newline);
    }
    out.push(brackets.1);
    Ok(())
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers, booleans and `None` as their JSON text.
fn json_key(key: &Value) -> Result<String, minijinja::Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::None => Ok("null".into()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::Number if key.is_integer() => Ok(key.to_string()),
        ValueKind::Number => Ok(python_float(f64::try_from(key.clone())?, true)),
        kind => Err(invalid(&format!("tojson: keys must be strings, not {kind}"))),
    }
}

/// A JSON string as Python writes it: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, other control characters as
/// `\u00XX`; with `ensure_ascii`, everything past ASCII as `\uXXXX` (UTF-16 surrogate pairs past the BMP).
fn write_json_string(out: &mut String, text: &str, ensure_ascii: bool) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
