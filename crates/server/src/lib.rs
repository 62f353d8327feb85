//! `knowhow serve`: knowhow's models over HTTP, in the OpenAI wire protocol, so that any OpenAI SDK can use them.
//!
//! ```text
//! client ──HTTP──▶ axum (tokio) ──bounded queue──▶ worker threads (candle) ──▶ reply
//!                    │  full queue: 503 + retry-after
//!                    └─ /health, /ready, x-request-id on every response, body limit (413)
//! ```
//!
//! What is served:
//! - `POST /v1/embeddings`: the served embedding model (`model`: its id as `/v1/models` lists it, or `default`);
//!   `input` a string or a list of strings; `encoding_format` `float` or `base64` (little-endian f32, what the
//!   official Python SDK asks for by default); token-id arrays and a `dimensions` other than the model's are
//!   refused with 400 naming the field.
//! - `POST /v1/chat/completions` ([`chat`]): the `--llm` model, its adapters by name, and `rag:COLLECTION` answers
//!   with citations.
//! - `POST /v1/rerank` (and `/rerank`): the `--rerank-model` cross-encoder, in TEI's shape.
//! - `GET /v1/models`: every model above the caller may use (adapters and `rag:` models with their `parent`).
//! - The knowledge-base API under `/v1/collections` ([`kb`]): collections, documents (uploads become [`jobs`]),
//!   search with per-stage scores, and extractive answers, in the caller's namespace.
//! - `GET /health` (live), `GET /ready` (503 until the models are loaded), `GET /metrics` (Prometheus),
//!   `GET /openapi.json` and `GET /docs` (the API, described and rendered).
//!
//! Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}` with the real status.
//!
//! Everything under `/v1` passes [`auth::authenticate`]: a bearer key from the home's key file ([`keys`]), which
//! names the caller's namespaces, role and request rate. With no key in the file the server is the operator's
//! own and listens on loopback only ([`ServeOptions::check`] refuses any other address); every request is counted
//! in `/metrics` and written to `logs/requests.jsonl` with its key's prefix.
//!
//! Neural compute never runs on the async runtime: a handler hands a job to [`workers::Workers`], whose dedicated
//! threads own the models, and awaits the answer.

mod api_error;
pub mod auth;
pub mod chat;
mod embeddings;
pub mod jobs;
pub mod kb;
pub mod keys;
pub mod log;
mod metrics;
mod openapi;
mod rerank;
mod upload;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use knowhow_core::CollectionRef;
use knowhow_index::{Home, Reader};
use knowhow_rag::LoadedEmbedder;
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use api_error::ApiError;
use workers::Workers;

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Jobs waiting for a worker beyond which requests are answered 503.
    pub queue: usize,
    /// Worker threads for generation and re-ranking (each runs candle, which itself uses every core).
    pub workers: usize,
    /// Threads for search, ask and embeddings. They spend their time in the index or waiting for the one
    /// embedding thread, which embeds together whatever they wait for; more of them means bigger batches.
    pub retrieval_threads: usize,
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: usize,
    /// Largest document upload in bytes, all its files together (413 above).
    pub max_upload_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            queue: 64,
            workers: 1,
            retrieval_threads: 16,
            max_body_bytes: 8 * 1024 * 1024,
            max_upload_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Why the server cannot start as asked.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{0} is not a loopback address, and the home has no active API key: the server would answer anyone who \
         can reach it, so without keys it listens on loopback only (127.0.0.1 or ::1)"
    )]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
}

impl ServeOptions {
    /// Refuses settings that would expose the server: beyond loopback only with at least one active key.
    pub fn check(&self, keys: &[keys::KeyRecord]) -> Result<(), ServeError> {
        let now = knowhow_core::time::unix_now();
        if !self.listen.ip().is_loopback() && !keys.iter().any(|k| k.active(now)) {
            return Err(ServeError::NotLoopback(self.listen));
        }
        Ok(())
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    /// Set once the embedding model is loaded; `/ready` answers 503 until then.
    embedder: jobs::EmbedderSlot,
    /// Generation and re-ranking.
    workers: Workers,
    /// Search, ask and embeddings: the embedding model batches across them (`knowhow_rag::batcher`).
    retrieval: Workers,
    /// When the server started (the `created` of the models it lists).
    started: u64,
    home: Home,
    access: auth::Access,
    metrics: metrics::Metrics,
    requests: metrics::RequestLog,
    /// One long-lived reader per collection searched, caught up before each use.
    readers: Mutex<HashMap<CollectionRef, Arc<Reader>>>,
    jobs: Arc<jobs::Jobs>,
    /// Set once the chat model (`--llm`) is loaded; without one, chat completions answer 404.
    chat: std::sync::OnceLock<Arc<chat::ChatBackend>>,
    /// Set once the cross-encoder (`--rerank-model`) is loaded: `/v1/rerank` and the `rerank` mode.
    reranker: std::sync::OnceLock<Arc<knowhow_rag::Reranker>>,
}

impl AppState {
    /// The collection's reader, opened on first use and caught up with the last commit since.
    async fn reader(self: &Arc<Self>, collection: &CollectionRef) -> Result<Arc<Reader>, ApiError> {
        let cached = self
            .readers
            .lock()
            .expect("no panic holds the reader lock")
            .get(collection)
            .cloned();
        let state = self.clone();
        let collection = collection.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(reader) = cached {
                if reader.catch_up().is_ok() {
                    return Ok(reader);
                }
                // Dropped or replaced underneath: open it afresh.
                state.forget_reader(&collection);
            }
            let reader = Arc::new(
                state
                    .home
                    .open_reader(&collection)
                    .map_err(|e| kb::index_error(&collection, e))?,
            );
            state
                .readers
                .lock()
                .expect("no panic holds the reader lock")
                .insert(collection, reader.clone());
            Ok(reader)
        })
        .await
        .map_err(|e| ApiError::internal(format!("opening the collection failed: {e}")))?
    }

    fn forget_reader(&self, collection: &CollectionRef) {
        self.readers
            .lock()
            .expect("no panic holds the reader lock")
            .remove(collection);
    }
}

