//! Settles transfers: each job hands its transfer to this process's
//! settlement batcher, which settles many per database transaction
//! (`ledger::settlement::settle_batch`), publishes their events, and only
//! then lets the jobs complete — so a job is acknowledged only once its
//! transfer is final and announced.
//!
//! Why batch: one transaction per transfer pays a commit (an fsync) and a
//! dozen round trips per transfer, and transfers touching a hot account
//! queue behind its row lock one by one. A batch pays one commit and a
//! fixed number of statements for hundreds of transfers, and takes each hot
//! account's lock once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data};
use ledger::jobs::SettleTransfer;
use ledger::settlement::{Outcome, Settled};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use crate::Jobs;

/// How settlement batches are formed.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    /// Most transfers settled in one transaction.
    pub size_max: usize,
    /// How long a batch waits for company once its first transfer arrives.
    /// Batches also grow, without waiting, while all `in_flight_max`
    /// transactions are busy: under load batches fill up by themselves.
    pub linger: Duration,
    /// Batch transactions running at once in this process: one commits
    /// while the next is being filled.
    pub in_flight_max: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            size_max: 256,
            linger: Duration::from_millis(2),
            in_flight_max: 2,
        }
    }
}

impl BatchSettings {
    /// Reads `SETTLEMENT_BATCH_MAX`, `SETTLEMENT_BATCH_LINGER_MS` and
    /// `SETTLEMENT_BATCHES_IN_FLIGHT`; a batch size of 1 gives the
    /// one-transfer-per-transaction design (for comparison in benchmarks).
    pub fn from_env() -> Result<BatchSettings, (String, String)> {
        let mut s = BatchSettings::default();
        let read = |name: &str, min: u64| -> Result<Option<u64>, (String, String)> {
            match std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n >= min => Ok(Some(n)),
                    _ => Err((name.to_owned(), format!("must be a whole number ≥ {min}"))),
                },
            }
        };
        if let Some(n) = read("SETTLEMENT_BATCH_MAX", 1)? {
            s.size_max = n.min(2_000) as usize;
        }
        if let Some(n) = read("SETTLEMENT_BATCH_LINGER_MS", 0)? {
            s.linger = Duration::from_millis(n.min(1_000));
        }
        if let Some(n) = read("SETTLEMENT_BATCHES_IN_FLIGHT", 1)? {
            s.in_flight_max = n.min(64) as usize;
        }
        Ok(s)
    }

    /// How many settlement jobs a process should run at once so that
    /// batches can fill: every batch in flight plus the one being filled.
    pub fn job_concurrency(&self) -> usize {
        self.size_max * (self.in_flight_max + 1)
    }
}

type Reply = oneshot::Sender<Result<Outcome, String>>;

/// The hand-over point between settlement jobs and batch transactions.
pub struct SettlementBatcher {
    requests: mpsc::Sender<(Uuid, Reply)>,
}

impl SettlementBatcher {
    /// Starts the batching task; it ends when the batcher is dropped.
    pub fn start(jobs: Arc<Jobs>, settings: BatchSettings) -> Arc<SettlementBatcher> {
        let (tx, rx) = mpsc::channel(settings.job_concurrency().max(1));
        tokio::spawn(form_batches(jobs, settings, rx));
        Arc::new(SettlementBatcher { requests: tx })
    }

    /// Settles one transfer within some batch and waits for its outcome.
    pub async fn settle(&self, transfer_id: Uuid) -> Result<Outcome, String> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send((transfer_id, reply))
            .await
            .map_err(|_| "settlement batcher stopped".to_owned())?;
        outcome
            .await
            .map_err(|_| "settlement batch dropped".to_owned())?
    }
}

