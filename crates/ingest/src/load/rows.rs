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

/// CSV (TSV for `.tsv`). A quote that is never closed makes the rest of the
/// file one field, and one whose field is closed only by the quote of a later
/// row swallows the rows between; either way its row is reported, and the
/// rows after the line where the quote opened are read on their own.
pub(crate) fn load_csv(bytes: &[u8], source: &str, fields: &RowFields) -> Result<Loaded, LoadError> {
    let delimiter = if source.to_ascii_lowercase().ends_with(".tsv") {
        b'\t'
    } else {
        b','
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut headers: Option<csv::StringRecord> = None;
    let mut rows: Vec<(u64, CsvRow)> = Vec::new();
    // The part of the file still to read, and the lines before it.
    let mut start = 0;
    let mut lines_before = 0u64;
    while start < bytes.len() {
        let segment = &bytes[start..];
        let runaway = runaway_quote(segment, delimiter);
        // Up to the end of the line where a runaway quote opens: that makes
        // its row the last one read.
        let end = runaway.map_or(segment.len(), |r| {
            segment[r.opens..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(segment.len(), |i| r.opens + i + 1)
        });
        let first_row = rows.len();
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(&segment[..end]);
        for record in reader.records() {
            let line = |position: Option<&csv::Position>| lines_before + position.map_or(1, csv::Position::line);
            let (line, row) = match record {
                Ok(record) => match &headers {
                    None => {
                        headers = Some(record);
                        continue;
                    }
                    Some(headers) => (line(record.position()), CsvRow::Read(csv_row(headers, &record))),
                },
                Err(e) if headers.is_none() => {
                    return Err(LoadError::new(format!(
                        "cannot read the CSV header line: {}",
                        csv_error_message(&e)
                    )))
                }
                Err(e) => (line(e.position()), CsvRow::Read(Err(csv_error_message(&e)))),
            };
            rows.push((line, row));
        }
        let Some(runaway) = runaway else {
            break;
        };
        let line_of = |offset: usize| lines_before + 1 + count_lines(&segment[..offset]);
        let opens = line_of(runaway.opens);
        if rows.len() == first_row {
            return Err(LoadError::new(format!(
                "the CSV header line opens a quote on line {opens} that is never closed, so it would take \
                 the rows after it as header names; close the quote (a quote inside a quoted field is written \
                 twice: \"\")"
            )));
        }
        if let Some((_, row)) = rows.last_mut() {
            *row = CsvRow::Runaway {
                opens,
                closes: runaway.closes.map(line_of),
            };
        }
        lines_before += count_lines(&segment[..end]);
        start += end;
    }
    if headers.is_none() {
        return Err(LoadError::new("no rows"));
    }
    let mut loaded = Loaded::default();
    let lines: Vec<u64> = rows.iter().map(|(line, _)| *line).collect();
    for (index, (line, row)) in rows.into_iter().enumerate() {
        let result = match row {
            CsvRow::Read(Ok(object)) => row_document(object, source, line, fields),
            CsvRow::Read(Err(message)) => Err(RowFailure::from(message)),
            CsvRow::Runaway { opens, closes } => {
                let swallowed = lines[index + 1..]
                    .iter()
                    .take_while(|later| closes.is_none_or(|closes| **later <= closes))
                    .count();
                Err(runaway_failure(opens, closes, swallowed))
            }
        };
        match result {
            Ok(doc) => loaded.documents.push(doc),
            Err(failure) => loaded.row_errors.push(failure.at(line)),
        }
    }
    no_rows_at_all(loaded)
}

/// One CSV record: its fields by header name (or why they could not be
/// read), or the record a runaway quote took over, with the lines where
/// that quote opens and where the quote that closes it stands, if one does.
enum CsvRow {
    Read(Result<Map<String, Value>, String>),
    Runaway { opens: u64, closes: Option<u64> },
}

fn csv_row(headers: &csv::StringRecord, record: &csv::StringRecord) -> Result<Map<String, Value>, String> {
    if record.len() != headers.len() {
        return Err(format!("has {} fields, the header has {}", record.len(), headers.len()));
    }
    Ok(headers
        .iter()
        .zip(record.iter())
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect())
}

fn runaway_failure(opens: u64, closes: Option<u64>, swallowed: usize) -> RowFailure {
    let rows = match swallowed {
        1 => "the 1 row after it".to_string(),
        n => format!("the {n} rows after it"),
    };
    let (what, extent) = match closes {
        None => ("is never closed".to_string(), "to the end of the file".to_string()),
        Some(closes) => (
            format!(
                "is not closed on its line, and the next quote, on line {closes}, is followed by text \
                 rather than a delimiter, so it is probably never closed"
            ),
            format!("up to line {closes}"),
        ),
    };
    format!(
        "a quote opened on line {opens} {what}: read as written, this row would swallow {rows} ({extent}), \
         so it is left out and they are read on their own; close the quote (a quote inside a quoted field is \
         written twice: \"\")"
    )
    .into()
}

/// A quoted field that runs away: where its quote opens, and where the
/// quote that closes it stands, if one does.
#[derive(Clone, Copy)]
struct Runaway {
    opens: usize,
    closes: Option<usize>,
}

/// The first quoted field that never closes, or that spans lines only to be
/// closed by a quote followed by text (the opening quote of a field in a
/// later row, most likely). The states are those of the CSV reader: a quote
/// opens a field only at its start, and inside one `""` is a quote; blanks
/// after a closing quote are let pass.
fn runaway_quote(bytes: &[u8], delimiter: u8) -> Option<Runaway> {
    #[derive(Clone, Copy)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted { opens: usize, spans: bool },
        Closed { opens: usize, spans: bool, at: usize },
    }
    let ends_field = |b: u8| b == delimiter || b == b'\n' || b == b'\r';
    let mut state = State::FieldStart;
    for (at, &b) in bytes.iter().enumerate() {
        state = match state {
            State::FieldStart | State::Unquoted if ends_field(b) => State::FieldStart,
            State::FieldStart if b == b'"' => State::Quoted {
                opens: at,
                spans: false,
            },
            State::FieldStart | State::Unquoted => State::Unquoted,
            State::Quoted { opens, spans } if b == b'"' => State::Closed { opens, spans, at },
            State::Quoted { opens, spans } => State::Quoted {
                opens,
                spans: spans || b == b'\n' || b == b'\r',
            },
            State::Closed {
                opens,
                spans,
                at: close,
            } if b == b'"' && close + 1 == at => State::Quoted { opens, spans },
            State::Closed { .. } if ends_field(b) => State::FieldStart,
            State::Closed { .. } if b == b' ' || b == b'\t' => state,
            State::Closed {
                opens,
                spans: true,
                at: close,
            } => {
                return Some(Runaway {
                    opens,
                    closes: Some(close),
                })
            }
            State::Closed { .. } => State::Unquoted,
        };
    }
    match state {
        State::Quoted { opens, .. } => Some(Runaway { opens, closes: None }),
        _ => None,
    }
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn csv_error_message(e: &csv::Error) -> String {
    match e.kind() {
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

    /// An unclosed quote used to swallow every row after it (2 documents from
    /// 4 rows, no error): its row is now an error that says so, and the
    /// rows after it load.
    #[test]
    fn an_unclosed_quote_is_reported_on_its_row_and_the_rows_after_it_load() {
        let data = "id,text\n1,one\n2,\"two\n3,three\n4,four\n";
        let loaded = load_csv(data.as_bytes(), "/p.csv", &RowFields::default()).unwrap();
        let ids: Vec<&str> = loaded.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["1", "3", "4"]);
        assert_eq!(loaded.documents[2].metadata["line"], 5);
        assert_eq!(loaded.row_errors.len(), 1);
        assert_eq!(loaded.row_errors[0].line, 3);
        assert!(
            loaded.row_errors[0].message.starts_with(
                "a quote opened on line 3 is never closed: read as written, this row would swallow the 2 rows \
                 after it (to the end of the file), so it is left out"
            ),
            "{}",
            loaded.row_errors[0].message
        );
    }

    /// Where a later row quotes a field, its quote closes the runaway one and
    /// the rows between vanish into a field the reader takes as valid.
    #[test]
    fn a_quote_closed_only_by_a_later_row_is_reported_too() {
        let data = concat!(
            "id,title,text\n",
            "1,Leave,\"Ten days a year, \"\"paid\"\"\"\n",
            "2,Travel,\"Book first\n",
            "3,Laptops,\"Returned\non the last day\"  \n",
            "4,Expenses,Filed monthly\n",
        );
        let loaded = load_csv(data.as_bytes(), "/p.csv", &RowFields::default()).unwrap();
        let ids: Vec<&str> = loaded.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["1", "3", "4"]);
        assert_eq!(loaded.documents[0].text, "Leave\n\nTen days a year, \"paid\"");
        assert_eq!(loaded.documents[1].text, "Laptops\n\nReturned\non the last day  ");
        let error = &loaded.row_errors[0];
        assert_eq!((loaded.row_errors.len(), error.line), (1, 3));
        assert!(
            error.message.starts_with(
                "a quote opened on line 3 is not closed on its line, and the next quote, on line 4, is followed \
                 by text"
            ),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("swallow the 1 row after it (up to line 4)"),
            "{}",
            error.message
        );
    }

    #[test]
    fn every_runaway_quote_is_found_and_one_in_the_header_fails_the_file() {
        let data = "id\ttext\n1\t\"open\n2\tfine\n3\tsplit \"\"x\n4\t\"\"\"open again\n5\tlast\n";
        let loaded = load_csv(data.as_bytes(), "/p.tsv", &RowFields::default()).unwrap();
        let ids: Vec<&str> = loaded.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["2", "3", "5"]);
        assert_eq!(loaded.documents[1].text, "split \"\"x");
        let lines: Vec<u64> = loaded.row_errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 5]);
        let messages: Vec<&str> = loaded.row_errors.iter().map(|e| e.message.as_str()).collect();
        assert!(
            messages[0].contains("the 3 rows after it (up to line 5)"),
            "{}",
            messages[0]
        );
        assert!(
            messages[1].contains("the 1 row after it (to the end of the file)"),
            "{}",
            messages[1]
        );

        let err = load_csv(b"id,\"text\n1,a\n", "/h.csv", &RowFields::default()).unwrap_err();
        assert!(err.message.contains("header line opens a quote on line 1"), "{err}");
        let runaway = |csv: &[u8]| runaway_quote(csv, b',').map(|r| (r.opens, r.closes));
        assert_eq!(runaway(b"a,\"b\"\"\nc\",d\n\"e\"\"\"f\n"), None);
        assert_eq!(runaway(b"a,b\"c\n\"d"), Some((6, None)));
        assert_eq!(runaway(b"\"a\nb\"c"), Some((0, Some(4))));
        assert_eq!(runaway(b"\"a\nb\" \t,c"), None);
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
