//! Settles one transfer: posts it to the ledger or fails it, then publishes.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use ledger::jobs::SettleTransfer;
use tracing::Instrument;

use crate::Jobs;

pub async fn handle(job: SettleTransfer, jobs: Data<Arc<Jobs>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("settle_transfer", transfer.id = %job.transfer_id);
    async move {
        let started = std::time::Instant::now();
        match ledger::settlement::settle(&jobs.db, job.transfer_id).await {
            Ok((outcome, events)) => {
                let status = match outcome {
                    ledger::settlement::Outcome::Completed => "COMPLETED",
                    ledger::settlement::Outcome::Failed(_) => "FAILED",
                    ledger::settlement::Outcome::Skipped => "SKIPPED",
                };
                queue::metrics::count(
                    "corebank_settlements_total",
                    &format!("status=\"{status}\""),
                );
                queue::metrics::observe(
                    "corebank_settlement_duration_seconds",
                    "",
                    started.elapsed().as_secs_f64(),
                );
                queue::after_commit(&jobs.queues, &jobs.events, events).await;
                Ok(())
            }
            Err(e) => {
                // Infrastructure trouble (database restarting): let apalis
                // retry; the recovery sweep is the backstop if retries run out.
                tracing::warn!(error = %e, "settlement attempt failed");
                Err(Box::new(e) as BoxDynError)
            }
        }
    }
    .instrument(span)
    .await
}
