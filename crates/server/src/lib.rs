//! `knowhow serve`: knowhow's models over HTTP, in the OpenAI wire protocol, so that any OpenAI SDK can use them.
//!
//! ```text
//! client ──HTTP──▶ axum (tokio) ──bounded queue──▶ worker threads (candle) ──▶ reply
//!                    │  full queue: 503 + retry-after
//!                    └─ /health, /ready, x-request-id on every response, body limit (413)
//! ```
//!
//! What is served today:
//! - `POST /v1/embeddings`: the served embedding model (`model`: its id as `/v1/models` lists it, or `default`);
//!   `input` a string or a list of strings; `encoding_format` `float` or `base64` (little-endian f32, what the
//!   official Python SDK asks for by default); token-id arrays and a `dimensions` other than the model's are
//!   refused with 400 naming the field.
//! - `GET /v1/models`: the embedding model.
//! - `GET /health` (live) and `GET /ready` (503 until the models are loaded).
//!
//! Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}` with the real status.
//!
//! Neural compute never runs on the async runtime: a handler hands a job to [`workers::Workers`], whose dedicated
//! threads own the models, and awaits the answer. Without API keys (not implemented yet) the server listens on
//! loopback only: [`ServeOptions::check`] refuses any other address.

mod api_error;
mod embeddings;
pub mod workers;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
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
    /// Worker threads for model work (each runs candle, which itself uses every core).
    pub workers: usize,
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            queue: 64,
            workers: 1,
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Why the server cannot start as asked.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{0} is not a loopback address: without API keys the server would answer anyone who can reach it, so it \
         listens on loopback only (127.0.0.1 or ::1)"
    )]
    NotLoopback(SocketAddr),
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
    /// Refuses settings that would expose the server: no keys exist yet, so only loopback is allowed.
    pub fn check(&self) -> Result<(), ServeError> {
        if !self.listen.ip().is_loopback() {
            return Err(ServeError::NotLoopback(self.listen));
        }
        Ok(())
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    /// Set once the embedding model is loaded; `/ready` answers 503 until then.
    embedder: OnceLock<Arc<LoadedEmbedder>>,
    workers: Workers,
    /// When the server started (the `created` of the models it lists).
    started: u64,
}

/// A bound server: its address is known before it serves (so `--listen 127.0.0.1:0` can say which port it got).
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Router,
    state: Arc<AppState>,
}

impl Server {
    /// Binds the listener and starts the workers. The embedding model comes later ([`Server::set_embedder`]), so the
    /// server answers `/health` (and 503 on `/ready`) while it loads.
    pub async fn bind(options: &ServeOptions) -> Result<Server, ServeError> {
        options.check()?;
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| ServeError::Listen {
                address: options.listen,
                source,
            })?;
        let state = Arc::new(AppState {
            embedder: OnceLock::new(),
            workers: Workers::start(options.workers, options.queue),
            started: knowhow_core::time::unix_now(),
        });
        Ok(Server {
            listener,
            app: router(state.clone(), options.max_body_bytes),
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
    /// Serves `embedder` from now on; `/ready` then answers 200. A second call is ignored.
    pub fn set_embedder(&self, embedder: LoadedEmbedder) {
        let _ = self.0.embedder.set(Arc::new(embedder));
    }
}

fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/v1/models", get(models))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.embedder.get() {
        Some(_) => Json(json!({"status": "ready"})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response(),
    }
}

/// `GET /v1/models`: every model this server answers with.
async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let data: Vec<serde_json::Value> = state
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
    Json(json!({"object": "list", "data": data}))
}
