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

/// Database pools of this process, by role (`api`, `worker`), for the
/// pool gauges on `/metrics`.
static POOLS: std::sync::Mutex<Vec<(&'static str, DatabaseConnection)>> =
    std::sync::Mutex::new(Vec::new());

/// Lists a pool in the `corebank_db_pool_*` gauges; a role is listed once.
pub fn track_pool(role: &'static str, db: &DatabaseConnection) {
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    if !pools.iter().any(|(r, _)| *r == role) {
        pools.push((role, db.clone()));
    }
}

/// (open, idle, max) connections of a sea-orm pool.
pub fn pool_usage(db: &DatabaseConnection) -> (u32, usize, u32) {
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            let p = db.get_postgres_connection_pool();
            (p.size(), p.num_idle(), p.options().get_max_connections())
        }
        sea_orm::DbBackend::Sqlite => {
            let p = db.get_sqlite_connection_pool();
            (p.size(), p.num_idle(), p.options().get_max_connections())
        }
        _ => (0, 0, 0),
    }
}

/// The same pool without the statement counter: for scrape-time queries,
/// which must not show up in `corebank_db_statements_total` (tests measure
/// the statements of API requests with it).
pub fn unmetered(db: &DatabaseConnection) -> DatabaseConnection {
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(
            db.get_postgres_connection_pool().clone(),
        ),
        sea_orm::DbBackend::Sqlite => sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(
            db.get_sqlite_connection_pool().clone(),
        ),
        _ => db.clone(),
    }
}

/// The `corebank_db_pool_*` gauge families of the tracked pools.
pub fn render_pool_metrics() -> String {
    let pools: Vec<(&'static str, (u32, usize, u32))> = POOLS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(role, db)| (*role, pool_usage(db)))
        .collect();
    let family = |pick: &dyn Fn(&(u32, usize, u32)) -> f64| -> Vec<(String, f64)> {
        pools
            .iter()
            .map(|(role, usage)| (format!("pool=\"{role}\""), pick(usage)))
            .collect()
    };
    let mut out = String::new();
    queue::metrics::gauge(
        &mut out,
        "corebank_db_pool_connections",
        "Open database connections of the pool (idle and in use).",
        &family(&|u| u.0 as f64),
    );
    queue::metrics::gauge(
        &mut out,
        "corebank_db_pool_idle_connections",
        "Idle database connections of the pool.",
        &family(&|u| u.1 as f64),
    );
    queue::metrics::gauge(
        &mut out,
        "corebank_db_pool_max_connections",
        "Largest number of connections the pool may open.",
        &family(&|u| u.2 as f64),
    );
    out
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

/// Keeps large allocations out of glibc's heap arenas.
///
/// Password hashing (argon2id) allocates about 19 MiB per hash on blocking
/// threads, each of which gets its own malloc arena. glibc raises its mmap
/// threshold after the first such block is freed, so later ones come from
/// the arenas and stay resident: an `api` that had registered a few dozen
/// users sat at about 750 MB RSS. A fixed 1 MiB threshold makes every big
/// block an mmap that goes back to the system when freed.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters, under glibc's own
    // lock; it is called once at start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
