//! The recovery sweep: re-enqueues transfers left `PENDING`.
//!
//! A transfer's settlement job can be lost between the commit and the push
//! (a crash), inside Redis (a flush or a restart without persistence), or
//! with a worker killed mid-job. The transfer row is still `PENDING`, so
//! re-enqueueing it is always safe: settlement is idempotent.

use std::sync::Arc;
use std::time::Duration;

use ledger::jobs::SettleTransfer;
use tokio::sync::watch;

use crate::Jobs;

/// How long a transfer may stay PENDING after its last hand-over before the
/// sweep hands it over again. Far above normal settle time (milliseconds),
/// far below the contract's 60 s.
pub const STALE_AFTER: Duration = Duration::from_secs(5);
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
const BATCH: u64 = 500;

/// Every linked utility account is refreshed this often (`BILLS_REFRESH_SECS`).
pub fn bills_refresh_every() -> Duration {
    std::env::var("BILLS_REFRESH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(15 * 60))
}

pub async fn run(jobs: Arc<Jobs>, mut stop: watch::Receiver<bool>) {
    let mut bills_tick = tokio::time::interval(bills_refresh_every());
    bills_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = bills_tick.tick() => {
                if let Err(e) = refresh_all_bills(&jobs).await {
                    tracing::warn!(error = %e, "periodic bill refresh failed");
                }
                continue;
            }
            _ = stop.changed() => return,
        }
        if let Err(e) = sweep_once(&jobs).await {
            tracing::warn!(error = %e, "recovery sweep failed; will retry");
        }
    }
}

pub async fn sweep_once(jobs: &Jobs) -> anyhow::Result<usize> {
    let before = chrono::Utc::now() - chrono::Duration::from_std(STALE_AFTER)?;
    let ids = ledger::transfers::claim_stale_pending(&jobs.db, before, BATCH).await?;
    for id in &ids {
        jobs.queues
            .push_settlement(SettleTransfer { transfer_id: *id })
            .await?;
    }
    if !ids.is_empty() {
        tracing::info!(count = ids.len(), "re-enqueued stale pending transfers");
    }
    // Emails due for a (re)try: the first attempt whose push was lost, and
    // retries whose backoff has elapsed.
    for id in ledger::bills::claim_due_reports(&jobs.db, BATCH).await? {
        jobs.queues
            .push_report(ledger::jobs::ReportBillPayment { payment_id: id })
            .await?;
    }
    if jobs.mailer.is_some() {
        let due = ledger::notify::claim_due_emails(&jobs.db, BATCH).await?;
        for id in &due {
            jobs.queues
                .push_email(ledger::jobs::SendEmail {
                    notification_id: *id,
                })
                .await?;
        }
    }
    Ok(ids.len())
}

async fn refresh_all_bills(jobs: &Jobs) -> anyhow::Result<()> {
    for link in ledger::bills::all_links(&jobs.db).await? {
        jobs.queues
            .push_refresh(ledger::jobs::RefreshBills { link_id: link.id })
            .await?;
    }
    Ok(())
}