async fn form_batches(
    jobs: Arc<Jobs>,
    settings: BatchSettings,
    mut requests: mpsc::Receiver<(Uuid, Reply)>,
) {
    let in_flight = Arc::new(Semaphore::new(settings.in_flight_max));
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        let linger_until = tokio::time::Instant::now() + settings.linger;
        while batch.len() < settings.size_max {
            match tokio::time::timeout_at(linger_until, requests.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        // Keep filling while every transaction slot is busy.
        let permit = loop {
            tokio::select! {
                biased;
                permit = in_flight.clone().acquire_owned() => break permit,
                r = requests.recv(), if batch.len() < settings.size_max => match r {
                    Some(r) => batch.push(r),
                    None => break in_flight.clone().acquire_owned().await,
                },
            }
        };
        let Ok(permit) = permit else { return };
        let jobs = jobs.clone();
        tokio::spawn(async move {
            settle_and_announce(&jobs, batch).await;
            drop(permit);
        });
    }
}

async fn settle_and_announce(jobs: &Jobs, batch: Vec<(Uuid, Reply)>) {
    let ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
    let span = tracing::info_span!("settle_batch", batch.size = ids.len());
    let started = Instant::now();
    let results: Vec<(Uuid, Result<Settled, String>)> = match ledger::settlement::settle_batch(
        &jobs.db, &ids,
    )
    .instrument(span.clone())
    .await
    {
        Ok(settled) => settled
            .into_iter()
            .map(|s| (s.transfer_id, Ok(s)))
            .collect(),
        Err(e) => {
            // The batch changed nothing. Settle its transfers one by one
            // so that whatever failed it fails alone.
            tracing::warn!(parent: &span, error = %e, "settlement batch failed; settling its transfers one by one");
            let mut distinct = ids.clone();
            distinct.sort();
            distinct.dedup();
            let mut one_by_one = Vec::with_capacity(distinct.len());
            for id in distinct {
                let settled = match ledger::settlement::settle_batch(&jobs.db, &[id]).await {
                    Ok(mut s) => s.pop().ok_or_else(|| "nothing settled".to_owned()),
                    Err(e) => {
                        tracing::warn!(transfer.id = %id, error = %e, "settlement attempt failed");
                        Err(e.to_string())
                    }
                };
                one_by_one.push((id, settled));
            }
            one_by_one
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    queue::metrics::count("corebank_settlement_batches_total", "");

    let mut events = Vec::new();
    let mut outcomes: HashMap<Uuid, Result<Outcome, String>> =
        HashMap::with_capacity(results.len());
    for (id, r) in results {
        let status = match &r {
            Ok(s) => match s.outcome {
                Outcome::Completed => "COMPLETED",
                Outcome::Failed(_) => "FAILED",
                Outcome::Skipped => "SKIPPED",
            },
            Err(_) => "ERROR",
        };
        queue::metrics::count(
            "corebank_settlements_total",
            &format!("status=\"{status}\""),
        );
        match r {
            Ok(s) => {
                if s.outcome != Outcome::Skipped {
                    queue::metrics::observe("corebank_settlement_duration_seconds", "", elapsed);
                }
                events.extend(s.events);
                outcomes.insert(id, Ok(s.outcome));
            }
            Err(e) => {
                outcomes.insert(id, Err(e));
            }
        }
    }
    // Events first, replies after: a job is acknowledged only once its
    // transfer's outcome has been announced.
    queue::after_commit(&jobs.queues, &jobs.events, events).await;
    for (id, reply) in batch {
        let outcome = outcomes
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Err("transfer missing from its batch's results".to_owned()));
        let _ = reply.send(outcome);
    }
}

pub async fn handle(
    job: SettleTransfer,
    batcher: Data<Arc<SettlementBatcher>>,
) -> Result<(), BoxDynError> {
    match batcher.settle(job.transfer_id).await {
        Ok(_) => Ok(()),
        // Infrastructure trouble (database restarting): let apalis retry;
        // the recovery sweep is the backstop if retries run out.
        Err(e) => {
            super::count_job_error("settlement");
            Err(e.into())
        }
    }
}
