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
use ledger::batch::{BatchLimits, Coalescer};
use ledger::jobs::SettleTransfer;
use ledger::settlement::{Outcome, Settled};
use tracing::Instrument;
use uuid::Uuid;

use crate::Jobs;

/// Batch bounds of settlement; `SETTLEMENT_BATCH_MAX`,
/// `SETTLEMENT_BATCH_LINGER_MS` and `SETTLEMENT_BATCHES_IN_FLIGHT` override
/// them (a batch size of 1 gives one transaction per transfer, for
/// comparison).
pub fn batch_limits() -> Result<BatchLimits, (String, String)> {
    BatchLimits::from_env(
        "SETTLEMENT",
        BatchLimits {
            size_max: 256,
            linger: Duration::from_millis(2),
            in_flight_max: 2,
        },
    )
}

/// The hand-over point between settlement jobs and batch transactions.
pub struct SettlementBatcher {
    batches: Coalescer<Uuid, Result<Outcome, String>>,
}

impl SettlementBatcher {
    /// Starts the batching task; it ends when the batcher is dropped.
    pub fn start(jobs: Arc<Jobs>, limits: BatchLimits) -> Arc<SettlementBatcher> {
        let batches = Coalescer::start(limits, move |ids: Vec<Uuid>| {
            let jobs = jobs.clone();
            async move { settle_and_announce(&jobs, ids).await }
        });
        Arc::new(SettlementBatcher { batches })
    }

    /// Settles one transfer within some batch and waits for its outcome.
    pub async fn settle(&self, transfer_id: Uuid) -> Result<Outcome, String> {
        self.batches
            .submit(transfer_id)
            .await
            .unwrap_or_else(|| Err("settlement batcher stopped".to_owned()))
    }
}

async fn settle_and_announce(jobs: &Jobs, ids: Vec<Uuid>) -> Vec<Result<Outcome, String>> {
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
    ids.iter()
        .map(|id| {
            outcomes
                .get(id)
                .cloned()
                .unwrap_or_else(|| Err("transfer missing from its batch's results".to_owned()))
        })
        .collect()
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
