//! Process plumbing shared by the `worker` and `api` binaries: logging,
//! database connection, shutdown signals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};

/// SQL statements sent on behalf of API requests, exported on `/metrics`;
/// tests use it to prove that list queries cost a constant number of
/// statements. Workers count separately so their background work (sweeps,
/// settlements) does not blur that measurement.
pub static API_DB_STATEMENTS: AtomicU64 = AtomicU64::new(0);
pub static WORKER_DB_STATEMENTS: AtomicU64 = AtomicU64::new(0);

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,apalis=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// Connects and migrates. SQLite gets several connections (its default is
/// one, which silently serialises everything) and a busy timeout.
pub async fn connect_database(
    url: &str,
    statements: &'static AtomicU64,
) -> anyhow::Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(url.to_owned());
    let sqlite = url.starts_with("sqlite:");
    opts.max_connections(if sqlite { 8 } else { 32 })
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let mut db = Database::connect(opts)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to DATABASE_URL: {e}"))?;
    db.set_metric_callback(|_| {
        statements.fetch_add(1, Ordering::Relaxed);
    });
    migration::migrate(&db)
        .await
        .map_err(|e| anyhow::anyhow!("database migration failed: {e}"))?;
    Ok(db)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Reads a required variable or exits with one clear line naming it.
pub fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => fail_config(name, "is required"),
    }
}

pub fn fail_config(name: &str, why: &str) -> ! {
    eprintln!("corebank: configuration error: {name} {why}");
    std::process::exit(2)
}
