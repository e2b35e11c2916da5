//! The `worker` binary: apalis workers only, against PostgreSQL and Redis.

use std::sync::Arc;

use worker::process::{connect_database, fail_config, init_tracing, require_env, shutdown_signal};

#[tokio::main]
async fn main() {
    init_tracing();
    let database_url = require_env("DATABASE_URL");
    let redis_url = require_env("REDIS_URL");
    if !redis_url.starts_with("redis://") && !redis_url.starts_with("rediss://") {
        fail_config("REDIS_URL", "must start with redis:// or rediss://");
    }
    let prefix = std::env::var("REDIS_PREFIX").unwrap_or_else(|_| "corebank".into());
    let (mailer, email_retry) = worker::email_settings().unwrap_or_else(|(var, why)| fail_config(&var, &why));
    let result = async {
        let db = connect_database(&database_url, &worker::process::WORKER_DB_STATEMENTS).await?;
        let queues = queue::Queues::redis(&redis_url, &prefix).await?;
        let events = queue::EventBus::redis(&redis_url, &prefix).await?;
        let bills = queue::BillCache::redis(&redis_url, &prefix).await?;
        tracing::info!(redis.prefix = %prefix, "worker started");
        worker::run(Arc::new(worker::Jobs { db, queues, events, mailer, email_retry, bills }), shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => tracing::info!("worker stopped cleanly"),
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            std::process::exit(1);
        }
    }
}
