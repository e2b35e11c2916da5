//! Coalescing concurrent requests into batches, so that many money
//! movements share one database transaction.
//!
//! On PostgreSQL every transaction pays a commit (an fsync) and a round trip
//! per statement; the ledger's set-based writers (`settlement::settle_batch`,
//! `transfers::write_batch`) do a fixed number of statements for any batch
//! size, so throughput grows with the batch. A `Coalescer` forms those
//! batches: the first request opens a batch, which waits at most `linger`
//! for company, and keeps filling — without waiting — while all
//! `in_flight_max` batches are busy. So an idle system adds at most `linger`
//! of latency and a loaded one forms big batches by itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// How batches are formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most requests in one batch.
    pub size_max: usize,
    /// How long a new batch waits for company.
    pub linger: Duration,
    /// Batches being written at once: one commits while the next fills.
    pub in_flight_max: usize,
}

impl BatchLimits {
    /// Reads `<PREFIX>_BATCH_MAX`, `<PREFIX>_BATCH_LINGER_MS` and
    /// `<PREFIX>_BATCHES_IN_FLIGHT` over the given defaults. A batch size of
    /// 1 gives the one-request-per-transaction design. Errors name the
    /// variable and say what is wrong, for the start-up failure line.
    pub fn from_env(prefix: &str, defaults: BatchLimits) -> Result<BatchLimits, (String, String)> {
        let read = |suffix: &str, min: u64, max: u64| -> Result<Option<u64>, (String, String)> {
            let name = format!("{prefix}_{suffix}");
            match std::env::var(&name).ok().filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                    _ => Err((name, format!("must be a whole number from {min} to {max}"))),
                },
            }
        };
        let mut limits = defaults;
        if let Some(n) = read("BATCH_MAX", 1, 2_000)? {
            limits.size_max = n as usize;
        }
        if let Some(n) = read("BATCH_LINGER_MS", 0, 1_000)? {
            limits.linger = Duration::from_millis(n);
        }
        if let Some(n) = read("BATCHES_IN_FLIGHT", 1, 64)? {
            limits.in_flight_max = n as usize;
        }
        Ok(limits)
    }

    /// Requests that can be waiting at once: every batch in flight plus
    /// the one being filled. Job consumers size their concurrency by it.
    pub fn requests_max(&self) -> usize {
        self.size_max * (self.in_flight_max + 1)
    }
}

/// Hands requests to a batch writer and each answer back to its caller.
pub struct Coalescer<Req, Resp> {
    requests: mpsc::Sender<(Req, oneshot::Sender<Resp>)>,
}

impl<Req, Resp> Coalescer<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts the batching task. `write` gets a batch and must return one
    /// answer per request, in order. The task ends when the coalescer is
    /// dropped and the last batch is written.
    pub fn start<W, F>(limits: BatchLimits, write: W) -> Coalescer<Req, Resp>
    where
        W: Fn(Vec<Req>) -> F + Send + Sync + 'static,
        F: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(limits.requests_max().max(1));
        tokio::spawn(form_batches(limits, rx, Arc::new(write)));
        Coalescer { requests: tx }
    }

    /// Submits one request and waits for its answer; None if the batch
    /// task is gone (shutting down) or dropped the request.
    pub async fn submit(&self, request: Req) -> Option<Resp> {
        let (reply, answer) = oneshot::channel();
        self.requests.send((request, reply)).await.ok()?;
        answer.await.ok()
    }
}

async fn form_batches<Req, Resp, W, F>(
    limits: BatchLimits,
    mut requests: mpsc::Receiver<(Req, oneshot::Sender<Resp>)>,
    write: Arc<W>,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
    W: Fn(Vec<Req>) -> F + Send + Sync + 'static,
    F: Future<Output = Vec<Resp>> + Send + 'static,
{
    let size_max = limits.size_max.max(1);
    let in_flight = Arc::new(Semaphore::new(limits.in_flight_max.max(1)));
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        let linger_until = tokio::time::Instant::now() + limits.linger;
        while batch.len() < size_max {
            match tokio::time::timeout_at(linger_until, requests.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        // Keep filling while every batch slot is busy.
        let permit = loop {
            tokio::select! {
                biased;
                permit = in_flight.clone().acquire_owned() => break permit,
                r = requests.recv(), if batch.len() < size_max => match r {
                    Some(r) => batch.push(r),
                    None => break in_flight.clone().acquire_owned().await,
                },
            }
        };
        let Ok(permit) = permit else { return };
        let write = write.clone();
        tokio::spawn(async move {
            let (reqs, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) = batch.into_iter().unzip();
            let answers = write(reqs).await;
            if answers.len() != replies.len() {
                tracing::error!(
                    batch.size = replies.len(),
                    answers = answers.len(),
                    "batch writer answered the wrong number of requests"
                );
            }
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(size_max: usize, linger_ms: u64) -> BatchLimits {
        BatchLimits {
            size_max,
            linger: Duration::from_millis(linger_ms),
            in_flight_max: 1,
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_get_their_own_answers() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let c = Arc::new(Coalescer::start(limits(8, 50), move |reqs: Vec<u32>| {
            seen.lock().unwrap().push(reqs.len());
            async move { reqs.into_iter().map(|r| r * 10).collect::<Vec<u32>>() }
        }));
        let tasks: Vec<_> = (0..20u32)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { (i, c.submit(i).await) })
            })
            .collect();
        for t in tasks {
            let (i, answer) = t.await.unwrap();
            assert_eq!(answer, Some(i * 10));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&s| s <= 8), "batches bounded: {sizes:?}");
        assert!(sizes.len() < 20, "some requests shared a batch: {sizes:?}");
    }

    #[tokio::test]
    async fn a_batch_size_of_one_writes_every_request_alone() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let c = Arc::new(Coalescer::start(limits(1, 5), move |reqs: Vec<u32>| {
            seen.lock().unwrap().push(reqs.len());
            async move { reqs }
        }));
        let tasks: Vec<_> = (0..5u32)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { c.submit(i).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().is_some());
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1; 5]);
    }

    #[test]
    fn limits_from_the_environment_are_checked_and_named() {
        let defaults = limits(100, 2);
        // SAFETY of the env calls: this test owns these unique variable names.
        unsafe { std::env::set_var("CBTEST_BATCH_MAX", "0") };
        let err = BatchLimits::from_env("CBTEST", defaults).unwrap_err();
        assert_eq!(err.0, "CBTEST_BATCH_MAX");
        unsafe { std::env::set_var("CBTEST_BATCH_MAX", "32") };
        unsafe { std::env::set_var("CBTEST_BATCH_LINGER_MS", "0") };
        let l = BatchLimits::from_env("CBTEST", defaults).unwrap();
        assert_eq!(
            (l.size_max, l.linger, l.in_flight_max),
            (32, Duration::ZERO, 1)
        );
        assert_eq!(l.requests_max(), 64);
    }
}
