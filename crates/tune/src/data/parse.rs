//! JSONL rows in the shapes people have, each detected per line and normalized to a [`Conversation`].
//!
//! | shape | keys | becomes |
//! |---|---|---|
//! | prompt/completion | `prompt`, `completion` | user `prompt`, trained assistant `completion` |
//! | chat (OpenAI) | `messages: [{role, content, weight?}]` | the messages; assistant turns with `"weight": 0` untrained |
//! | Alpaca | `instruction`, `input`?, `output`, `system`? | user `instruction` (+ blank line + `input` when non-empty), trained assistant `output` |
//!
//! Other keys (ids, metadata) are ignored. A line that fails is a [`LineError`] naming its line and field; the
//! other lines still parse. Blank lines are skipped, a UTF-8 byte order mark and `\r\n` line ends are accepted.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use super::conversation::{Conversation, Message, Role};

/// Which shape a row was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    PromptCompletion,
    Chat,
    Alpaca,
}

/// Valid rows per shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShapeCounts {
    pub prompt_completion: usize,
    pub chat: usize,
    pub alpaca: usize,
}

impl ShapeCounts {
    pub fn add(&mut self, shape: Shape) {
        match shape {
            Shape::PromptCompletion => self.prompt_completion += 1,
            Shape::Chat => self.chat += 1,
            Shape::Alpaca => self.alpaca += 1,
        }
    }
}

/// A valid row and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line number in its file.
    pub line: usize,
    pub shape: Shape,
    pub conversation: Conversation,
}

/// Why one line is not a valid row. Displays as `FILE: line N: MESSAGE`, where the message names the field
/// (`field \`completion\` must be a string, got number`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// The offending field as a path (`messages[2].content`), when one field is at fault.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: line {}: {}", self.file, self.line, self.message)
    }
}

/// The result of parsing one file's lines.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// Lines read, blank ones included.
    pub lines: usize,
    pub rows: Vec<Row>,
    pub errors: Vec<LineError>,
}

/// Parses JSONL bytes; `file` names the source in errors. Never fails as a whole: bad lines become errors.
pub fn parse_jsonl(bytes: &[u8], file: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.is_empty() {
        return parsed;
    }
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        parsed.lines += 1;
        let number = index + 1;
        match parse_line(line) {
            Ok(None) => {}
            Ok(Some((shape, conversation))) => parsed.rows.push(Row {
                line: number,
                shape,
                conversation,
            }),
            Err(failure) => parsed.errors.push(LineError {
                file: file.to_string(),
                line: number,
                field: failure.field,
                message: failure.message,
            }),
        }
    }
    parsed
}

/// A line's failure before the file and line number are attached.
struct Failure {
    field: Option<String>,
    message: String,
}

impl Failure {
    fn line(message: impl Into<String>) -> Failure {
        Failure {
            field: None,
            message: message.into(),
        }
    }

    fn field(field: &str, message: impl fmt::Display) -> Failure {
        Failure {
            field: Some(field.to_string()),
            message: format!("field `{field}` {message}"),
        }
    }
}

/// `Ok(None)` for a blank line.
fn parse_line(line: &[u8]) -> Result<Option<(Shape, Conversation)>, Failure> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        Failure::line(format!(
            "not valid UTF-8 (invalid byte at column {})",
            e.valid_up_to() + 1
        ))
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| Failure::line(json_error(&e)))?;
    let Value::Object(object) = value else {
        return Err(Failure::line(format!("expected a JSON object, got {}", kind(&value))));
    };
    let shape = detect_shape(&object)?;
    let conversation = match shape {
        Shape::PromptCompletion => prompt_completion(&object)?,
        Shape::Chat => chat(&object)?,
        Shape::Alpaca => alpaca(&object)?,
    };
    Ok(Some((shape, conversation)))
}

