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
    let (mailer, email_retry) =
        worker::email_settings().unwrap_or_else(|(var, why)| fail_config(&var, &why));
    let metrics_addr: Option<std::net::SocketAddr> = std::env::var("METRICS_ADDR")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.parse().unwrap_or_else(|_| {
                fail_config("METRICS_ADDR", "must be an address like 127.0.0.1:9464")
            })
        });
    let result = async {
        let db = connect_database(&database_url, &worker::process::WORKER_DB_STATEMENTS).await?;
        worker::process::track_pool("worker", &db);
        let queues = queue::Queues::redis(&redis_url, &prefix).await?;
        let events = queue::EventBus::redis(&redis_url, &prefix).await?;
        let bills = queue::BillCache::redis(&redis_url, &prefix).await?;
        if let Some(addr) = metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("METRICS_ADDR {addr}: {e}"))?;
            tokio::spawn(serve_metrics(listener));
        }
        tracing::info!(redis.prefix = %prefix, "worker started");
        worker::run(
            Arc::new(worker::Jobs {
                db,
                queues,
                events,
                mailer,
                email_retry,
                bills,
            }),
            shutdown_signal(),
        )
        .await
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

/// `GET /metrics` for scrapers: the worker has no other HTTP surface, so a
/// minimal responder is enough (one response per connection).
async fn serve_metrics(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf))
                .await;
            let statements =
                worker::process::WORKER_DB_STATEMENTS.load(std::sync::atomic::Ordering::Relaxed);
            let body = format!(
                "# HELP corebank_worker_db_statements_total SQL statements sent by this worker process.\n\
                 # TYPE corebank_worker_db_statements_total counter\n\
                 corebank_worker_db_statements_total {statements}\n{}{}",
                worker::process::render_pool_metrics(),
                queue::metrics::render()
            );
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
