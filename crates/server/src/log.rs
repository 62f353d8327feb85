//! The server's log on stderr, one line per event: plain text for a person reading a terminal (the default), or
//! one JSON object per line for a log collector (`knowhow serve --log-format json`):
//! `{"time", "level", "event", "message", ...fields}`. In JSON every answered request is an event too (`request`,
//! with its id, key prefix, route, status and milliseconds); as text only what a person needs to see is written,
//! and the requests go to `HOME/logs/requests.jsonl` alone.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value};

static JSON: AtomicBool = AtomicBool::new(false);

/// How the log is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Sets the format for the rest of the process.
pub fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// How much an event matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Writes one event: `message` for a person, `event` and `fields` (a JSON object) for a machine.
pub fn event(level: Level, event: &str, message: &str, fields: Value) {
    let line = if json() {
        json_line(level, event, message, fields)
    } else {
        format!("knowhow serve: {message}")
    };
    // A closed stderr must not take the server down; there is nowhere left to say it.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// One answered request, written only in JSON (as text, the request log file holds them).
pub(crate) fn request(fields: Value) {
    if json() {
        let line = json_line(Level::Info, "request", "request answered", fields);
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

fn json_line(level: Level, event: &str, message: &str, fields: Value) -> String {
    let mut line = json!({
        "time": knowhow_core::time::UtcDateTime::now().rfc3339(),
        "level": level.name(),
        "event": event,
        "message": message,
    });
    if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
        for (name, value) in fields {
            line.entry(name).or_insert(value);
        }
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_event_has_its_level_name_message_and_fields_and_never_loses_its_own_keys() {
        let line = json_line(
            Level::Warn,
            "job_record",
            "cannot record job j1",
            json!({"job": "j1", "message": "a field may not overwrite the message"}),
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "warn");
        assert_eq!(value["event"], "job_record");
        assert_eq!(value["message"], "cannot record job j1");
        assert_eq!(value["job"], "j1");
        assert!(value["time"].as_str().unwrap().ends_with('Z'), "{line}");
    }
}