fn detect_shape(object: &Map<String, Value>) -> Result<Shape, Failure> {
    let has = |key: &str| object.contains_key(key);
    let candidates: Vec<Shape> = [
        (Shape::Chat, has("messages")),
        (Shape::PromptCompletion, has("prompt") || has("completion")),
        (Shape::Alpaca, has("instruction") || has("output")),
    ]
    .into_iter()
    .filter_map(|(shape, present)| present.then_some(shape))
    .collect();
    match candidates.as_slice() {
        [shape] => Ok(*shape),
        [] => {
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let found = if keys.is_empty() {
                "no keys".to_string()
            } else {
                format!(
                    "keys {}",
                    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                )
            };
            Err(Failure::line(format!(
                "unknown row shape: expected `messages` (chat), `prompt` + `completion`, or `instruction` + \
                 `output` (Alpaca); found {found}"
            )))
        }
        _ => Err(Failure::line(
            "ambiguous row shape: use only one of `messages` (chat), `prompt` + `completion`, or `instruction` + \
             `output` (Alpaca)",
        )),
    }
}

fn prompt_completion(object: &Map<String, Value>) -> Result<Conversation, Failure> {
    let prompt = required_string(object, "prompt", "prompt")?;
    let completion = required_string(object, "completion", "completion")?;
    non_empty(completion, "completion")?;
    Ok(Conversation {
        messages: vec![Message::user(prompt), Message::assistant(completion)],
    })
}

fn alpaca(object: &Map<String, Value>) -> Result<Conversation, Failure> {
    let system = optional_string(object, "system", "system")?;
    let instruction = required_string(object, "instruction", "instruction")?;
    let input = optional_string(object, "input", "input")?;
    let output = required_string(object, "output", "output")?;
    non_empty(instruction, "instruction")?;
    non_empty(output, "output")?;
    let mut messages = Vec::with_capacity(3);
    if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
        messages.push(Message::system(system));
    }
    let user = match input.filter(|s| !s.trim().is_empty()) {
        Some(input) => format!("{instruction}\n\n{input}"),
        None => instruction.to_string(),
    };
    messages.push(Message::user(user));
    messages.push(Message::assistant(output));
    Ok(Conversation { messages })
}

fn chat(object: &Map<String, Value>) -> Result<Conversation, Failure> {
    let items = match &object["messages"] {
        Value::Array(items) => items,
        other => {
            return Err(Failure::field(
                "messages",
                format!("must be an array, got {}", kind(other)),
            ))
        }
    };
    if items.is_empty() {
        return Err(Failure::field("messages", "is empty"));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let path = format!("messages[{index}]");
        let Value::Object(message) = item else {
            return Err(Failure::field(&path, format!("must be an object, got {}", kind(item))));
        };
        let role_path = format!("{path}.role");
        let role = match required_string(message, "role", &role_path)? {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(Failure::field(
                    &role_path,
                    format!("must be `system`, `user` or `assistant`, got `{other}`"),
                ))
            }
        };
        let content_path = format!("{path}.content");
        let content = content(message, &content_path)?;
        let weight_path = format!("{path}.weight");
        let train = match message.get("weight") {
            None => role == Role::Assistant,
            Some(_) if role != Role::Assistant => {
                return Err(Failure::field(&weight_path, "is only allowed on assistant messages"))
            }
            Some(weight) => match weight.as_f64() {
                Some(0.0) => false,
                Some(1.0) => true,
                _ => return Err(Failure::field(&weight_path, format!("must be 0 or 1, got {weight}"))),
            },
        };
        if train {
            non_empty(&content, &content_path)?;
        }
        messages.push(Message { role, content, train });
    }
    let conversation = Conversation { messages };
    if conversation.trained_turns().next().is_none() {
        return Err(Failure::field(
            "messages",
            "has no assistant message to train on (there is none, or every one has \"weight\": 0)",
        ));
    }
    Ok(conversation)
}

