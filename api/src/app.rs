//! Start-up: connect, migrate, bootstrap, then serve (and work, if asked).

use std::future::Future;
use std::sync::Arc;

use ledger::auth::{IdentityPolicy, TokenKeys};
use queue::{EventBus, Queues};
use sea_orm::DatabaseConnection;

use crate::config::Config;
use crate::graphql::{self, CoreSchema};

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub queues: Queues,
    pub events: EventBus,
    pub keys: TokenKeys,
    pub identity: IdentityPolicy,
    pub money: ledger::transfers::MoneyPolicy,
    pub schema: CoreSchema,
    pub limiter: crate::limits::Limiter,
    pub bills: queue::BillCache,
    pub requests_per_minute: u64,
    pub graphiql: bool,
    pub introspection: bool,
    /// Flips to true on SIGTERM; long-lived connections close on it.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (mailer, email_retry) = worker::email_settings()
        .unwrap_or_else(|(var, why)| worker::process::fail_config(&var, &why));
    let db = worker::process::connect_database(
        &config.database_url,
        &worker::process::API_DB_STATEMENTS,
    )
    .await?;
    // In-process workers get their own pool: a burst of settlements cannot
    // starve requests of connections, and statements are counted apart.
    let worker_db = if config.with_worker {
        Some(
            worker::process::connect_database(
                &config.database_url,
                &worker::process::WORKER_DB_STATEMENTS,
            )
            .await?,
        )
    } else {
        None
    };
    let holds = ledger::batch::BatchLimits::from_env(
        "HOLD",
        ledger::batch::BatchLimits {
            size_max: 128,
            linger: std::time::Duration::from_millis(1),
            in_flight_max: 2,
        },
    )
    .unwrap_or_else(|(var, why)| worker::process::fail_config(&var, &why));
    ledger::transfers::enable_hold_batching(db.clone(), holds);
    worker::process::track_pool("api", &db);
    if let Some(w) = &worker_db {
        worker::process::track_pool("worker", w);
    }
    let (queues, events) = match &config.redis_url {
        Some(url) => (
            Queues::redis(url, &config.redis_prefix)
                .await
                .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?,
            EventBus::redis(url, &config.redis_prefix)
                .await
                .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?,
        ),
        None => {
            let pool = if config.is_sqlite() {
                worker_db
                    .as_ref()
                    .unwrap_or(&db)
                    .get_sqlite_connection_pool()
                    .clone()
            } else {
                // PostgreSQL without Redis: keep the embedded queue in a
                // SQLite file beside the process.
                tracing::warn!(
                    "REDIS_URL unset with PostgreSQL: job queue kept in corebank-queue.db"
                );
                apalis_sqlite::SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect("sqlite://corebank-queue.db?mode=rwc")
                    .await?
            };
            (
                Queues::embedded(pool, &config.redis_prefix).await?,
                EventBus::in_process(),
            )
        }
    };
    let bills = match &config.redis_url {
        Some(url) => queue::BillCache::redis(url, &config.redis_prefix)
            .await
            .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?,
        None => queue::BillCache::memory(),
    };
    let secret = match &config.jwt_secret {
        Some(s) => s.clone(),
        None => {
            tracing::warn!(
                "JWT_SECRET unset: using a generated key stored in the database (embedded mode only)"
            );
            ledger::auth::stored_jwt_secret(&db).await?
        }
    };
    if let Some((email, password)) = &config.bootstrap_admin {
        ledger::auth::bootstrap_admin(&db, email, password).await?;
    }
    if config.smtp_url.is_none() {
        tracing::info!("SMTP_URL unset: emails are recorded in notifications and logged, not sent");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState {
        db: db.clone(),
        queues: queues.clone(),
        events: events.clone(),
        keys: TokenKeys::from_secret(secret.as_bytes()),
        identity: IdentityPolicy {
            email_verification_required: config.email_verification_required,
            public_url: config.public_url.clone(),
        },
        money: ledger::transfers::MoneyPolicy {
            email_verification_required: config.email_verification_required,
        },
        schema: graphql::build_schema(config.introspection),
        limiter: match &config.redis_url {
            Some(url) => crate::limits::Limiter::redis(url, &config.redis_prefix)
                .await
                .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?,
            None => crate::limits::Limiter::memory(),
        },
        requests_per_minute: config.requests_per_minute,
        bills: bills.clone(),
        graphiql: config.graphiql,
        introspection: config.introspection,
        shutdown: stop_rx.clone(),
    };

    let listener = tokio::net::TcpListener::bind(config.bind_addr)
        .await
        .map_err(|e| anyhow::anyhow!("BIND_ADDR {}: {e}", config.bind_addr))?;
    tracing::info!(addr = %config.bind_addr, workers = config.with_worker, "corebank api listening");

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let workers = if let Some(db) = worker_db {
        let jobs = Arc::new(worker::Jobs {
            db,
            queues,
            events,
            mailer,
            email_retry,
            bills,
        });
        Some(tokio::spawn(worker::run(jobs, stopped(stop_rx.clone()))))
    } else {
        None
    };
    let router = crate::http::router(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop_rx))
    .await?;
    if let Some(w) = workers {
        w.await??;
    }
    Ok(())
}
