//! Uploads and their jobs:
//!
//! ```text
//! POST /v1/collections/{c}/documents   multipart files, or JSON {"name"?, "documents": [{"id"?, "title"?, "text", ...}]}
//!                                      → 202 the job (write)
//! GET  /v1/jobs/{id}                   the job, each file's state (read)
//! GET  /v1/jobs/{id}/events            the job again at every change, as server-sent events, until it ends
//! ```
//!
//! Files are stored under the server's own upload folder by a sanitised name ([`jobs::stored_name`]); a client's
//! file name never becomes a path of its choosing. Every file is on disk, and the job durable, before the 202.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use knowhow_ingest::load::RowFields;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{no_collection, Caller};
use crate::jobs::{self, write_durably, Job, JobState};
use crate::keys::Role;
use crate::{ApiError, AppState};

/// The most files one upload may hold.
const MAX_FILES: usize = 1000;

#[derive(Deserialize)]
struct RowsUpload {
    /// The name the rows are kept under (a re-upload under the same name replaces them); `.jsonl` is added.
    #[serde(default)]
    name: Option<String>,
    documents: Vec<serde_json::Map<String, Value>>,
}

/// `POST /v1/collections/{collection}/documents`.
pub(crate) async fn upload(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let collection = caller.collection(&name)?;
    if !state.home.exists(&collection) {
        return Err(ApiError::not_found(no_collection(&name)));
    }
    caller.require(Role::Write, "uploading documents")?;
    if state.embedder.get().is_none() {
        return Err(ApiError::unavailable("the embedding model is still loading", 1));
    }
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let files = if multipart {
        files_of_multipart(Multipart::from_request(request, &()).await.map_err(|e| {
            ApiError::invalid(
                "body",
                format!("the upload is not readable multipart: {}", e.body_text()),
            )
        })?)
        .await?
    } else {
        // Through the extractor, so that the route's body limit holds (413 above it).
        let body = axum::body::Bytes::from_request(request, &())
            .await
            .map_err(|e| ApiError::new(e.status(), "body_unreadable", e.body_text()))?;
        files_of_rows(&body)?
    };
    if files.is_empty() {
        return Err(ApiError::invalid("body", "the upload holds no file"));
    }
    let jobs = state.jobs.clone();
    let job = tokio::task::spawn_blocking(move || -> Result<Job, ApiError> {
        let folder = jobs.upload_dir(&collection);
        std::fs::create_dir_all(&folder).map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
        let mut names = Vec::new();
        for (name, stored, bytes) in &files {
            write_durably(&folder.join(stored), bytes)
                .map_err(|e| ApiError::internal(format!("cannot store {name:?}: {e}")))?;
            names.push((name.clone(), stored.clone()));
        }
        jobs.submit(&collection, names)
            .map_err(|e| ApiError::internal(format!("cannot record the job: {e}")))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// (name given, name stored, bytes) of each file, names checked and unique.
type Files = Vec<(String, String, Vec<u8>)>;

fn add(files: &mut Files, name: String, bytes: Vec<u8>) -> Result<(), ApiError> {
    let stored = jobs::stored_name(&name).map_err(|e| ApiError::invalid("file", e))?;
    if files.iter().any(|(_, s, _)| *s == stored) {
        return Err(ApiError::invalid(
            "file",
            format!("two files of the upload would both be stored as {stored:?}"),
        ));
    }
    if files.len() == MAX_FILES {
        return Err(ApiError::invalid(
            "file",
            format!("an upload holds at most {MAX_FILES} files"),
        ));
    }
    files.push((name, stored, bytes));
    Ok(())
}

async fn files_of_multipart(mut multipart: Multipart) -> Result<Files, ApiError> {
    let mut files = Files::new();
    while let Some(field) = multipart.next_field().await.map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the upload is not readable multipart: {}", e.body_text()),
        )
    })? {
        let Some(name) = field.file_name().map(String::from) else {
            continue;
        };
        let bytes = field.bytes().await.map_err(|e| {
            ApiError::new(
                e.status(),
                "upload_failed",
                format!("cannot read {name:?}: {}", e.body_text()),
            )
        })?;
        add(&mut files, name, bytes.to_vec())?;
    }
    Ok(files)
}

fn files_of_rows(body: &[u8]) -> Result<Files, ApiError> {
    let upload: RowsUpload = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the body is neither multipart files nor {{\"documents\": [{{\"text\": ...}}]}}: {e}"),
        )
    })?;
    if upload.documents.is_empty() {
        return Err(ApiError::invalid(
            "documents",
            "documents is an empty list: send at least one {\"text\": ...}",
        ));
    }
    let mut rows = Vec::new();
    for (number, row) in upload.documents.iter().enumerate() {
        // The loader's own rule, checked now so that the caller hears it from this request, not from the job.
        let has_text = RowFields::TEXT_NAMES.iter().any(|name| {
            row.get(*name)
                .and_then(Value::as_str)
                .is_some_and(|t| !t.trim().is_empty())
        });
        if !has_text {
            return Err(ApiError::invalid(
                "documents",
                format!(
                    "documents[{number}] has no text: give it one of the fields {} as a non-empty string",
                    RowFields::TEXT_NAMES.join(", ")
                ),
            ));
        }
        rows.extend(serde_json::to_vec(row).expect("a JSON object serializes"));
        rows.push(b'\n');
    }
    let name = format!("{}.jsonl", upload.name.as_deref().unwrap_or("documents"));
    let mut files = Files::new();
    add(&mut files, name, rows)?;
    Ok(files)
}

/// The job, when the caller may see it: a job of another namespace is answered like one that does not exist.
fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<tokio::sync::watch::Receiver<Job>, ApiError> {
    let not_found = || ApiError::not_found(format!("no job {id:?}"));
    let watch = state.jobs.watch(id).ok_or_else(not_found)?;
    if !caller.holds(&watch.borrow().namespace) {
        return Err(not_found());
    }
    Ok(watch)
}

/// `GET /v1/jobs/{id}`.
pub(crate) async fn job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let watch = visible(&state, &caller, &id)?;
    let job = watch.borrow().clone();
    Ok(Json(job))
}

/// `GET /v1/jobs/{id}/events`: the job now and at every change, one `data:` event each, until it is done.
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let watch = visible(&state, &caller, &id)?;
    let stream = futures_util::stream::unfold((watch, true, false), |(mut watch, first, ended)| async move {
        if ended {
            return None;
        }
        if !first && watch.changed().await.is_err() {
            return None;
        }
        let job = watch.borrow_and_update().clone();
        let ended = matches!(job.state, JobState::Done | JobState::Failed);
        let event = Event::default().json_data(&job).expect("a job serializes");
        Some((Ok(event), (watch, false, ended)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_need_a_text_field_the_loader_reads_and_at_least_one_row() {
        let files = files_of_rows(br#"{"name": "faq", "documents": [{"id": "1", "passage": "Refunds take 5 days."}]}"#)
            .expect("a passage is text to the loader");
        let error = files_of_rows(br#"{"documents": [{"text": "ok"}, {"id": "2", "summary": "not a text field"}]}"#)
            .unwrap_err();
        assert_eq!(error.param, Some("documents"));
        assert!(
            error.message.starts_with("documents[1] has no text"),
            "{}",
            error.message
        );
        for blank in [r#"{"documents": []}"#, r#"{"documents": [{"text": "  "}]}"#] {
            assert_eq!(
                files_of_rows(blank.as_bytes()).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{blank}"
            );
        }
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "faq.jsonl");
        assert_eq!(files[0].2, b"{\"id\":\"1\",\"passage\":\"Refunds take 5 days.\"}\n");
    }
}
