//! The knowledge-base API: collections, their documents, search and ask, in the caller's namespace.
//!
//! ```text
//! GET    /v1/collections                              list (read)
//! POST   /v1/collections              {"name"}        create (admin)
//! DELETE /v1/collections/{c}                          drop (admin)
//! GET    /v1/collections/{c}/documents                list (read)
//! GET    /v1/collections/{c}/documents/{id}           one, with its chunks (read)
//! DELETE /v1/collections/{c}/documents/{id}           remove (write)
//! POST   /v1/collections/{c}/search   {"query", "mode", "k", "filters"}   ranked chunks, per-stage scores
//! POST   /v1/collections/{c}/ask      {"question", "mode", "k"}           the answer JSON of `knowhow ask --json`
//! POST   /v1/collections/{c}/documents, /v1/jobs/{id}: uploads and their jobs (see [`crate::upload`])
//! ```
//!
//! A collection of another namespace is answered exactly like one that does not exist (404), so a key learns
//! nothing about other tenants. Index work runs off the async runtime: searches and answers (which embed) on the
//! model workers, catalog reads on tokio's blocking pool.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use knowhow_core::CollectionRef;
use knowhow_index::{Filter, ScoredChunk};
use knowhow_rag::answer::{answer, AnswerContext, AnswerError, AnswerMode, AnswerOptions, Backend, PromptTemplates};
use knowhow_rag::{Mode, Options, Retriever, StageTimes};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{no_collection, Caller};
use crate::keys::Role;
use crate::{ApiError, AppState};

/// The most chunks one search or answer may ask for.
const MAX_K: usize = 100;

pub(crate) fn routes(max_upload_bytes: usize) -> Router<Arc<AppState>> {
    let upload = post(crate::upload::upload).layer(axum::extract::DefaultBodyLimit::max(max_upload_bytes));
    Router::new()
        .route("/v1/collections", get(list).post(create))
        .route("/v1/collections/{collection}", axum::routing::delete(drop_collection))
        .route("/v1/collections/{collection}/documents", get(documents).merge(upload))
        .route("/v1/jobs/{id}", get(crate::upload::job))
        .route("/v1/jobs/{id}/events", get(crate::upload::events))
        .route(
            "/v1/collections/{collection}/documents/{*id}",
            get(document).delete(remove_document),
        )
        .route("/v1/collections/{collection}/search", post(search))
        .route("/v1/collections/{collection}/ask", post(ask))
}

