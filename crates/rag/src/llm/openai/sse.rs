//! Server-Sent Events: the lines of a streamed response, grouped into events
//! whose `data` payloads are applied to the answer.

use std::io::BufRead;

use serde_json::Value;

use super::failure::Failure;
use super::response::Answer;
use crate::remote::http::start_of;

/// Reads Server-Sent Events until `[DONE]` or the end of the body, applying each `data` payload to `answer`.
pub(super) fn read_events(
    mut reader: impl BufRead,
    answer: &mut Answer,
    on_token: &mut dyn FnMut(&str),
) -> Result<(), Failure> {
    let mut data: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(Failure::Io)?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if read == 0 || text.is_empty() {
            if !data.is_empty() {
                dispatch(&std::mem::take(&mut data), answer, on_token)?;
            }
            if read == 0 || answer.done {
                return Ok(());
            }
            continue;
        }
        if text.starts_with(':') {
            continue; // a comment or keep-alive
        }
        let (field, value) = text.split_once(':').unwrap_or((text, ""));
        if field == "data" {
            let value = value.strip_prefix(' ').unwrap_or(value);
            // A server that omits the blank line between events: `[DONE]` or a new JSON object after a whole one
            // starts a new event.
            let is_done = value.trim() == "[DONE]";
            let starts_event = is_done || (value.starts_with('{') && data.iter().all(|part| parses(part)));
            if starts_event && !data.is_empty() {
                dispatch(&std::mem::take(&mut data), answer, on_token)?;
            }
            if is_done {
                answer.done = true;
                return Ok(());
            }
            data.push(value.to_string());
        }
    }
}

fn parses(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Applies one event's data (its `data:` lines joined by newlines).
fn dispatch(data: &[String], answer: &mut Answer, on_token: &mut dyn FnMut(&str)) -> Result<(), Failure> {
    let payload = data.join("\n");
    if payload.trim().is_empty() {
        return Ok(());
    }
    let chunk: Value = serde_json::from_str(&payload).map_err(|error| {
        Failure::Malformed(format!("an event's data is not JSON ({error}): {}", start_of(&payload)))
    })?;
    answer.apply(&chunk, false, on_token)
}