/// A message's content: a string, or OpenAI's list of `{"type": "text", "text": ...}` parts, joined.
fn content(message: &Map<String, Value>, path: &str) -> Result<String, Failure> {
    match message.get("content") {
        None => Err(Failure::field(path, "is missing")),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (index, part) in parts.iter().enumerate() {
                let part_path = format!("{path}[{index}]");
                let Value::Object(part) = part else {
                    return Err(Failure::field(
                        &part_path,
                        format!("must be an object, got {}", kind(part)),
                    ));
                };
                let kind_path = format!("{part_path}.type");
                match required_string(part, "type", &kind_path)? {
                    "text" => text.push_str(required_string(part, "text", &format!("{part_path}.text"))?),
                    other => {
                        return Err(Failure::field(
                            &kind_path,
                            format!("must be `text` (got `{other}`): only text is trained"),
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(other) => Err(Failure::field(path, format!("must be a string, got {}", kind(other)))),
    }
}

fn required_string<'a>(object: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, Failure> {
    match object.get(key) {
        None => Err(Failure::field(path, "is missing")),
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(Failure::field(path, format!("must be a string, got {}", kind(other)))),
    }
}

/// Absent and `null` both mean "not given".
fn optional_string<'a>(object: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>, Failure> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(Failure::field(path, format!("must be a string, got {}", kind(other)))),
    }
}

fn non_empty(text: &str, path: &str) -> Result<(), Failure> {
    if text.trim().is_empty() {
        return Err(Failure::field(path, "is empty: there is nothing to train on"));
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// serde_json's message with its "at line 1 column N" (always line 1 here) replaced by the column alone.
fn json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("invalid JSON at column {}: {message}", error.column()),
        None => format!("invalid JSON: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<(Shape, Conversation), LineError> {
        let mut parsed = parse_jsonl(line.as_bytes(), "data.jsonl");
        match (parsed.rows.pop(), parsed.errors.pop()) {
            (Some(row), None) => Ok((row.shape, row.conversation)),
            (None, Some(error)) => Err(error),
            other => panic!("expected exactly one row or error, got {other:?}"),
        }
    }

    fn error(line: &str) -> String {
        one(line).expect_err("line should be rejected").to_string()
    }

    #[test]
    fn prompt_completion_becomes_user_and_trained_assistant() {
        let (shape, conversation) = one(r#"{"prompt": "2+2?", "completion": " 4", "id": 7}"#).unwrap();
        assert_eq!(shape, Shape::PromptCompletion);
        assert_eq!(
            conversation.messages,
            vec![Message::user("2+2?"), Message::assistant(" 4")]
        );
    }

    #[test]
    fn chat_keeps_roles_and_weights() {
        let line = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "draft", "weight": 0}, {"role": "user", "content": "again"},
            {"role": "assistant", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}], "weight": 1}]}"#;
        let (shape, conversation) = one(&line.replace('\n', " ")).unwrap();
        assert_eq!(shape, Shape::Chat);
        let mut draft = Message::assistant("draft");
        draft.train = false;
        assert_eq!(
            conversation.messages,
            vec![
                Message::system("Be brief."),
                Message::user("hi"),
                draft,
                Message::user("again"),
                Message::assistant("hello"),
            ]
        );
    }

    #[test]
    fn alpaca_joins_instruction_and_input() {
        let (shape, conversation) =
            one(r#"{"instruction": "Translate.", "input": "chat", "output": "cat", "system": "You translate."}"#)
                .unwrap();
        assert_eq!(shape, Shape::Alpaca);
        assert_eq!(
            conversation.messages,
            vec![
                Message::system("You translate."),
                Message::user("Translate.\n\nchat"),
                Message::assistant("cat")
            ]
        );
        let (_, no_input) = one(r#"{"instruction": "Say hi.", "input": "", "output": "hi"}"#).unwrap();
        assert_eq!(
            no_input.messages,
            vec![Message::user("Say hi."), Message::assistant("hi")]
        );
    }

    #[test]
    fn field_errors_name_the_line_and_field() {
        let text = "\n{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"a\", \"completion\": 3}\n";
        let parsed = parse_jsonl(text.as_bytes(), "train.jsonl");
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(parsed.rows[0].line, 2);
        assert_eq!(parsed.errors.len(), 1);
        let error = &parsed.errors[0];
        assert_eq!(
            error.to_string(),
            "train.jsonl: line 4: field `completion` must be a string, got number"
        );
        assert_eq!(error.field.as_deref(), Some("completion"));
    }

    #[test]
    fn each_kind_of_bad_line_is_reported() {
        let cases = [
            (r#"{"prompt": "a"}"#, "field `completion` is missing"),
            (r#"{"prompt": "a", "completion": "  "}"#, "field `completion` is empty"),
            (r#"{"prompt": null, "completion": "b"}"#, "field `prompt` must be a string, got null"),
            (r#"{"messages": {}}"#, "field `messages` must be an array, got object"),
            (r#"{"messages": []}"#, "field `messages` is empty"),
            (r#"{"messages": ["hi"]}"#, "field `messages[0]` must be an object, got string"),
            (r#"{"messages": [{"content": "hi"}]}"#, "field `messages[0].role` is missing"),
            (r#"{"messages": [{"role": "tool", "content": "x"}]}"#, "field `messages[0].role` must be"),
            (r#"{"messages": [{"role": "user", "content": 5}]}"#, "field `messages[0].content` must be a string, got number"),
            (r#"{"messages": [{"role": "user"}]}"#, "field `messages[0].content` is missing"),
            (
                r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]}"#,
                "field `messages[1].weight` must be 0 or 1, got 2",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]}"#,
                "field `messages[0].weight` is only allowed on assistant messages",
            ),
            (r#"{"messages": [{"role": "user", "content": "q"}]}"#, "field `messages` has no assistant message"),
            (
                r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}"#,
                "field `messages` has no assistant message",
            ),
            (
                r#"{"messages": [{"role": "assistant", "content": [{"type": "image_url"}]}]}"#,
                "field `messages[0].content[0].type` must be `text`",
            ),
            (r#"{"instruction": "x", "output": 1}"#, "field `output` must be a string, got number"),
            (r#"{"instruction": "x", "input": [], "output": "y"}"#, "field `input` must be a string, got array"),
            (r#"{"text": "x"}"#, "unknown row shape: expected `messages` (chat), `prompt` + `completion`, or `instruction` + `output` (Alpaca); found keys `text`"),
            (r#"{"prompt": "a", "completion": "b", "messages": []}"#, "ambiguous row shape"),
            ("[1, 2]", "expected a JSON object, got array"),
            ("{\"prompt\": \"a\",", "invalid JSON at column 15: EOF while parsing"),
        ];
        for (line, expected) in cases {
            let message = error(line);
            assert!(message.starts_with("data.jsonl: line 1: "), "{message}");
            assert!(
                message.contains(expected),
                "{line}\n  gave: {message}\n  want: {expected}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_a_line_error_and_the_rest_parses() {
        let mut bytes = b"{\"prompt\": \"a\", \"completion\": \"b\"}\n".to_vec();
        bytes.extend_from_slice(b"{\"prompt\": \"\xff\"}\n");
        bytes.extend_from_slice(b"{\"prompt\": \"c\", \"completion\": \"d\"}");
        let parsed = parse_jsonl(&bytes, "f.jsonl");
        assert_eq!(parsed.rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(
            parsed.errors[0].to_string(),
            "f.jsonl: line 2: not valid UTF-8 (invalid byte at column 13)"
        );
        assert_eq!(parsed.lines, 3);
    }

    #[test]
    fn bom_crlf_and_missing_final_newline_are_accepted() {
        let text =
            "\u{feff}{\"prompt\": \"a\", \"completion\": \"b\"}\r\n\r\n  \n{\"prompt\": \"c\", \"completion\": \"d\"}";
        let parsed = parse_jsonl(text.as_bytes(), "f.jsonl");
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(parsed.lines, 4);
    }

    #[test]
    fn normalized_lines_parse_back_to_the_same_conversation() {
        let line = r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x", "weight": 0}, {"role": "user", "content": "r"}, {"role": "assistant", "content": "y"}]}"#;
        let (_, conversation) = one(line).unwrap();
        let (_, again) = one(&conversation.to_json_line()).unwrap();
        assert_eq!(again, conversation);
    }
}
