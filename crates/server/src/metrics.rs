//! `/metrics` in the Prometheus text format, and the request log: what every request did, recorded by
//! [`observe`].
//!
//! Counters and histograms are kept in plain maps behind one lock each: a request touches them once, after its
//! answer is ready, so the lock is never held across any work.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use knowhow_rag::batcher::BatchStats;

use crate::auth::Caller;
use crate::AppState;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (count, bound) in self.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// The series of histogram `name`; `labels` (`key="value",...`) may be empty.
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let bucket = |le: &str| match labels {
            "" => format!("{{le=\"{le}\"}}"),
            _ => format!("{{{labels},le=\"{le}\"}}"),
        };
        for (count, bound) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{} {count}", bucket(&bound.to_string()));
        }
        let _ = writeln!(out, "{name}_bucket{} {}", bucket("+Inf"), self.count);
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{labels} {}", self.sum);
        let _ = writeln!(out, "{name}_count{labels} {}", self.count);
    }
}

/// The server's counters.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Requests by (route, method, status).
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// End-to-end latency by route.
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Seconds spent in each retrieval stage.
    stages: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Texts embedded for `/v1/embeddings`.
    embedded: Mutex<u64>,
    generation: Mutex<Generation>,
}

/// What chat completions measured.
#[derive(Default)]
struct Generation {
    /// From the start of the generation (the worker took the job) to its first text.
    first_token: Histogram,
    /// Between two pieces of text of one answer.
    inter_token: Histogram,
    prompt_tokens: u64,
    generated_tokens: u64,
}

/// When the pieces of one generation's text came, to report them in [`Metrics::generated`].
pub(crate) struct TokenClock {
    started: Instant,
    first: Option<f64>,
    last: Option<Instant>,
    gaps: Vec<f64>,
}

impl TokenClock {
    pub(crate) fn start() -> TokenClock {
        TokenClock {
            started: Instant::now(),
            first: None,
            last: None,
            gaps: Vec::new(),
        }
    }

    /// A piece of text was written now.
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        match self.last {
            None => self.first = Some((now - self.started).as_secs_f64()),
            Some(last) => self.gaps.push((now - last).as_secs_f64()),
        }
        self.last = Some(now);
    }
}

impl Metrics {
    pub(crate) fn stage(&self, stage: &'static str, seconds: f64) {
        self.stages
            .lock()
            .expect("metrics lock")
            .entry(stage)
            .or_default()
            .observe(seconds);
    }

    /// One finished generation: its timing and its tokens.
    pub(crate) fn generated(&self, clock: &TokenClock, prompt_tokens: usize, generated_tokens: usize) {
        let mut generation = self.generation.lock().expect("metrics lock");
        if let Some(first) = clock.first {
            generation.first_token.observe(first);
        }
        for gap in &clock.gaps {
            generation.inter_token.observe(*gap);
        }
        generation.prompt_tokens += prompt_tokens as u64;
        generation.generated_tokens += generated_tokens as u64;
    }

    pub(crate) fn embedded(&self, texts: usize) {
        *self.embedded.lock().expect("metrics lock") += texts as u64;
    }

    fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        self.latency
            .lock()
            .expect("metrics lock")
            .entry(route.to_string())
            .or_default()
            .observe(seconds);
    }

    fn render(&self, gauges: &Gauges, adapters: &[AdapterLoads]) -> String {
        let mut out = String::new();
        out.push_str("# HELP knowhow_requests_total Requests answered, by route, method and status.\n");
        out.push_str("# TYPE knowhow_requests_total counter\n");
        for ((route, method, status), count) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "knowhow_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP knowhow_request_duration_seconds Time from request to the answer's headers.\n");
        out.push_str("# TYPE knowhow_request_duration_seconds histogram\n");
        for (route, histogram) in self.latency.lock().expect("metrics lock").iter() {
            histogram.write(
                &mut out,
                "knowhow_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str("# HELP knowhow_retrieval_stage_seconds Time spent in each retrieval stage.\n");
        out.push_str("# TYPE knowhow_retrieval_stage_seconds histogram\n");
        for (stage, histogram) in self.stages.lock().expect("metrics lock").iter() {
            histogram.write(
                &mut out,
                "knowhow_retrieval_stage_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        out.push_str(
            "# HELP knowhow_queue_depth Jobs waiting for a thread: model (generation, re-ranking), retrieval.\n",
        );
        out.push_str("# TYPE knowhow_queue_depth gauge\n");
        for (queue, depth) in &gauges.queues {
            let _ = writeln!(out, "knowhow_queue_depth{{queue=\"{queue}\"}} {depth}");
        }
        out.push_str("# HELP knowhow_ingest_files_total Uploaded files ingested, by final state.\n");
        out.push_str("# TYPE knowhow_ingest_files_total counter\n");
        for (state, count) in &gauges.ingest.files {
            let _ = writeln!(out, "knowhow_ingest_files_total{{state=\"{state}\"}} {count}");
        }
        out.push_str("# HELP knowhow_ingest_documents_total Documents of uploaded files, by what the store did.\n");
        out.push_str("# TYPE knowhow_ingest_documents_total counter\n");
        for (status, count) in &gauges.ingest.documents {
            let _ = writeln!(out, "knowhow_ingest_documents_total{{status=\"{status}\"}} {count}");
        }
        if let Some(batches) = gauges.batches {
            out.push_str("# HELP knowhow_embed_batches_total Forward passes of the embedding model.\n");
            out.push_str("# TYPE knowhow_embed_batches_total counter\n");
            let _ = writeln!(out, "knowhow_embed_batches_total {}", batches.batches);
            out.push_str(
                "# HELP knowhow_embed_batched_requests_total Embedding requests (queries, /v1/embeddings calls, \
                 ingest batches) those passes answered.\n",
            );
            out.push_str("# TYPE knowhow_embed_batched_requests_total counter\n");
            let _ = writeln!(out, "knowhow_embed_batched_requests_total {}", batches.requests);
        }
        out.push_str("# HELP knowhow_embedded_texts_total Texts embedded for /v1/embeddings.\n");
        out.push_str("# TYPE knowhow_embedded_texts_total counter\n");
        let _ = writeln!(
            out,
            "knowhow_embedded_texts_total {}",
            self.embedded.lock().expect("metrics lock")
        );
        let generation = self.generation.lock().expect("metrics lock");
        out.push_str("# HELP knowhow_time_to_first_token_seconds From a chat generation's start to its first text.\n");
        out.push_str("# TYPE knowhow_time_to_first_token_seconds histogram\n");
        generation
            .first_token
            .write(&mut out, "knowhow_time_to_first_token_seconds", "");
        out.push_str("# HELP knowhow_inter_token_seconds Between two pieces of one chat answer's text.\n");
        out.push_str("# TYPE knowhow_inter_token_seconds histogram\n");
        generation
            .inter_token
            .write(&mut out, "knowhow_inter_token_seconds", "");
        for (name, help, value) in [
            (
                "knowhow_prompt_tokens_total",
                "Prompt tokens of chat completions.",
                generation.prompt_tokens,
            ),
            (
                "knowhow_generated_tokens_total",
                "Tokens chat completions generated.",
                generation.generated_tokens,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        out.push_str("# HELP knowhow_adapter_loads_total Times each served adapter was loaded.\n");
        out.push_str("# TYPE knowhow_adapter_loads_total counter\n");
        for adapter in adapters {
            let _ = writeln!(
                out,
                "knowhow_adapter_loads_total{{adapter=\"{}\"}} {}",
                adapter.name, adapter.loads
            );
        }
        out.push_str("# HELP knowhow_adapter_loaded Whether each served adapter is loaded now.\n");
        out.push_str("# TYPE knowhow_adapter_loaded gauge\n");
        for adapter in adapters {
            let _ = writeln!(
                out,
                "knowhow_adapter_loaded{{adapter=\"{}\"}} {}",
                adapter.name,
                u8::from(adapter.loaded)
            );
        }
        out
    }
}

/// What `/metrics` reads from elsewhere at each scrape.
struct Gauges {
    /// Jobs waiting, per pool.
    queues: [(&'static str, usize); 2],
    /// The embedding model's batching, when it batches.
    batches: Option<BatchStats>,
    ingest: crate::jobs::IngestCounts,
}

/// A served adapter as `/metrics` reports it.
pub(crate) struct AdapterLoads {
    pub name: String,
    pub loads: u64,
    pub loaded: bool,
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let adapters = state.chat.get().map(|chat| chat.adapters.report()).unwrap_or_default();
    let gauges = Gauges {
        queues: [
            ("model", state.workers.waiting()),
            ("retrieval", state.retrieval.waiting()),
        ],
        batches: state.embedder.get().and_then(|loaded| match &loaded.embedder {
            knowhow_rag::Embedder::Batched(batcher) => Some(batcher.stats()),
            _ => None,
        }),
        ingest: state.jobs.counts(),
    };
    let body = state.metrics.render(&gauges, &adapters);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The request log, `logs/requests.jsonl` in the home: one line per request with its key's prefix.
pub(crate) struct RequestLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl RequestLog {
    pub(crate) fn new(path: PathBuf) -> RequestLog {
        RequestLog {
            path,
            file: Mutex::new(None),
        }
    }

    /// Appends one line. A log that cannot be written is said on stderr once per failure and never fails the
    /// request it describes.
    fn append(&self, line: &serde_json::Value) {
        let mut file = self.file.lock().expect("no panic holds the log lock");
        if file.is_none() {
            let opened = self
                .path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(&self.path));
            match opened {
                Ok(opened) => *file = Some(opened),
                Err(e) => {
                    crate::log::event(
                        crate::log::Level::Error,
                        "request_log_unwritable",
                        &format!("cannot open {}: {e}", self.path.display()),
                        json!({"path": self.path, "error": e.to_string()}),
                    );
                    return;
                }
            }
        }
        let mut bytes = serde_json::to_vec(line).expect("a JSON value serializes");
        bytes.push(b'\n');
        if let Err(e) = file.as_mut().expect("opened above").write_all(&bytes) {
            crate::log::event(
                crate::log::Level::Error,
                "request_log_unwritable",
                &format!("cannot append to {}: {e}", self.path.display()),
                json!({"path": self.path, "error": e.to_string()}),
            );
            *file = None;
        }
    }
}

/// Middleware on every route: counts the request by route and status, times it, and logs it.
pub(crate) async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = request.method().to_string();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    state.metrics.request(&route, &method, status, seconds);
    if route != "/health" && route != "/ready" && route != "/metrics" {
        let key = response.extensions().get::<Caller>().and_then(|c| c.prefix.clone());
        let ms = (seconds * 1000.0 * 1000.0).round() / 1000.0;
        state.requests.append(&json!({
            "time": knowhow_core::time::UtcDateTime::now().rfc3339(),
            "request_id": request_id,
            "key": key,
            "method": method,
            "path": path,
            "status": status,
            "ms": ms,
        }));
        crate::log::request(json!({
            "request_id": request_id, "key": key, "method": method, "path": path, "route": route,
            "status": status, "ms": ms,
        }));
    }
    response
}
