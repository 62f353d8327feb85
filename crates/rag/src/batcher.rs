//! One embedding model, many callers: [`EmbedBatcher`] embeds, in one forward pass, every text that is waiting
//! when the model comes free.
//!
//! A server answers many small requests at once, most of them one query each. Embedded one by one they pay the
//! model's fixed cost (a pass through every layer, the threads' start and stop) per request, and queue behind each
//! other; embedded together they cost little more than one. Nothing ever waits for a batch to fill: a lone request
//! is embedded at once, alone, so a quiet server answers as fast as one without batching. The sequences of a batch
//! are packed end to end without padding (`knowhow_models::PackedBatch`), so a text's vector does not depend on
//! the texts it shares a batch with.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

use knowhow_models::SentenceEmbedder;

use crate::Error;

/// Requests waiting beyond which a caller blocks until the model catches up.
const QUEUE: usize = 1024;

/// Texts one batch gathers at most (a request larger than this is still embedded whole, alone).
const MAX_BATCH_TEXTS: usize = 256;

/// A local embedding model on a thread of its own, shared by every thread that embeds. Dropping the last handle
/// stops the thread once the requests already queued are answered.
pub struct EmbedBatcher {
    model: Arc<SentenceEmbedder>,
    queue: SyncSender<Request>,
    counts: Arc<Counts>,
}

/// How much batching happened: `requests / batches` is the mean batch, in requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Forward passes run (a batch that failed counts, and so does each of its requests, then retried alone).
    pub batches: u64,
    /// Requests answered.
    pub requests: u64,
}

#[derive(Default)]
struct Counts {
    batches: AtomicU64,
    requests: AtomicU64,
}

struct Request {
    texts: Vec<String>,
    reply: Sender<Result<Vec<Vec<f32>>, Error>>,
}

impl EmbedBatcher {
    /// Starts the model's thread.
    pub fn start(model: SentenceEmbedder) -> EmbedBatcher {
        let model = Arc::new(model);
        let (queue, requests) = sync_channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let (worker, worker_counts) = (model.clone(), counts.clone());
        std::thread::Builder::new()
            .name("knowhow-embed".into())
            .spawn(move || serve(&worker, &requests, &worker_counts))
            .expect("the system can start a thread");
        EmbedBatcher { model, queue, counts }
    }

    /// Batches and requests so far.
    pub fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.counts.batches.load(Ordering::Relaxed),
            requests: self.counts.requests.load(Ordering::Relaxed),
        }
    }

    /// One vector per text, in the order of `texts`, as [`SentenceEmbedder::embed`] gives them. Blocks until the
    /// batch holding them is embedded.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = channel();
        let request = Request {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            reply,
        };
        let stopped = || Error::Spec("the embedding model's thread stopped (a panic while embedding)".into());
        self.queue.send(request).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// The model itself, for what needs no forward pass (counting tokens, its limits).
    pub fn model(&self) -> &SentenceEmbedder {
        &self.model
    }
}

fn serve(model: &SentenceEmbedder, requests: &Receiver<Request>, counts: &Counts) {
    while let Ok(first) = requests.recv() {
        let mut texts = first.texts.len();
        let mut batch = vec![first];
        while texts < MAX_BATCH_TEXTS {
            let Ok(next) = requests.try_recv() else {
                break;
            };
            texts += next.texts.len();
            batch.push(next);
        }
        counts.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
        // A panic drops the batch's reply senders: its callers get an error and the thread takes the next batch.
        let _ = catch_unwind(AssertUnwindSafe(|| embed_batch(model, batch, counts)));
    }
}

/// Embeds the requests of `batch` together and answers each with its own vectors. Should the batch fail, each
/// request is embedded alone, so that one bad request gets its own error and never fails the others.
fn embed_batch(model: &SentenceEmbedder, batch: Vec<Request>, counts: &Counts) {
    if batch.len() > 1 {
        counts.batches.fetch_add(1, Ordering::Relaxed);
        let all: Vec<&str> = batch.iter().flat_map(|r| r.texts.iter().map(String::as_str)).collect();
        if let Ok(vectors) = model.embed(&all) {
            let mut vectors = vectors.into_iter();
            for request in batch {
                let mine: Vec<Vec<f32>> = vectors.by_ref().take(request.texts.len()).collect();
                let _ = request.reply.send(Ok(mine));
            }
            return;
        }
    }
    for request in batch {
        counts.batches.fetch_add(1, Ordering::Relaxed);
        let texts: Vec<&str> = request.texts.iter().map(String::as_str).collect();
        let _ = request.reply.send(model.embed(&texts).map_err(Error::from));
    }
}
