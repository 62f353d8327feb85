//! `POST /v1/embeddings`, as OpenAI defines it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{ApiError, AppState};

/// The most texts one request may embed (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// The request body; fields OpenAI defines that do not change the answer (`user`) and unknown fields are ignored.
#[derive(Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
}

/// How vectors are written in the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Float,
    /// Little-endian f32 bytes, base64: what the official Python SDK asks for by default.
    Base64,
}

pub(crate) async fn embeddings(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: EmbeddingsRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("body", format!("the request body is not an embeddings request: {e}")))?;
    let texts = texts(&request.input)?;
    let encoding = match request.encoding_format.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format {other:?} is not one of \"float\", \"base64\""),
            ))
        }
    };
    let Some(embedder) = state.embedder.get().cloned() else {
        return Err(ApiError::unavailable("the embedding model is still loading", 1));
    };
    if request.model != embedder.pin.id && request.model != "default" {
        return Err(ApiError {
            param: Some("model"),
            ..ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "model_not_found",
                format!(
                    "model {:?} is not served here: this server embeds with {:?} (or say \"default\"); \
                     GET /v1/models lists what it serves",
                    request.model, embedder.pin.id
                ),
            )
        });
    }
    if let Some(dimensions) = request.dimensions {
        if dimensions != u64::from(embedder.pin.dimension) {
            return Err(ApiError::invalid(
                "dimensions",
                format!(
                    "{} gives {}-dimensional vectors and cannot shorten them; leave dimensions out or send {}",
                    embedder.pin.id, embedder.pin.dimension, embedder.pin.dimension
                ),
            ));
        }
    }
    let model_id = embedder.pin.id.clone();
    let (vectors, tokens) = state
        .retrieval
        .run(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let tokens: usize = match embedder.embedder.token_counter() {
                Some(model) => refs.iter().map(|t| model.count_tokens(t)).sum(),
                None => 0,
            };
            // The error as text: it crosses back to the runtime only to be reported.
            embedder
                .embedder
                .embed(&refs)
                .map(|vectors| (vectors, tokens))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(ApiError::from)?
        .map_err(|e| ApiError::internal(format!("embedding failed: {e}")))?;
    state.metrics.embedded(vectors.len());
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| json!({"object": "embedding", "index": index, "embedding": encode(vector, encoding)}))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// The texts of `input`: a string or a list of strings. Token-id arrays (OpenAI accepts them for its own
/// tokenizers) mean nothing to another model, so they are refused with what to send instead.
fn texts(input: &Value) -> Result<Vec<String>, ApiError> {
    let token_ids = || {
        ApiError::invalid(
            "input",
            "input holds token ids, which only mean something to the tokenizer that made them: send the text \
             itself, as a string or a list of strings",
        )
    };
    let texts = match input {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Number(_) | Value::Array(_) => Err(token_ids()),
                _ => Err(ApiError::invalid(
                    "input",
                    "input must be a string or a list of strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::invalid(
                "input",
                "input must be a string or a list of strings",
            ))
        }
    };
    if texts.is_empty() {
        return Err(ApiError::invalid(
            "input",
            "input is an empty list: send at least one text",
        ));
    }
    if texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!("input has {} texts; at most {MAX_INPUTS} per request", texts.len()),
        ));
    }
    if let Some(index) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::invalid(
            "input",
            format!("input[{index}] is empty: there is nothing to embed"),
        ));
    }
    Ok(texts)
}

fn encode(vector: &[f32], encoding: Encoding) -> Value {
    match encoding {
        Encoding::Float => json!(vector),
        Encoding::Base64 => {
            let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_a_string_or_strings_and_token_ids_are_refused_on_the_input_field() {
        assert_eq!(texts(&json!("a cat")).unwrap(), ["a cat"]);
        assert_eq!(texts(&json!(["a", "b"])).unwrap(), ["a", "b"]);
        for bad in [
            json!([1, 2, 3]),
            json!([[1, 2], [3]]),
            json!([]),
            json!(""),
            json!([""]),
            json!(5),
        ] {
            let error = texts(&bad).unwrap_err();
            assert_eq!((error.status.as_u16(), error.param), (400, Some("input")), "{bad}");
        }
        assert!(texts(&json!([7])).unwrap_err().message.contains("token ids"));
    }

    #[test]
    fn base64_is_the_little_endian_f32_bytes() {
        let vector = [1.0f32, -0.5, f32::MIN_POSITIVE];
        let Value::String(text) = encode(&vector, Encoding::Base64) else {
            panic!("base64 is a string");
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
        let back: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(back, vector);
        assert_eq!(encode(&vector, Encoding::Float), json!([1.0, -0.5, f32::MIN_POSITIVE]));
    }
}
