//! Delivers one notification by email, recording the outcome in its row.
//!
//! The retry schedule is kept in the notification row, not in apalis, so
//! the job itself always succeeds once the outcome is recorded; the email
//! sweep re-enqueues the row when its next attempt is due.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use ledger::jobs::SendEmail;
use tracing::Instrument;

use crate::Jobs;
use crate::mailer::SendError;

pub async fn handle(job: SendEmail, jobs: Data<Arc<Jobs>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("send_email", notification.id = %job.notification_id);
    async move {
        let Some(mailer) = &jobs.mailer else {
            return Ok(());
        };
        let Some((n, to)) = ledger::notify::claim_for_send(&jobs.db, job.notification_id).await?
        else {
            // Already sent, dead-lettered, or claimed by another job.
            return Ok(());
        };
        match mailer.send(&to, &n.subject, &n.body).await {
            Ok(()) => {
                ledger::notify::mark_sent(&jobs.db, n.id).await?;
                count_attempt("sent");
                tracing::info!(notification.kind = %n.kind, "email sent");
            }
            Err(SendError::Transient(e)) => {
                let status = ledger::notify::mark_attempt_failed(
                    &jobs.db,
                    n.id,
                    &e,
                    false,
                    jobs.email_retry,
                )
                .await?;
                count_attempt(if status == ledger::notify::FAILED {
                    "dead_exhausted"
                } else {
                    "retry"
                });
                tracing::warn!(error = %e, email.status = status, "email attempt failed");
            }
            Err(SendError::Permanent(e)) => {
                ledger::notify::mark_attempt_failed(&jobs.db, n.id, &e, true, jobs.email_retry)
                    .await?;
                count_attempt("dead_permanent");
                tracing::warn!(error = %e, "email rejected permanently; dead-lettered");
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
    .inspect_err(|_| crate::jobs::count_job_error(queue::EMAIL_QUEUE))
}

/// `corebank_email_attempts_total{outcome}`: sent, retry (rescheduled in the
/// row), dead_exhausted (last attempt failed), dead_permanent (rejected).
fn count_attempt(outcome: &str) {
    queue::metrics::count(
        "corebank_email_attempts_total",
        &format!("outcome=\"{outcome}\""),
    );
}
