//! CSV and JSONL: database rows, one document per row.
//!
//! A row's text is its title (when it has one) and its text field joined by a
//! blank line, so both are searchable; every other field becomes metadata. A
//! bad row is reported with its line number and the other rows load.

use knowhow_core::{Document, Metadata};
use serde_json::{Map, Value};

use super::{file_document_id, LoadError, Loaded, Remedy, RowError};

/// Which fields of a row hold its id, title and text. `None` means "the first
/// of the usual names present" (see [`RowFields::ID_NAMES`] and friends).
#[derive(Debug, Clone, Default)]
pub struct RowFields {
    pub id: Option<String>,
    pub title: Option<String>,
    pub text: Option<String>,
}

impl RowFields {
    pub const ID_NAMES: [&'static str; 4] = ["id", "_id", "uuid", "key"];
    pub const TITLE_NAMES: [&'static str; 3] = ["title", "name", "subject"];
    pub const TEXT_NAMES: [&'static str; 6] = ["text", "content", "body", "document", "passage", "contents"];
}

pub(crate) fn load_jsonl(bytes: &[u8], source: &str, fields: &RowFields) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_number = index as u64 + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = std::str::from_utf8(line)
            .map_err(|e| format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1))
            .and_then(|text| serde_json::from_str::<Value>(text).map_err(|e| format!("invalid JSON: {e}")))
            .and_then(|value| match value {
                Value::Object(object) => Ok(object),
                other => Err(format!("expected a JSON object, found {}", json_kind(&other))),
            })
            .map_err(RowFailure::from)
            .and_then(|object| row_document(object, source, line_number, fields));
        match parsed {
            Ok(doc) => loaded.documents.push(doc),
            Err(failure) => loaded.row_errors.push(failure.at(line_number)),
        }
    }
    no_rows_at_all(loaded)
}

pub(crate) fn load_csv(bytes: &[u8], source: &str, fields: &RowFields) -> Result<Loaded, LoadError> {
    let delimiter = if source.to_ascii_lowercase().ends_with(".tsv") {
        b'\t'
    } else {
        b','
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(false)
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| LoadError::new(format!("cannot read the CSV header line: {e}")))?
        .clone();
    let mut loaded = Loaded::default();
    for record in reader.records() {
        let (line_number, result) = match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line());
                let object: Map<String, Value> = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                    .collect();
                (line, row_document(object, source, line, fields))
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                (line, Err(RowFailure::from(csv_error_message(&e))))
            }
        };
        match result {
            Ok(doc) => loaded.documents.push(doc),
            Err(failure) => loaded.row_errors.push(failure.at(line_number)),
        }
    }
    no_rows_at_all(loaded)
}

fn csv_error_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("has {len} fields, the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { err, .. } => format!("field {} is not UTF-8", err.field() + 1),
        _ => e.to_string(),
    }
}

/// A row file in which nothing loaded and nothing failed is empty, which the
/// user should hear about rather than see "0 documents".
fn no_rows_at_all(loaded: Loaded) -> Result<Loaded, LoadError> {
    if loaded.documents.is_empty() && loaded.row_errors.is_empty() {
        return Err(LoadError::new("no rows"));
    }
    Ok(loaded)
}

/// Why one row failed, before its line number is attached.
struct RowFailure {
    message: String,
    remedy: Option<Remedy>,
}

impl From<String> for RowFailure {
    fn from(message: String) -> RowFailure {
        RowFailure { message, remedy: None }
    }
}

impl RowFailure {
    fn at(self, line: u64) -> RowError {
        RowError {
            line,
            message: self.message,
            remedy: self.remedy,
        }
    }
}

fn row_document(
    mut object: Map<String, Value>,
    source: &str,
    line: u64,
    fields: &RowFields,
) -> Result<Document, RowFailure> {
    let text_key = pick_field(&object, fields.text.as_deref(), &RowFields::TEXT_NAMES, "text")?.ok_or_else(|| {
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        RowFailure {
            message: format!(
                "no text field (tried {}); name the field that holds the text (fields: {})",
                RowFields::TEXT_NAMES.join(", "),
                keys.join(", ")
            ),
            remedy: Some(Remedy::TextField),
        }
    })?;
    let id_key = pick_field(&object, fields.id.as_deref(), &RowFields::ID_NAMES, "id")?;
    let title_key = pick_field(&object, fields.title.as_deref(), &RowFields::TITLE_NAMES, "title")?;

    let body = scalar_text(object.remove(&text_key).unwrap_or(Value::Null), &text_key)?;
    let id = match id_key {
        Some(key) => {
            let id = scalar_text(object.remove(&key).unwrap_or(Value::Null), &key)?;
            if id.trim().is_empty() {
                return Err(format!("field {key:?} (the id) is empty").into());
            }
            id
        }
        None => format!("{}:{line}", file_document_id(source)),
    };
    let title = match title_key {
        Some(key) => scalar_text(object.remove(&key).unwrap_or(Value::Null), &key)?,
        None => String::new(),
    };
    if body.trim().is_empty() && title.trim().is_empty() {
        return Err(format!("field {text_key:?} (the text) is empty").into());
    }
    let text = if title.trim().is_empty() {
        body
    } else {
        format!("{title}\n\n{body}")
    };
    let mut metadata: Metadata = object.into_iter().collect();
    metadata.insert("line".to_string(), Value::from(line));
    Ok(Document::new(
        id,
        source.to_string(),
        title,
        text,
        Vec::new(),
        Vec::new(),
        metadata,
    ))
}

