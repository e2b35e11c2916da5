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
pub mod process;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use ledger::jobs::SettleTransfer;
use queue::{EventBus, Queues, SETTLEMENT_QUEUE, Tick, worker_name};
use sea_orm::DatabaseConnection;

/// How many settlement jobs one process runs at once.
pub const SETTLEMENT_CONCURRENCY: usize = 16;
/// How often an idle worker asks the queue for work.
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// In-flight jobs get this long to finish on SIGTERM before being handed back.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What every job handler needs.
pub struct Jobs {
    pub db: DatabaseConnection,
    pub queues: Queues,
    pub events: EventBus,
}

/// Runs every worker of this process until `shutdown` resolves.
pub async fn run(jobs: Arc<Jobs>, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let (stop_sweep, sweep_stopped) = tokio::sync::watch::channel(false);
    let sweep = tokio::spawn(jobs::recover_pending::run(jobs.clone(), sweep_stopped));

    let monitor = Monitor::new()
        .shutdown_timeout(SHUTDOWN_GRACE)
        .should_restart(|ctx, err| {
            // apalis would otherwise swallow a dead worker silently.
            tracing::error!(worker = ctx.name(), error = %err, "worker stopped; restarting");
            true
        });
    let monitor = match &jobs.queues {
        q @ Queues::Redis { conn, .. } => {
            let (conn, config, data) = (conn.clone(), q.redis_config(SETTLEMENT_QUEUE), jobs.clone());
            monitor.register(move |_| {
                let backend = RedisStorage::<SettleTransfer>::new(conn.clone()).with_config(config.clone());
                WorkerBuilder::new(worker_name("settlement"))
                    .backend(PollWith::new(backend, Tick::every(POLL_EVERY)))
                    .concurrency(SETTLEMENT_CONCURRENCY)
                    .data(data.clone())
                    .build(jobs::settle_transfer::handle)
            })
        }
        q @ Queues::Embedded { pool, .. } => {
            let (pool, config, data) = (pool.clone(), q.sqlite_config(SETTLEMENT_QUEUE), jobs.clone());
            monitor.register(move |_| {
                let backend = SqliteStorage::<SettleTransfer>::new(&pool).with_config(config.clone());
                WorkerBuilder::new(worker_name("settlement"))
                    .backend(PollWith::new(backend, Tick::every(POLL_EVERY)))
                    .concurrency(SETTLEMENT_CONCURRENCY)
                    .data(data.clone())
                    .build(jobs::settle_transfer::handle)
            })
        }
    };
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
