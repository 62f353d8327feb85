//! `POST /v1/rerank` in the shape of Hugging Face's Text Embeddings Inference: `{query, texts}` →
//! `[{index, score}]`, best first, scored by the served cross-encoder (`knowhow serve --rerank-model M`). So any
//! TEI client, knowhow's own `--rerank-model tei:URL` among them, re-ranks with it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use knowhow_rag::Reranker;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{ApiError, AppState};

/// The most texts one request may score.
const MAX_TEXTS: usize = 1024;

/// The request body; TEI's `truncate` and `truncation_direction` are accepted and ignored (pairs are always cut to
/// the model's length, the passage first), as are unknown fields.
#[derive(Deserialize)]
struct RerankRequest {
    query: String,
    texts: Vec<String>,
    /// The logits as the model gives them, instead of their sigmoid (TEI's default is the sigmoid).
    #[serde(default)]
    raw_scores: bool,
    /// Each result carries its text.
    #[serde(default)]
    return_text: bool,
}

pub(crate) async fn rerank(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: RerankRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the request body is not a rerank request ({{\"query\": TEXT, \"texts\": [TEXT, ...]}}): {e}"),
        )
    })?;
    if request.texts.is_empty() {
        return Err(ApiError::invalid(
            "texts",
            "texts is empty: send at least one text to score",
        ));
    }
    if request.texts.len() > MAX_TEXTS {
        return Err(ApiError::invalid(
            "texts",
            format!(
                "{} texts in one request; at most {MAX_TEXTS}: split them",
                request.texts.len()
            ),
        ));
    }
    let Some(reranker) = state.reranker.get().cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            "this server holds no re-ranking model: start it with --rerank-model MODEL",
        ));
    };
    let RerankRequest {
        query,
        texts,
        raw_scores,
        return_text,
    } = request;
    let scored = state
        .workers
        .run(move || {
            let passages: Vec<&str> = texts.iter().map(String::as_str).collect();
            let scores = reranker
                .score(&query, &passages)
                .map_err(|e| ApiError::internal(format!("re-ranking failed: {e}")))?;
            // A remote re-ranker already answers in its own scale.
            let sigmoid = !raw_scores && matches!(*reranker, Reranker::Local(_));
            let mut scored: Vec<(usize, f32)> = scores
                .into_iter()
                .map(|s| if sigmoid { 1.0 / (1.0 + (-s).exp()) } else { s })
                .enumerate()
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            Ok::<_, ApiError>(
                scored
                    .into_iter()
                    .map(|(index, score)| {
                        let mut result = json!({"index": index, "score": score});
                        if return_text {
                            result["text"] = json!(texts[index]);
                        }
                        result
                    })
                    .collect::<Vec<Value>>(),
            )
        })
        .await??;
    Ok(Json(Value::Array(scored)))
}