/// The index's errors as answers: a missing collection is 404, a busy one 409 with a retry.
pub(crate) fn index_error(collection: &CollectionRef, error: knowhow_index::Error) -> ApiError {
    match error {
        knowhow_index::Error::NoSuchCollection(_) => ApiError::not_found(no_collection(&collection.collection)),
        knowhow_index::Error::Busy(_) => ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "collection_busy",
                format!(
                    "an ingest is writing to {:?} right now; retry when it is done",
                    collection.collection
                ),
            )
        },
        knowhow_index::Error::CollectionExists(_) => ApiError::new(
            StatusCode::CONFLICT,
            "collection_exists",
            format!(
                "a collection {:?} already exists in this namespace",
                collection.collection
            ),
        ),
        error @ knowhow_index::Error::NoModel(_) => ApiError::invalid("mode", error.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

pub(crate) fn rag_error(collection: &CollectionRef, error: knowhow_rag::Error) -> ApiError {
    match error {
        knowhow_rag::Error::Index(error) => index_error(collection, error),
        error @ (knowhow_rag::Error::FilterNeedsDense(_)
        | knowhow_rag::Error::NeedsModel(..)
        | knowhow_rag::Error::QueryModelNotHeld { .. }) => ApiError::invalid("mode", error.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

/// An answer that could not be written: the request's fault (a mode the collection cannot serve, a question longer
/// than the model's context) is 400, the model's or the server's 500.
pub(crate) fn answer_error(collection: &CollectionRef, error: AnswerError) -> ApiError {
    match error {
        AnswerError::Retrieve(error) => rag_error(collection, *error),
        AnswerError::Index(error) => index_error(collection, error),
        AnswerError::Llm(error) => crate::chat::llm_error(error),
        error @ (AnswerError::TooLongForContext { .. } | AnswerError::AgenticNeedsModel) => {
            ApiError::invalid("mode", error.to_string())
        }
        error @ AnswerError::PromptTooLong { .. } => ApiError::invalid("max_tokens", error.to_string()),
        other @ (AnswerError::Template { .. } | AnswerError::TemplateFile { .. } | AnswerError::Audit { .. }) => {
            ApiError::internal(other.to_string())
        }
    }
}

/// Runs blocking index work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("the request's work failed: {e}")))?
}

/// A query or question of only white space finds nothing and would be answered with an empty 200: refused instead.
fn not_blank(text: &str, field: &'static str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            field,
            format!("{field} is empty: send the text to look for"),
        ));
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", format!("the request body is not {what}: {e}")))
}

async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let namespace = caller.namespace()?;
    let home = state.home.clone();
    let data = blocking(move || {
        let collections = home.list().map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(collections
            .into_iter()
            .filter(|c| c.namespace == namespace)
            .map(|c| {
                let model = home.open_reader(&c).ok().and_then(|r| r.model_pin().ok().flatten());
                json!({"id": c.collection, "object": "collection", "namespace": c.namespace,
                       "embedding_model": model.map(|pin| pin.id)})
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(json!({"object": "list", "data": data})))
}

#[derive(Deserialize)]
struct CreateRequest {
    name: String,
}

async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin, "creating a collection")?;
    let request: CreateRequest = parse(&body, "{\"name\": COLLECTION}")?;
    let collection = CollectionRef::new(&caller.namespace()?, &request.name)
        .map_err(|e| ApiError::invalid("name", e.to_string()))?;
    let home = state.home.clone();
    let created = collection.clone();
    blocking(move || home.create(&created).map_err(|e| index_error(&created, e))).await?;
    let body = json!({"id": collection.collection, "object": "collection", "namespace": collection.namespace});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn drop_collection(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let collection = caller.collection(&name)?;
    caller.require(Role::Admin, "dropping a collection")?;
    state.forget_reader(&collection);
    let home = state.home.clone();
    let dropped = collection.clone();
    blocking(move || home.drop_collection(&dropped).map_err(|e| index_error(&dropped, e))).await?;
    Ok(Json(
        json!({"id": collection.collection, "object": "collection", "deleted": true}),
    ))
}

async fn documents(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let collection = caller.collection(&name)?;
    let home = state.home.clone();
    let data = blocking(move || {
        let catalog = home
            .open_catalog(&collection)
            .map_err(|e| index_error(&collection, e))?;
        let documents = catalog.documents().map_err(|e| index_error(&collection, e))?;
        Ok(documents
            .iter()
            .map(|s| {
                json!({"id": s.document.id, "title": s.document.title, "source": s.document.source,
                       "chunks": s.chunk_count, "hash": s.document.hash, "ingested_at": s.ingested_at})
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn document(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let collection = caller.collection(&name)?;
    let home = state.home.clone();
    blocking(move || {
        let catalog = home
            .open_catalog(&collection)
            .map_err(|e| index_error(&collection, e))?;
        let Some((stored, chunks)) = catalog.document(&id).map_err(|e| index_error(&collection, e))? else {
            return Err(ApiError::not_found(format!("no document {id:?} in {name:?}")));
        };
        let doc = &stored.document;
        let chunks: Vec<Value> = chunks
            .iter()
            .map(|c| {
                let at = &c.location;
                json!({"ordinal": c.id.ordinal, "heading_path": at.heading_path, "pages": at.pages,
                       "start": at.start, "end": at.end, "char_start": at.char_start, "char_end": at.char_end,
                       "tokens": c.tokens, "text": c.text})
            })
            .collect();
        Ok(Json(json!({
            "id": doc.id, "title": doc.title, "source": doc.source, "hash": doc.hash,
            "metadata": doc.metadata, "sections": doc.sections, "pages": doc.pages,
            "characters": doc.text.chars().count(), "ingested_at": stored.ingested_at, "chunks": chunks,
        })))
    })
    .await
}

async fn remove_document(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let collection = caller.collection(&name)?;
    caller.require(Role::Write, "removing a document")?;
    let home = state.home.clone();
    blocking(move || {
        let mut writer = home
            .open_writer(&collection, false)
            .map_err(|e| index_error(&collection, e))?;
        let removed = writer.remove_document(&id).map_err(|e| index_error(&collection, e))?;
        writer.finish().map_err(|e| index_error(&collection, e))?;
        if !removed {
            return Err(ApiError::not_found(format!("no document {id:?} in {name:?}")));
        }
        Ok(Json(json!({"id": id, "object": "document", "deleted": true})))
    })
    .await
}

#[derive(Deserialize)]
struct SearchRequest {
    query: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    k: Option<usize>,
    /// Metadata KEY: VALUE pairs every hit's document must have (dense mode).
    #[serde(default)]
    filters: Option<std::collections::BTreeMap<String, String>>,
}

fn mode(name: Option<&str>) -> Result<Option<Mode>, ApiError> {
    name.map(|n| n.parse::<Mode>().map_err(|e| ApiError::invalid("mode", e)))
        .transpose()
}

pub(crate) fn k(requested: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match requested.unwrap_or(default) {
        0 => Err(ApiError::invalid("k", "k must be at least 1")),
        k if k > MAX_K => Err(ApiError::invalid("k", format!("k is at most {MAX_K}"))),
        k => Ok(k),
    }
}

async fn search(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let collection = caller.collection(&name)?;
    let request: SearchRequest = parse(&body, "a search request ({\"query\": TEXT})")?;
    not_blank(&request.query, "query")?;
    let requested = mode(request.mode.as_deref())?;
    let k = k(request.k, 10)?;
    let options = Options {
        filter: request.filters.map(|pairs| Filter {
            metadata: pairs.into_iter().collect(),
        }),
        ..Options::default()
    };
    let reader = state.reader(&collection).await?;
    let embedder = state.embedder.get().cloned();
    let reranker = state.reranker.get().cloned();
    let work_state = state.clone();
    let answer = state
        .retrieval
        .run(move || -> Result<Value, ApiError> {
            let retriever = Retriever::with_models(&reader, &collection, requested, &options, embedder, reranker)
                .map_err(|e| rag_error(&collection, e))?;
            let mut times = StageTimes::default();
            let retrieved = retriever
                .retrieve_timed(&reader, &request.query, k, &mut times)
                .map_err(|e| rag_error(&collection, e))?;
            for (stage, took) in times.stages {
                work_state.metrics.stage(stage, took.as_secs_f64());
            }
            let started = Instant::now();
            let scored: Vec<ScoredChunk> = retrieved
                .iter()
                .map(|r| ScoredChunk {
                    id: r.id.clone(),
                    score: r.score,
                })
                .collect();
            let hits = reader
                .hits(&request.query, &scored)
                .map_err(|e| index_error(&collection, e))?;
            work_state.metrics.stage("snippets", started.elapsed().as_secs_f64());
            let data: Vec<Value> = hits
                .iter()
                .filter_map(|hit| {
                    let r = retrieved.iter().find(|r| r.id == hit.id)?;
                    Some(json!({
                        "document_id": hit.id.document_id, "chunk": hit.id.ordinal, "title": hit.title,
                        "source": hit.source, "heading_path": hit.heading_path,
                        "pages": hit.pages.map(|(a, b)| json!([a, b])),
                        "snippet": hit.snippet.text, "highlights": hit.snippet.highlights,
                        "score": hit.score,
                        "scores": {"lexical": r.lexical_score, "dense": r.dense_score, "fused": r.fused_score,
                                   "rerank": r.rerank_score},
                        "ranks": {"lexical": r.lexical_rank, "dense": r.dense_rank},
                    }))
                })
                .collect();
            Ok(json!({
                "object": "list", "collection": collection.collection, "mode": retriever.mode(),
                "fallback": retriever.fallback().map(|f| &f.reason), "data": data,
            }))
        })
        .await??;
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct AskRequest {
    question: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    k: Option<usize>,
}

/// The answer mode `name` asks for and the retrieval it runs; the modes that need an LLM to drive them are
/// refused unless `llm` (this request is answered by one).
pub(crate) fn answer_mode(name: Option<&str>, llm: bool) -> Result<(AnswerMode, Option<Mode>), ApiError> {
    match name {
        Some("agentic") if llm => Ok((AnswerMode::Agentic, None)),
        Some("long-context") if llm => Ok((AnswerMode::LongContext, Some(Mode::Lexical))),
        None | Some("hybrid") => Ok((AnswerMode::Hybrid, None)),
        Some("dense") => Ok((AnswerMode::Dense, Some(Mode::Dense))),
        Some("lexical") => Ok((AnswerMode::Lexical, Some(Mode::Lexical))),
        Some("rerank") => Ok((AnswerMode::Rerank, Some(Mode::Rerank))),
        Some(other @ ("agentic" | "long-context")) => Err(ApiError::invalid(
            "mode",
            format!("mode {other:?} needs an LLM to write the answer: ask a chat completion of rag:COLLECTION"),
        )),
        Some(other) => Err(ApiError::invalid(
            "mode",
            format!("unknown mode {other:?}: one of hybrid, dense, lexical, rerank, agentic, long-context"),
        )),
    }
}

async fn ask(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let collection = caller.collection(&name)?;
    let request: AskRequest = parse(&body, "an ask request ({\"question\": TEXT})")?;
    not_blank(&request.question, "question")?;
    let (answer_mode, requested) = answer_mode(request.mode.as_deref(), false)?;
    let k = k(request.k, 8)?;
    let reader = state.reader(&collection).await?;
    let embedder = state.embedder.get().cloned();
    let reranker = state.reranker.get().cloned();
    let home = state.home.clone();
    let key = caller.prefix.clone();
    let work_state = state.clone();
    let answer = state
        .retrieval
        .run(move || -> Result<Value, ApiError> {
            let started = Instant::now();
            let options = Options::default();
            let retriever = Retriever::with_models(&reader, &collection, requested, &options, embedder, reranker)
                .map_err(|e| rag_error(&collection, e))?;
            let templates =
                PromptTemplates::for_collection(&home, &collection).map_err(|e| ApiError::internal(e.to_string()))?;
            let options = AnswerOptions {
                templates,
                ..AnswerOptions::default()
            };
            let context = AnswerContext {
                reader: &reader,
                embedder: retriever.embedder(),
                reranker: retriever.reranker(),
                retrieval: retriever.options(),
                k,
            };
            let answer = answer(
                &request.question,
                &context,
                Backend::Extractive,
                answer_mode,
                &options,
                &mut |_| {},
            )
            .map_err(|e| answer_error(&collection, e))?;
            work_state.metrics.stage("ask", started.elapsed().as_secs_f64());
            let log = knowhow_rag::answer::answers_log(home.root(), &collection.namespace);
            let mut record = answer.audit_record(None);
            record.key = key;
            record.append_to(&log).map_err(|e| ApiError::internal(e.to_string()))?;
            serde_json::to_value(&answer).map_err(|e| ApiError::internal(e.to_string()))
        })
        .await??;
    Ok(Json(answer))
}
