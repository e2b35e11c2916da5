//! The background workers of corebank: settlement and recovery sweeps.
//!
//! Job handlers are thin: they call the rules in `ledger` and publish the
//! resulting events. A handler is safe to run twice for the same job, because
//! apalis delivers at least once and the recovery sweep re-enqueues anything
//! left `PENDING`; the database, not the queue, is the source of truth.
//!
//! Layout: `jobs/` has one file per job; `run` wires them to the queues of
//! the `queue` crate. Used by the `worker` binary and, in embedded mode or
//! with `--with-worker`, by the `api` binary. Must not depend on `api`.

pub mod jobs;
pub mod mailer;
pub mod process;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use ledger::jobs::{RefreshBills, ReportBillPayment, SendEmail, SettleTransfer};
use queue::{
    BILLS_QUEUE, EMAIL_QUEUE, EventBus, Queues, REPORTS_QUEUE, SETTLEMENT_QUEUE, Tick, worker_name,
};
use sea_orm::DatabaseConnection;

/// How often an idle worker asks the queue for work.
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// In-flight jobs get this long to finish on SIGTERM before being handed back.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What every job handler needs.
pub struct Jobs {
    pub db: DatabaseConnection,
    pub queues: Queues,
    pub events: EventBus,
    /// None when `SMTP_URL` is unset: notifications stay in the inbox only.
    pub mailer: Option<mailer::Mailer>,
    pub email_retry: ledger::notify::RetryPolicy,
    pub bills: queue::BillCache,
}

/// How many emails one process sends at once.
pub const EMAIL_CONCURRENCY: usize = 4;

/// Reads the email settings shared by the `api` and `worker` binaries.
/// `EMAIL_RETRY_BASE_SECS` and `EMAIL_MAX_ATTEMPTS` exist for tests and
/// drills; the defaults give about a day of retries.
pub fn email_settings()
-> Result<(Option<mailer::Mailer>, ledger::notify::RetryPolicy), (String, String)> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    let mut retry = ledger::notify::RetryPolicy::default();
    if let Some(v) = var("EMAIL_RETRY_BASE_SECS") {
        retry.base_secs = v.parse().map_err(|_| {
            (
                "EMAIL_RETRY_BASE_SECS".to_owned(),
                "must be a whole number of seconds".to_owned(),
            )
        })?;
    }
    if let Some(v) = var("EMAIL_MAX_ATTEMPTS") {
        retry.attempts_max = v.parse().map_err(|_| {
            (
                "EMAIL_MAX_ATTEMPTS".to_owned(),
                "must be a whole number".to_owned(),
            )
        })?;
    }
    let mailer = match var("SMTP_URL") {
        Some(url) => {
            let from =
                var("MAIL_FROM").unwrap_or_else(|| "corebank <no-reply@corebank.local>".into());
            Some(mailer::Mailer::from_url(&url, &from).map_err(|e| ("SMTP_URL".to_owned(), e))?)
        }
        None => None,
    };
    ledger::notify::enable_email_delivery(mailer.is_some());
    Ok((mailer, retry))
}

/// Runs every worker of this process until `shutdown` resolves.
pub async fn run(
    jobs: Arc<Jobs>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_sweep, sweep_stopped) = tokio::sync::watch::channel(false);
    let sweep = tokio::spawn(jobs::recover_pending::run(jobs.clone(), sweep_stopped));

    let batching = jobs::settle_transfer::batch_limits()
        .unwrap_or_else(|(var, why)| process::fail_config(&var, &why));
    let batcher = jobs::settle_transfer::SettlementBatcher::start(jobs.clone(), batching);

    let monitor = Monitor::new()
        .shutdown_timeout(SHUTDOWN_GRACE)
        .should_restart(|ctx, err| {
            // apalis would otherwise swallow a dead worker silently.
            tracing::error!(worker = ctx.name(), error = %err, "worker stopped; restarting");
            true
        });
    // One worker per queue; the same shape on both backends (apalis has no
    // type-erased backend, hence the macro).
    macro_rules! register {
        ($monitor:expr, $job:ty, $queue:expr, $name:expr, $concurrency:expr, $data:expr, $handler:path) => {
            match &jobs.queues {
                q @ Queues::Redis { conn, .. } => {
                    // Fetch as many jobs per round trip as may run at once.
                    let config = q
                        .redis_config($queue)
                        .batch_size($concurrency.clamp(10, 500));
                    let (conn, data) = (conn.clone(), $data);
                    $monitor.register(move |_| {
                        let backend =
                            RedisStorage::<$job>::new(conn.clone()).with_config(config.clone());
                        WorkerBuilder::new(worker_name($name))
                            .backend(PollWith::new(backend, Tick::every(POLL_EVERY)))
                            .concurrency($concurrency)
                            .data(data.clone())
                            .build($handler)
                    })
                }
                q @ Queues::Embedded { pool, .. } => {
                    let (pool, config, data) = (
                        pool.clone(),
                        q.sqlite_config($queue)
                            .batch_size($concurrency.clamp(10, 500)),
                        $data,
                    );
                    $monitor.register(move |_| {
                        let backend = SqliteStorage::<$job>::new(&pool).with_config(config.clone());
                        WorkerBuilder::new(worker_name($name))
                            .backend(PollWith::new(backend, Tick::every(POLL_EVERY)))
                            .concurrency($concurrency)
                            .data(data.clone())
                            .build($handler)
                    })
                }
            }
        };
    }
    let monitor = register!(
        monitor,
        SettleTransfer,
        SETTLEMENT_QUEUE,
        "settlement",
        batching.requests_max(),
        batcher.clone(),
        jobs::settle_transfer::handle
    );
    let monitor = register!(
        monitor,
        SendEmail,
        EMAIL_QUEUE,
        "email",
        EMAIL_CONCURRENCY,
        jobs.clone(),
        jobs::send_email::handle
    );
    let monitor = register!(
        monitor,
        RefreshBills,
        BILLS_QUEUE,
        "bills",
        8,
        jobs.clone(),
        jobs::refresh_bills::handle
    );
    let monitor = register!(
        monitor,
        ReportBillPayment,
        REPORTS_QUEUE,
        "bill-reports",
        8,
        jobs.clone(),
        jobs::report_bill_payment::handle
    );
    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            tracing::info!("shutting down workers");
            Ok(())
        })
        .await;
    let _ = stop_sweep.send(true);
    let _ = sweep.await;
    result.map_err(|e| anyhow::anyhow!("worker monitor failed: {e}"))
}