/// The field to use: the one the user named (which must then exist), else the
/// first conventional name present.
fn pick_field(
    object: &Map<String, Value>,
    named: Option<&str>,
    conventional: &[&str],
    role: &str,
) -> Result<Option<String>, String> {
    match named {
        Some(name) if object.contains_key(name) => Ok(Some(name.to_string())),
        Some(name) => Err(format!("has no field {name:?} (the {role} field)")),
        None => Ok(conventional
            .iter()
            .find(|name| object.contains_key(**name))
            .map(|name| name.to_string())),
    }
}

fn scalar_text(value: Value, key: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("field {key:?} is {}, expected a string", json_kind(&other))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_rows_become_documents_and_bad_lines_are_reported_by_number() {
        let data = concat!(
            r#"{"_id":"d1","title":"Aspirin","text":"reduces fever","year":2001}"#,
            "\n",
            "\n",
            "{not json\n",
            r#"[1,2]"#,
            "\n",
            r#"{"_id":"d2","text":{"nested":true}}"#,
            "\n",
            r#"{"_id":"d3","text":"plain"}"#,
            "\n",
        );
        let loaded = load_jsonl(data.as_bytes(), "/data/corpus.jsonl", &RowFields::default()).unwrap();
        let ids: Vec<&str> = loaded.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d1", "d3"]);
        let d1 = &loaded.documents[0];
        assert_eq!(d1.title, "Aspirin");
        assert_eq!(d1.text, "Aspirin\n\nreduces fever");
        assert_eq!(d1.metadata["year"], 2001);
        assert_eq!(d1.metadata["line"], 1);
        let errors: Vec<(u64, &str)> = loaded.row_errors.iter().map(|e| (e.line, e.message.as_str())).collect();
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].0, 3);
        assert!(errors[0].1.starts_with("invalid JSON"));
        assert_eq!(errors[1], (4, "expected a JSON object, found an array"));
        assert_eq!(errors[2], (5, "field \"text\" is an object, expected a string"));
    }

    #[test]
    fn named_fields_must_exist_and_defaults_are_reported_when_missing() {
        let fields = RowFields {
            text: Some("abstract".into()),
            id: Some("pmid".into()),
            title: None,
        };
        let ok = load_jsonl(br#"{"pmid":7,"abstract":"x"}"#, "/a.jsonl", &fields).unwrap();
        assert_eq!(ok.documents[0].id, "7");
        let missing = load_jsonl(br#"{"pmid":7,"summary":"x"}"#, "/a.jsonl", &fields).unwrap();
        assert_eq!(
            missing.row_errors[0].message,
            "has no field \"abstract\" (the text field)"
        );
        let unguessable = load_jsonl(br#"{"summary":"x"}"#, "/a.jsonl", &RowFields::default()).unwrap();
        assert_eq!(unguessable.row_errors[0].remedy, Some(Remedy::TextField));
        assert!(unguessable.row_errors[0].message.contains("summary"));
    }

    #[test]
    fn csv_rows_keep_other_columns_as_metadata_and_report_ragged_lines() {
        let data = "id,title,body,owner\n1,Leave,Ten days a year,hr\n2,Broken\n3,Travel,\"Book, then claim\",finance\n";
        let loaded = load_csv(data.as_bytes(), "/p.csv", &RowFields::default()).unwrap();
        assert_eq!(loaded.documents.len(), 2);
        assert_eq!(loaded.documents[1].text, "Travel\n\nBook, then claim");
        assert_eq!(loaded.documents[1].metadata["owner"], "finance");
        assert_eq!(loaded.row_errors[0].line, 3);
        assert_eq!(loaded.row_errors[0].message, "has 2 fields, the header has 4");
    }

    #[test]
    fn rows_without_id_get_stable_line_based_ids() {
        let a = load_jsonl(
            b"{\"text\":\"a\"}\n{\"text\":\"b\"}\n",
            "/x.jsonl",
            &RowFields::default(),
        )
        .unwrap();
        let b = load_jsonl(
            b"{\"text\":\"a\"}\n{\"text\":\"b\"}\n",
            "/x.jsonl",
            &RowFields::default(),
        )
        .unwrap();
        assert_eq!(a.documents[1].id, b.documents[1].id);
        assert!(a.documents[1].id.ends_with(":2"));
        assert_ne!(a.documents[0].id, a.documents[1].id);
    }

    #[test]
    fn an_empty_row_file_is_an_error() {
        assert!(load_jsonl(b"\n\n", "/e.jsonl", &RowFields::default()).is_err());
    }
}