/// A bound server: its address is known before it serves (so `--listen 127.0.0.1:0` can say which port it got).
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Router,
    state: Arc<AppState>,
}

impl Server {
    /// Binds the listener and starts the workers, serving the collections and keys of `home`. The embedding model
    /// comes later ([`Readiness::set_embedder`]), so the server answers `/health` (and 503 on `/ready`) while it
    /// loads.
    pub async fn bind(options: &ServeOptions, home: Home) -> Result<Server, ServeError> {
        let key_store = keys::KeyStore::in_home(home.root());
        options.check(&key_store.list()?)?;
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| ServeError::Listen {
                address: options.listen,
                source,
            })?;
        let embedder = jobs::EmbedderSlot::default();
        let state = Arc::new(AppState {
            jobs: jobs::Jobs::start(home.clone(), embedder.clone())?,
            embedder,
            workers: Workers::start(options.workers, options.queue),
            retrieval: Workers::start(options.retrieval_threads, options.queue),
            started: knowhow_core::time::unix_now(),
            access: auth::Access::new(key_store, !options.listen.ip().is_loopback())?,
            metrics: metrics::Metrics::default(),
            requests: metrics::RequestLog::new(home.root().join("logs").join("requests.jsonl")),
            home,
            readers: Mutex::new(HashMap::new()),
            chat: std::sync::OnceLock::new(),
            reranker: std::sync::OnceLock::new(),
        });
        Ok(Server {
            listener,
            app: router(state.clone(), options),
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that makes the server ready once the model is loaded; usable from any thread.
    pub fn readiness(&self) -> Readiness {
        Readiness(self.state.clone())
    }

    /// Serves until `shutdown` completes, then drains the requests in flight.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        axum::serve(self.listener, self.app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

/// Makes a bound [`Server`] ready.
#[derive(Clone)]
pub struct Readiness(Arc<AppState>);

impl Readiness {
    /// Serves `chat` for chat completions from now on. Call it before [`Readiness::set_embedder`], which makes the
    /// server ready. A second call is ignored.
    pub fn set_chat(&self, chat: chat::ChatBackend) {
        let _ = self.0.chat.set(Arc::new(chat));
    }

    /// Re-ranks with `reranker` from now on (`/v1/rerank`, the `rerank` mode). Call it before
    /// [`Readiness::set_embedder`]. A second call is ignored.
    pub fn set_reranker(&self, reranker: knowhow_rag::Reranker) {
        let _ = self.0.reranker.set(Arc::new(reranker));
    }

    /// Serves `embedder` from now on; `/ready` then answers 200. A second call is ignored. A local model gets a
    /// thread of its own that embeds concurrent requests together.
    pub fn set_embedder(&self, embedder: LoadedEmbedder) {
        let embedder = LoadedEmbedder {
            embedder: embedder.embedder.batched(),
            ..embedder
        };
        if self.0.embedder.set(Arc::new(embedder)).is_ok() {
            // Interrupted ingest jobs need the model: they resume now.
            self.0.jobs.resume();
        }
    }
}

fn router(state: Arc<AppState>, options: &ServeOptions) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let api = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/rerank", post(rerank::rerank))
        // Where TEI itself serves it, so that a TEI client given this server's address finds it.
        .route("/rerank", post(rerank::rerank))
        .merge(kb::routes(options.max_upload_bytes))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::page))
        .merge(api)
        .route_layer(middleware::from_fn_with_state(state.clone(), metrics::observe))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::map_response(error_shape))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// The errors axum answers by itself (a body over its limit, a method the route does not take) in the OpenAI
/// shape, as every other error, so that an SDK raises its own exception for them too.
async fn error_shape(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::METHOD_NOT_ALLOWED) {
        return response;
    }
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let mut shaped = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "request_too_large",
            "the request body is larger than this server accepts (knowhow serve --max-body-bytes, or \
             --max-upload-bytes for document uploads)",
        ),
        _ => ApiError::new(
            status,
            "method_not_allowed",
            format!(
                "this route does not take that method; it takes {}",
                allow.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("another")
            ),
        ),
    }
    .into_response();
    if let Some(allow) = allow {
        shaped.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    shaped
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.embedder.get() {
        Some(_) => Json(json!({"status": "ready"})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response(),
    }
}

/// `GET /v1/models`: every model this server answers with.
async fn models(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<auth::Caller>,
) -> Json<serde_json::Value> {
    let mut data: Vec<serde_json::Value> = state
        .embedder
        .get()
        .map(|embedder| {
            json!({
                "id": embedder.pin.id,
                "object": "model",
                "created": state.started,
                "owned_by": "knowhow",
            })
        })
        .into_iter()
        .collect();
    let home = state.clone();
    let chat = tokio::task::spawn_blocking(move || chat::models(&home, &caller))
        .await
        .unwrap_or_default();
    data.extend(chat);
    Json(json!({"object": "list", "data": data}))
}
