//! Dedicated threads for model work, fed by a bounded queue.
//!
//! candle's compute is synchronous and uses every core; run on the async runtime it would stall every other
//! request. A handler instead hands its job to [`Workers::run`] and awaits the answer. The queue is bounded: when
//! it is full the job is refused at once ([`WorkError::Busy`], answered 503 with `retry-after`) rather than
//! queued without limit, so a burst never turns into unbounded memory or latency.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A pool of worker threads behind a bounded queue. Dropping it lets the threads finish the queued jobs and exit.
pub struct Workers {
    sender: SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
}

/// Why a job did not run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkError {
    #[error("every worker is busy and the queue is full")]
    Busy,
    #[error("the job panicked: {0}")]
    Panicked(String),
    #[error("the workers have stopped")]
    Stopped,
}

impl Workers {
    /// Starts `threads` workers (at least one) behind a queue of `queue` waiting jobs.
    pub fn start(threads: usize, queue: usize) -> Workers {
        let (sender, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let waiting = Arc::new(AtomicUsize::new(0));
        for number in 0..threads.max(1) {
            let receiver = receiver.clone();
            let waiting = waiting.clone();
            std::thread::Builder::new()
                .name(format!("knowhow-worker-{number}"))
                .spawn(move || work(&receiver, &waiting))
                .expect("the system can start a thread");
        }
        Workers { sender, waiting }
    }

    /// Runs `job` on a worker and returns its result; refused at once with [`WorkError::Busy`] when the queue is
    /// full. A job that panics is reported as [`WorkError::Panicked`]; the worker goes on with the next one.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, WorkError> {
        self.submit(job)?.await
    }

    /// Queues `job` now (refused at once with [`WorkError::Busy`] when the queue is full) and returns its result
    /// to await: a handler that streams learns whether the job was taken before it sends its first byte.
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<impl std::future::Future<Output = Result<T, WorkError>>, WorkError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let boxed: Job = Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(job)).map_err(|panic| panic_message(&panic));
            let _ = reply.send(result);
        });
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if let Err(error) = self.sender.try_send(boxed) {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(match error {
                TrySendError::Full(_) => WorkError::Busy,
                TrySendError::Disconnected(_) => WorkError::Stopped,
            });
        }
        Ok(async move {
            match answer.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(message)) => Err(WorkError::Panicked(message)),
                Err(_) => Err(WorkError::Stopped),
            }
        })
    }

    /// Jobs queued and not yet started.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

fn work(receiver: &Mutex<Receiver<Job>>, waiting: &AtomicUsize) {
    loop {
        // The lock is held only while taking a job, never while running it.
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        waiting.fetch_sub(1, Ordering::SeqCst);
        job();
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two runtime threads: the test blocks one while the first job holds the worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_and_the_queued_jobs_still_run() {
        let workers = Arc::new(Workers::start(1, 1));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn({
            let workers = workers.clone();
            async move {
                workers
                    .run(move || {
                        started.send(()).unwrap();
                        hold.recv().unwrap();
                        1
                    })
                    .await
            }
        });
        running.recv().unwrap();
        // The worker is busy: one job fits in the queue, the next is refused.
        let second = tokio::spawn({
            let workers = workers.clone();
            async move { workers.run(|| 2).await }
        });
        while workers.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(workers.run(|| 3).await, Err(WorkError::Busy));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(1));
        assert_eq!(second.await.unwrap(), Ok(2));
        assert_eq!(workers.waiting(), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_the_worker_goes_on() {
        let workers = Workers::start(1, 4);
        let error = workers.run(|| -> u32 { panic!("model blew up") }).await;
        assert_eq!(error, Err(WorkError::Panicked("model blew up".into())));
        assert_eq!(workers.run(|| 7).await, Ok(7));
    }
}
