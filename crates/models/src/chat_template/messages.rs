//! The conversation as transformers hands it to a template (see the module documentation of `chat_template`).

use serde_json::{Map, Value as Json};

/// Names under which transformers accepts a message's reasoning; the first present one is copied to
/// `thinking` and `reasoning_content`.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// The messages as transformers hands them to the template (see the module documentation).
pub(super) fn prepare_messages(messages: &[Json]) -> Result<Vec<Json>, String> {
    messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let Json::Object(fields) = message else {
                return Err(format!("message {index} is not a JSON object: {message}"));
            };
            let mut fields: Map<String, Json> = fields
                .iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            if let Some(Json::Array(calls)) = fields.get_mut("tool_calls") {
                calls.iter_mut().for_each(parse_string_arguments);
            }
            Ok(Json::Object(alias_reasoning(fields)))
        })
        .collect()
}

/// `{"function": {"arguments": "{\"a\": 1}"}}` → `{"function": {"arguments": {"a": 1}}}`, when the string is a
/// JSON object; anything else stays as it is.
fn parse_string_arguments(call: &mut Json) {
    let Some(arguments) = call.pointer_mut("/function/arguments") else {
        return;
    };
    if let Json::String(text) = arguments {
        if let Ok(parsed @ Json::Object(_)) = serde_json::from_str::<Json>(text) {
            *arguments = parsed;
        }
    }
}

/// transformers' `_alias_reasoning_fields`: `{"thinking": r, **message, "reasoning_content": r}`.
fn alias_reasoning(fields: Map<String, Json>) -> Map<String, Json> {
    let Some(reasoning) = REASONING_FIELDS.iter().find_map(|key| fields.get(*key)).cloned() else {
        return fields;
    };
    let mut aliased = Map::new();
    aliased.insert("thinking".into(), reasoning.clone());
    aliased.extend(fields);
    aliased.insert("reasoning_content".into(), reasoning);
    aliased
}
