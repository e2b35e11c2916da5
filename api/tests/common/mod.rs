//! Black-box test harness for corebank.
//!
//! Every test spawns the real binaries as child processes and talks to them
//! over HTTP only, the way a client written against
//! `/work/shared/api-contract.md` would:
//!
//! - `TestApp::spawn()` creates a fresh PostgreSQL database
//!   `cb_t_<uuid>` on `TEST_DATABASE_URL`, picks a unique Redis namespace
//!   `REDIS_PREFIX=cbt-<uuid>` on `TEST_REDIS_URL`, and starts
//!   `api --with-worker` on a free port.
//! - `TestApp::builder().workers(n)` starts `api` without `--with-worker` and
//!   `n` separate `worker` processes (`n` may be 0: nothing settles until a
//!   test calls `app.spawn_worker()`).
//! - `.sqlite()` runs the embedded mode: a SQLite file, no Redis, no
//!   `JWT_SECRET`, workers always in-process.
//! - `.email_verification_required()` sets `EMAIL_VERIFICATION=required`.
//! - `app.spawn_second_api()` starts one more `api` process on the same
//!   database and Redis prefix (cross-process subscriptions).
//! - `Ws` is a small GraphQL-over-WebSocket client for `/graphql/ws` (both
//!   subprotocols); `mint_access_token` signs tokens with the harness's
//!   `JWT_SECRET` (e.g. already expired, or expiring in a few seconds).
//!
//! The harness builds nothing: the test script runs
//! `cargo build --workspace --bins --tests` first, and `worker` is looked up
//! next to `env!("CARGO_BIN_EXE_api")`. Unreachable PostgreSQL or Redis fails
//! the test with a clear message; tests are never skipped.
//!
//! Child output goes to `<tmp>/corebank-tests/<prefix>/*.log`. When a test
//! panics, `Drop` prints that directory and the tail of the logs; when it
//! passes, the directory is removed. `Drop` also kills the children, drops
//! the database (`WITH (FORCE)`) and deletes the Redis keys of the prefix,
//! all best-effort.
//!
//! Every GraphQL response goes through `check_response`: each error must carry
//! an `extensions.code` of the contract and a message free of internals (SQL,
//! file paths, panics), so every test also checks the error contract.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::TcpListener;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, QueryResult,
    Statement,
};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use uuid::Uuid;

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const ADMIN_EMAIL: &str = "admin@corebank.test";
pub const ADMIN_PASSWORD: &str = "admin-password-123";
pub const PASSWORD: &str = "correct horse battery";

/// The error codes of contract section 6; any other code fails the test.
pub const ERROR_CODES: &[&str] = &[
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "BAD_USER_INPUT",
    "INVALID_CREDENTIALS",
    "EMAIL_TAKEN",
    "EMAIL_NOT_VERIFIED",
    "INSUFFICIENT_FUNDS",
    "ACCOUNT_FROZEN",
    "ACCOUNT_CLOSED",
    "CURRENCY_MISMATCH",
    "LIMIT_EXCEEDED",
    "IDEMPOTENCY_CONFLICT",
    "RATE_LIMITED",
    "PROVIDER_UNAVAILABLE",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "INTERNAL",
];

/// Substrings (lower-case) that betray internals in an error message.
const LEAK_MARKERS: &[&str] = &[
    "sqlx",
    "select ",
    "insert ",
    "update ",
    "violates",
    "constraint",
    "relation ",
    "syntax error at",
    ".rs:",
    "panicked",
    "redis",
];

/// Variables of the contract's configuration that a developer's shell may
/// hold; they are removed from every child's environment so that only what
/// the harness sets reaches the server.
const CONFIG_VARS: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_PREFIX",
    "BIND_ADDR",
    "JWT_SECRET",
    "SMTP_URL",
    "MAIL_FROM",
    "EMAIL_VERIFICATION",
    "BOOTSTRAP_ADMIN_EMAIL",
    "BOOTSTRAP_ADMIN_PASSWORD",
    "PUBLIC_URL",
    "RUST_LOG",
    "RATE_LIMIT_PER_MINUTE",
    "GRAPHQL_INTROSPECTION",
    "GRAPHIQL",
    "EMAIL_RETRY_BASE_SECS",
    "EMAIL_MAX_ATTEMPTS",
];

pub const TRANSFER_FIELDS: &str = "id kind status amount currency memo failureReason idempotencyKey \
     createdAt settledAt \
     source { accountNumber holderName account { id } } \
     destination { accountNumber holderName account { id } }";

pub const ACCOUNT_FIELDS: &str =
    "id number name kind currency status balance availableBalance createdAt owner { id fullName }";

pub fn test_database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string())
}

pub fn test_redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_TEST_REDIS_URL.to_string())
}

pub fn api_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_api"))
}

pub fn worker_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_api")).with_file_name("worker");
    if !path.exists() {
        panic!(
            "the worker binary is missing at {}: build every binary first with \
             `cargo build --workspace --bins --tests`",
            path.display()
        );
    }
    path
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("api crate lives inside the workspace")
        .to_path_buf()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn random_hex64() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// Replaces the database name (the URL path) of a PostgreSQL URL.
fn with_database(url: &str, db_name: &str) -> String {
    let mut parsed = reqwest::Url::parse(url)
        .unwrap_or_else(|e| panic!("TEST_DATABASE_URL {url:?} is not a URL: {e}"));
    parsed.set_path(&format!("/{db_name}"));
    parsed.set_query(None);
    parsed.to_string()
}

async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .max_connections(max_connections)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    Database::connect(options).await
}

async fn create_database(db_name: &str) {
    let admin_url = test_database_url();
    let conn = connect(&admin_url, 1).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is unreachable at TEST_DATABASE_URL={admin_url}: {e}. \
             Start it with scripts/services.sh (tests are never skipped)."
        )
    });
    // Concurrent CREATE DATABASE can collide on the template database; a few
    // retries make parallel test start-up reliable.
    let mut last_error = None;
    for _ in 0..10 {
        match conn
            .execute_unprepared(&format!("CREATE DATABASE \"{db_name}\""))
            .await
        {
            Ok(_) => {
                last_error = None;
                break;
            }
            Err(e) => {
                last_error = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = conn.close().await;
    if let Some(e) = last_error {
        panic!("could not create test database {db_name}: {e}");
    }
}

async fn drop_database(db_name: &str) {
    if let Ok(conn) = connect(&test_database_url(), 1).await {
        let _ = conn
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
            ))
            .await;
        let _ = conn.close().await;
    }
}

async fn redis_connection() -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(test_redis_url())?;
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| {
        redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out connecting",
        ))
    })?
}

async fn check_redis() {
    let url = test_redis_url();
    let result: redis::RedisResult<String> = async {
        let mut con = redis_connection().await?;
        redis::cmd("PING").query_async(&mut con).await
    }
    .await;
    if let Err(e) = result {
        panic!(
            "Redis is unreachable at TEST_REDIS_URL={url}: {e}. \
             Start it with scripts/services.sh (tests are never skipped)."
        );
    }
}

/// Deletes every Redis key that starts with `prefix` and returns how many.
async fn delete_prefixed_keys(prefix: &str) -> redis::RedisResult<usize> {
    let mut con = redis_connection().await?;
    let pattern = format!("{prefix}*");
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    for chunk in keys.chunks(500) {
        let _: i64 = redis::cmd("DEL").arg(chunk).query_async(&mut con).await?;
    }
    Ok(keys.len())
}

fn open_log(path: &Path) -> (Stdio, Stdio) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open log file {}: {e}", path.display()));
    let err = file.try_clone().expect("clone log file handle");
    (Stdio::from(file), Stdio::from(err))
}

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

#[derive(Clone, Debug)]
enum Backend {
    Postgres { db_name: String },
    Sqlite { path: PathBuf },
}

/// Options for `TestApp`; see the module documentation.
#[derive(Default)]
pub struct TestAppBuilder {
    workers: Option<usize>,
    email_required: bool,
    sqlite: bool,
    extra_env: Vec<(String, String)>,
}

impl TestAppBuilder {
    /// Runs `api` without `--with-worker` plus `n` separate `worker` processes.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    pub fn email_verification_required(mut self) -> Self {
        self.email_required = true;
        self
    }

    /// Embedded mode: SQLite, no Redis, no JWT_SECRET.
    pub fn sqlite(mut self) -> Self {
        self.sqlite = true;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.extra_env.push((key.to_string(), value.to_string()));
        self
    }

    pub async fn spawn(self) -> TestApp {
        let id = Uuid::new_v4().simple().to_string();
        let prefix = format!("cbt-{id}");
        let log_dir = std::env::temp_dir().join("corebank-tests").join(&prefix);
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_dir.display()));

        let mut env: Vec<(String, String)> = Vec::new();
        let backend = if self.sqlite {
            assert!(
                self.workers.is_none(),
                "embedded mode always runs its workers in-process"
            );
            let path = log_dir.join(format!("{id}.db"));
            env.push((
                "DATABASE_URL".into(),
                format!("sqlite://{}?mode=rwc", path.display()),
            ));
            Backend::Sqlite { path }
        } else {
            let db_name = format!("cb_t_{id}");
            check_redis().await;
            create_database(&db_name).await;
            env.push((
                "DATABASE_URL".into(),
                with_database(&test_database_url(), &db_name),
            ));
            env.push(("REDIS_URL".into(), test_redis_url()));
            env.push(("REDIS_PREFIX".into(), prefix.clone()));
            env.push(("JWT_SECRET".into(), random_hex64()));
            Backend::Postgres { db_name }
        };
        env.push((
            "EMAIL_VERIFICATION".into(),
            if self.email_required {
                "required"
            } else {
                "optional"
            }
            .into(),
        ));
        env.push(("BOOTSTRAP_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()));
        env.push(("BOOTSTRAP_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()));
        env.push(("RUST_LOG".into(), "info,sqlx=warn".into()));
        // Tests poll hard; the per-viewer request limit has its own test.
        env.push(("RATE_LIMIT_PER_MINUTE".into(), "1000000".into()));
        env.extend(self.extra_env);

        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let base_url = format!("http://{addr}");
        let api_log = log_dir.join("api.log");

        let mut command = Command::new(api_binary());
        for var in CONFIG_VARS {
            command.env_remove(var);
        }
        command.envs(env.iter().cloned());
        command.env("BIND_ADDR", &addr);
        if !self.sqlite && self.workers.is_none() {
            command.arg("--with-worker");
        }
        let (out, err) = open_log(&api_log);
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", api_binary().display()));

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build()
            .expect("http client");

        let mut app = TestApp {
            api_client: ApiClient {
                base_url,
                http,
                log_dir: log_dir.clone(),
            },
            addr,
            prefix,
            log_dir,
            backend,
            child_env: env,
            api: Some(child),
            workers: Vec::new(),
            worker_seq: AtomicUsize::new(0),
            db: tokio::sync::OnceCell::new(),
            extra_apis: std::sync::Mutex::new(Vec::new()),
        };
        app.wait_healthy(Duration::from_secs(60)).await;
        for _ in 0..self.workers.unwrap_or(0) {
            let worker = app.spawn_worker().await;
            app.workers.push(worker);
        }
        app
    }
}

/// A running corebank deployment for one test. Derefs to `ApiClient`, so
/// `app.gql(..)`, `app.register(..)` etc. work directly; clone
/// `app.client()` to use it from spawned tasks.
pub struct TestApp {
    api_client: ApiClient,
    pub addr: String,
    pub prefix: String,
    pub log_dir: PathBuf,
    backend: Backend,
    child_env: Vec<(String, String)>,
    api: Option<Child>,
    /// Worker processes started by `builder().workers(n)`.
    pub workers: Vec<WorkerHandle>,
    worker_seq: AtomicUsize,
    db: tokio::sync::OnceCell<DatabaseConnection>,
    /// Extra `api` processes started by `spawn_second_api`.
    extra_apis: std::sync::Mutex<Vec<Child>>,
}

impl Deref for TestApp {
    type Target = ApiClient;
    fn deref(&self) -> &ApiClient {
        &self.api_client
    }
}

impl TestApp {
    /// The process id of the `api` child.
    pub fn api_pid(&self) -> u32 {
        self.api
            .as_ref()
            .and_then(|c| c.id())
            .expect("the api process is running")
    }

    pub async fn spawn() -> TestApp {
        TestApp::builder().spawn().await
    }

    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// A cheap, cloneable handle for `tokio::spawn`ed client tasks.
    pub fn client(&self) -> ApiClient {
        self.api_client.clone()
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self.backend, Backend::Sqlite { .. })
    }

    pub fn database_url(&self) -> String {
        self.child_env
            .iter()
            .find(|(k, _)| k == "DATABASE_URL")
            .map(|(_, v)| v.clone())
            .expect("DATABASE_URL is always set")
    }

    async fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/healthz", self.base_url);
        loop {
            if let Some(child) = self.api.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "api exited with {status} before becoming healthy; log {}:\n{}",
                    self.log_dir.join("api.log").display(),
                    log_tail(&self.log_dir.join("api.log"), 60)
                );
            }
            if let Ok(resp) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && resp.status() == reqwest::StatusCode::OK
            {
                // A free port can be taken by another test's process between
                // `free_port` and the bind; then this api exits and the 200
                // came from a stranger.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(child) = self.api.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "api exited with {status} right after /healthz answered; log {}:\n{}",
                        self.log_dir.join("api.log").display(),
                        log_tail(&self.log_dir.join("api.log"), 60)
                    );
                }
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "api did not answer 200 on /healthz within {timeout:?}; log {}:\n{}",
                    self.log_dir.join("api.log").display(),
                    log_tail(&self.log_dir.join("api.log"), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts one more `worker` process with the api's environment (minus
    /// `BIND_ADDR`). The handle kills it when dropped.
    pub async fn spawn_worker(&self) -> WorkerHandle {
        assert!(
            !self.is_sqlite(),
            "embedded mode has no separate worker processes"
        );
        let binary = worker_binary();
        let n = self.worker_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let log = self.log_dir.join(format!("worker-{n}.log"));
        let mut command = Command::new(&binary);
        for var in CONFIG_VARS {
            command.env_remove(var);
        }
        command.envs(self.child_env.iter().cloned());
        let (out, err) = open_log(&log);
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        WorkerHandle { child, log }
    }

    /// Starts one more `api` process on the same database, Redis and
    /// `REDIS_PREFIX` (same environment, another `BIND_ADDR`, no
    /// `--with-worker`), waits until it answers `/healthz` and returns its
    /// address (`127.0.0.1:<port>`). It logs to `api-<n>.log` and is killed
    /// with the other children.
    pub async fn spawn_second_api(&self) -> String {
        assert!(
            !self.is_sqlite(),
            "embedded mode cannot share its SQLite file between api processes"
        );
        let n = self.extra_apis.lock().map(|v| v.len()).unwrap_or(0) + 2;
        let log = self.log_dir.join(format!("api-{n}.log"));
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(api_binary());
        for var in CONFIG_VARS {
            command.env_remove(var);
        }
        command.envs(self.child_env.iter().cloned());
        command.env("BIND_ADDR", &addr);
        let (out, err) = open_log(&log);
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", api_binary().display()));

        let timeout = Duration::from_secs(60);
        let deadline = Instant::now() + timeout;
        let url = format!("http://{addr}/healthz");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "api #{n} exited with {status} before becoming healthy; log {}:\n{}",
                    log.display(),
                    log_tail(&log, 60)
                );
            }
            if let Ok(resp) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && resp.status() == reqwest::StatusCode::OK
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "api #{n} exited with {status} right after /healthz answered; log {}:\n{}",
                        log.display(),
                        log_tail(&log, 60)
                    );
                }
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "api #{n} did not answer 200 on /healthz within {timeout:?}; log {}:\n{}",
                    log.display(),
                    log_tail(&log, 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.extra_apis.lock().expect("extra_apis lock").push(child);
        addr
    }

    /// An `ApiClient` for another `api` process of this deployment (see
    /// `spawn_second_api`).
    pub fn client_at(&self, addr: &str) -> ApiClient {
        ApiClient {
            base_url: format!("http://{addr}"),
            http: self.http.clone(),
            log_dir: self.log_dir.clone(),
        }
    }

    /// The `JWT_SECRET` the harness gave the processes (PostgreSQL mode only;
    /// embedded mode generates its own key).
    pub fn jwt_secret(&self) -> String {
        self.child_env
            .iter()
            .find(|(k, _)| k == "JWT_SECRET")
            .map(|(_, v)| v.clone())
            .expect("JWT_SECRET is only set by the harness in PostgreSQL mode")
    }

    /// Mints an access token for `s` exactly as the server would (HS256,
    /// `iss` corebank, `aud` corebank-api, role CUSTOMER, token version 0 as
    /// for a fresh user) but with the given `exp` (Unix seconds).
    pub fn mint_customer_token(&self, s: &Session, exp: i64) -> String {
        mint_access_token(&self.jwt_secret(), &s.user_id, "CUSTOMER", 0, exp)
    }

    /// A connection to the test database, for invariant checks in SQL.
    pub async fn db(&self) -> &DatabaseConnection {
        self.db
            .get_or_init(|| async {
                let url = self.database_url();
                connect(&url, 2)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to the test database {url}: {e}"))
            })
            .await
    }

    /// Rows of a raw PostgreSQL query.
    pub async fn sql(&self, sql: &str) -> Vec<QueryResult> {
        let backend = if self.is_sqlite() {
            DbBackend::Sqlite
        } else {
            DbBackend::Postgres
        };
        self.db()
            .await
            .query_all_raw(Statement::from_string(backend, sql.to_string()))
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {sql}: {e}"))
    }

    /// Simulates losing the queue: deletes every Redis key of this test's
    /// `REDIS_PREFIX` (SCAN + DEL) and returns how many were deleted. A real
    /// FLUSHALL would wipe the queues of the tests running in parallel on the
    /// same Redis, hence the prefix-scoped version.
    pub async fn wipe_redis_queue(&self) -> usize {
        assert!(!self.is_sqlite(), "embedded mode has no Redis");
        delete_prefixed_keys(&self.prefix)
            .await
            .unwrap_or_else(|e| panic!("wiping Redis keys {}*: {e}", self.prefix))
    }

    /// Kills the processes and drops the database now (Drop does the same).
    pub async fn shutdown(mut self) {
        self.kill_children();
        if let Backend::Postgres { db_name } = &self.backend {
            if let Some(db) = self.db.take() {
                let _ = db.close().await;
            }
            drop_database(db_name).await;
            let _ = delete_prefixed_keys(&self.prefix).await;
            // Nothing left for Drop to clean but the log directory.
            self.backend = Backend::Sqlite {
                path: PathBuf::new(),
            };
        }
    }

    fn kill_children(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.child.start_kill();
        }
        if let Some(api) = self.api.as_mut() {
            let _ = api.start_kill();
        }
        if let Ok(mut extra) = self.extra_apis.lock() {
            for api in extra.iter_mut() {
                let _ = api.start_kill();
            }
        }
    }

    /// Checks every ledger invariant of the contract in SQL (PostgreSQL
    /// only) and returns the customer total per currency in minor units.
    pub async fn assert_ledger_consistent(&self) -> LedgerReport {
        assert!(!self.is_sqlite());
        let logs = self.log_dir.display().to_string();

        // Every account's balance is the sum of its ledger entries, and no
        // hold survives once nothing is pending.
        let sums = self
            .sql(
                "SELECT account_id::text AS account_id, SUM(amount_minor)::bigint AS total \
                 FROM ledger_entries GROUP BY account_id",
            )
            .await;
        let mut ledger_by_account = std::collections::HashMap::new();
        for row in &sums {
            let id: String = row.try_get("", "account_id").unwrap();
            let total: i64 = row.try_get("", "total").unwrap();
            ledger_by_account.insert(id, total);
        }
        let accounts = self
            .sql(
                "SELECT id::text AS id, is_system, currency, balance_minor, held_minor \
                 FROM accounts",
            )
            .await;
        let mut report = LedgerReport::default();
        for row in &accounts {
            let id: String = row.try_get("", "id").unwrap();
            let is_system: bool = row.try_get("", "is_system").unwrap();
            let currency: String = row.try_get("", "currency").unwrap();
            let balance: i64 = row.try_get("", "balance_minor").unwrap();
            let held: i64 = row.try_get("", "held_minor").unwrap();
            let ledger = ledger_by_account.get(&id).copied().unwrap_or(0);
            assert_eq!(
                balance, ledger,
                "account {id}: balance_minor {balance} != sum of its ledger entries {ledger} (logs: {logs})"
            );
            assert_eq!(
                held, 0,
                "account {id}: held_minor {held} != 0 with nothing pending (logs: {logs})"
            );
            if !is_system {
                assert!(
                    balance >= 0,
                    "customer account {id} has a negative balance {balance} (logs: {logs})"
                );
                *report.customer_total_minor.entry(currency).or_insert(0) += balance;
            }
        }

        // Double entry: postings sum to zero per currency.
        let per_currency = self
            .sql(
                "SELECT currency, SUM(amount_minor)::bigint AS total \
                 FROM ledger_entries GROUP BY currency",
            )
            .await;
        for row in &per_currency {
            let currency: String = row.try_get("", "currency").unwrap();
            let total: i64 = row.try_get("", "total").unwrap();
            assert_eq!(
                total, 0,
                "ledger entries of {currency} sum to {total}, not 0 (logs: {logs})"
            );
        }

        // Nothing pending, and exactly-once effect: a COMPLETED transfer has
        // exactly two entries (-amount on the source side, +amount on the
        // destination side), a FAILED one has none.
        let transfers = self
            .sql(
                "SELECT t.id::text AS id, upper(t.status) AS status, t.amount_minor, \
                   t.source_account_id::text AS src, t.destination_account_id::text AS dst, \
                   COUNT(e.id)::bigint AS entries, \
                   COALESCE(SUM(e.amount_minor), 0)::bigint AS entry_sum, \
                   COALESCE(MIN(e.amount_minor), 0)::bigint AS min_entry, \
                   COALESCE(MAX(e.amount_minor), 0)::bigint AS max_entry, \
                   (SELECT e2.account_id::text FROM ledger_entries e2 \
                      WHERE e2.transfer_id = t.id AND e2.amount_minor < 0 LIMIT 1) AS debited, \
                   (SELECT e3.account_id::text FROM ledger_entries e3 \
                      WHERE e3.transfer_id = t.id AND e3.amount_minor > 0 LIMIT 1) AS credited \
                 FROM transfers t LEFT JOIN ledger_entries e ON e.transfer_id = t.id \
                 GROUP BY t.id, t.status, t.amount_minor, t.source_account_id, t.destination_account_id",
            )
            .await;
        for row in &transfers {
            let id: String = row.try_get("", "id").unwrap();
            let status: String = row.try_get("", "status").unwrap();
            let amount: i64 = row.try_get("", "amount_minor").unwrap();
            let src: Option<String> = row.try_get("", "src").unwrap();
            let dst: Option<String> = row.try_get("", "dst").unwrap();
            let entries: i64 = row.try_get("", "entries").unwrap();
            let entry_sum: i64 = row.try_get("", "entry_sum").unwrap();
            let min_entry: i64 = row.try_get("", "min_entry").unwrap();
            let max_entry: i64 = row.try_get("", "max_entry").unwrap();
            let debited: Option<String> = row.try_get("", "debited").unwrap();
            let credited: Option<String> = row.try_get("", "credited").unwrap();
            match status.as_str() {
                "COMPLETED" => {
                    assert_eq!(
                        entries, 2,
                        "COMPLETED transfer {id} has {entries} ledger entries, not 2 (logs: {logs})"
                    );
                    assert_eq!(
                        entry_sum, 0,
                        "entries of transfer {id} sum to {entry_sum} (logs: {logs})"
                    );
                    assert_eq!(
                        (min_entry, max_entry),
                        (-amount, amount),
                        "entries of transfer {id} do not move its amount {amount} (logs: {logs})"
                    );
                    if let Some(src) = src {
                        assert_eq!(
                            debited.as_deref(),
                            Some(src.as_str()),
                            "transfer {id} debited the wrong account (logs: {logs})"
                        );
                    }
                    if let Some(dst) = dst {
                        assert_eq!(
                            credited.as_deref(),
                            Some(dst.as_str()),
                            "transfer {id} credited the wrong account (logs: {logs})"
                        );
                    }
                    report.completed += 1;
                }
                "FAILED" => {
                    assert_eq!(
                        entries, 0,
                        "FAILED transfer {id} has {entries} ledger entries (logs: {logs})"
                    );
                    report.failed += 1;
                }
                other => {
                    panic!("transfer {id} is {other}, expected COMPLETED or FAILED (logs: {logs})")
                }
            }
        }
        report
    }
}

/// What `assert_ledger_consistent` found.
#[derive(Debug, Default)]
pub struct LedgerReport {
    pub customer_total_minor: std::collections::HashMap<String, i64>,
    pub completed: usize,
    pub failed: usize,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill_children();
        let panicking = std::thread::panicking();
        if panicking {
            let mut message = format!(
                "\n==== corebank test failed; child logs kept in {} ====\n",
                self.log_dir.display()
            );
            let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.log_dir)
                .map(|dir| {
                    dir.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "log"))
                        .collect()
                })
                .unwrap_or_default();
            logs.sort();
            for log in logs {
                let _ = write!(
                    message,
                    "---- tail of {} ----\n{}\n",
                    log.display(),
                    log_tail(&log, 40)
                );
            }
            eprintln!("{message}");
        }
        if let Backend::Postgres { db_name } = &self.backend {
            let db_name = db_name.clone();
            let prefix = self.prefix.clone();
            let db = self.db.take();
            // Drop cannot await, and the test's runtime may be single
            // threaded: clean up from a helper thread with its own runtime.
            let cleanup = std::thread::spawn(move || {
                drop(db);
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    runtime.block_on(async {
                        let _ = tokio::time::timeout(Duration::from_secs(15), async {
                            drop_database(&db_name).await;
                            let _ = delete_prefixed_keys(&prefix).await;
                        })
                        .await;
                    });
                }
            });
            let _ = cleanup.join();
        }
        if !panicking {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// A `worker` process. Dropping it kills it.
pub struct WorkerHandle {
    child: Child,
    pub log: PathBuf,
}

impl WorkerHandle {
    /// SIGKILL (no chance to hand back jobs), then reaps the process.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then waits up to `timeout` for the exit status. Panics when
    /// the worker is still running after `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().expect("worker still running");
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for worker"),
            Err(_) => panic!(
                "worker did not exit within {timeout:?} of SIGTERM; log {}:\n{}",
                self.log.display(),
                log_tail(&self.log, 40)
            ),
        }
    }

    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

// ---------------------------------------------------------------------------
// GraphQL client
// ---------------------------------------------------------------------------

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub user_id: String,
    pub email: String,
    pub full_name: String,
}

impl Session {
    pub fn token(&self) -> Option<&str> {
        Some(&self.access_token)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRef {
    pub id: String,
    pub number: String,
    pub currency: String,
}

/// HTTP + GraphQL client bound to one `api` process.
#[derive(Clone)]
pub struct ApiClient {
    pub base_url: String,
    pub http: reqwest::Client,
    pub log_dir: PathBuf,
}

/// Checks the error contract on a GraphQL response and returns it. Panics
/// when an error lacks a contract code or leaks internals.
pub fn check_response(resp: Value) -> Value {
    if let Some(errors) = resp.get("errors") {
        let list = errors
            .as_array()
            .unwrap_or_else(|| panic!("`errors` is not a list: {resp}"));
        assert!(!list.is_empty(), "`errors` is present but empty: {resp}");
        for error in list {
            let code = error
                .pointer("/extensions/code")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("error without extensions.code: {error}"));
            assert!(
                ERROR_CODES.contains(&code),
                "error code {code:?} is not one of the contract's codes: {error}"
            );
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("error without a message: {error}"));
            let lower = message.to_lowercase();
            for marker in LEAK_MARKERS {
                assert!(
                    !lower.contains(marker),
                    "error message leaks internals ({marker:?}): {error}"
                );
            }
        }
    }
    resp
}

/// The codes of a response's errors, in order.
pub fn error_codes(resp: &Value) -> Vec<String> {
    resp.get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.pointer("/extensions/code").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The `data` of a response that must have no errors.
#[track_caller]
pub fn expect_data(resp: Value) -> Value {
    if let Some(errors) = resp.get("errors") {
        panic!("expected data, got errors: {errors:#}");
    }
    resp.get("data")
        .cloned()
        .filter(|d| !d.is_null())
        .unwrap_or_else(|| panic!("response without data: {resp}"))
}

/// Asserts that the response failed with `code` (on any of its errors).
#[track_caller]
pub fn expect_code(resp: &Value, code: &str) {
    let codes = error_codes(resp);
    assert!(
        codes.iter().any(|c| c == code),
        "expected error {code}, got {}",
        if codes.is_empty() {
            format!("success: {resp}")
        } else {
            format!("{codes:?}: {resp}")
        }
    );
}

/// Asserts that the response failed with one of `codes`.
#[track_caller]
pub fn expect_one_of(resp: &Value, codes: &[&str]) {
    let got = error_codes(resp);
    assert!(
        got.iter().any(|c| codes.contains(&c.as_str())),
        "expected one of {codes:?}, got {}",
        if got.is_empty() {
            format!("success: {resp}")
        } else {
            format!("{got:?}: {resp}")
        }
    );
}

pub fn key() -> String {
    format!("k-{}", Uuid::new_v4())
}

fn str_field(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("missing string at {pointer} in {value}"))
        .to_string()
}

impl ApiClient {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// POSTs a GraphQL request and returns the checked JSON response.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        self.gql_body(token, &json!({ "query": query, "variables": variables }))
            .await
    }

    /// POSTs an arbitrary JSON body to /graphql; the response is checked.
    pub async fn gql_body(&self, token: Option<&str>, body: &Value) -> Value {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap_or_else(|e| {
            panic!(
                "POST /graphql failed: {e} (logs: {})",
                self.log_dir.display()
            )
        });
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
            panic!(
                "POST /graphql answered {status} with a non-JSON body: {text:.500} (logs: {})",
                self.log_dir.display()
            )
        });
        check_response(value)
    }

    pub async fn get(&self, path: &str, accept: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("Accept", accept)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} failed: {e} (logs: {})", self.log_dir.display()))
    }

    // -- auth ---------------------------------------------------------------

    pub async fn register_raw(&self, email: &str, password: &str, full_name: &str) -> Value {
        self.gql(
            None,
            "mutation R($e: String!, $p: String!, $n: String!) { \
               register(input: {email: $e, password: $p, fullName: $n}) { \
                 accessToken refreshToken user { id email fullName role emailVerified } } }",
            json!({ "e": email, "p": password, "n": full_name }),
        )
        .await
    }

    pub async fn register(&self, email: &str, password: &str, full_name: &str) -> Session {
        let data = expect_data(self.register_raw(email, password, full_name).await);
        session_from(&data["register"], full_name)
    }

    /// Registers `u-<uuid>@example.test` with the password `PASSWORD`.
    pub async fn register_random(&self) -> Session {
        let id = Uuid::new_v4().simple().to_string();
        let name = format!("Holder {}", &id[..8]);
        self.register(&format!("u-{id}@example.test"), PASSWORD, &name)
            .await
    }

    pub async fn login_raw(&self, email: &str, password: &str) -> Value {
        self.gql(
            None,
            "mutation L($e: String!, $p: String!) { \
               login(input: {email: $e, password: $p}) { \
                 accessToken refreshToken user { id email fullName role emailVerified } } }",
            json!({ "e": email, "p": password }),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let data = expect_data(self.login_raw(email, password).await);
        let name = str_field(&data, "/login/user/fullName");
        session_from(&data["login"], &name)
    }

    /// Logs in as the bootstrap admin.
    pub async fn admin(&self) -> Session {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    pub async fn refresh_raw(&self, refresh_token: &str) -> Value {
        self.gql(
            None,
            "mutation F($t: String!) { refreshToken(refreshToken: $t) { \
               accessToken refreshToken user { id email fullName role emailVerified } } }",
            json!({ "t": refresh_token }),
        )
        .await
    }

    pub async fn me_raw(&self, token: Option<&str>) -> Value {
        self.gql(
            token,
            "{ me { id email fullName role emailVerified createdAt } }",
            json!({}),
        )
        .await
    }

    // -- accounts -------------------------------------------------------------

    pub async fn open_account_raw(&self, s: &Session, kind: &str, currency: &str) -> Value {
        self.gql(
            s.token(),
            &format!(
                "mutation O($k: AccountKind!, $c: String!) {{ \
                   openAccount(input: {{kind: $k, currency: $c}}) {{ {ACCOUNT_FIELDS} }} }}"
            ),
            json!({ "k": kind, "c": currency }),
        )
        .await
    }

    pub async fn open_account(&self, s: &Session, kind: &str, currency: &str) -> AccountRef {
        let data = expect_data(self.open_account_raw(s, kind, currency).await);
        AccountRef {
            id: str_field(&data, "/openAccount/id"),
            number: str_field(&data, "/openAccount/number"),
            currency: currency.to_string(),
        }
    }

    pub async fn account_raw(&self, s: &Session, id: &str) -> Value {
        self.gql(
            s.token(),
            &format!("query A($id: ID!) {{ account(id: $id) {{ {ACCOUNT_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await
    }

    /// The account as JSON (`balance`, `availableBalance`, `status`, ...).
    pub async fn account(&self, s: &Session, id: &str) -> Value {
        expect_data(self.account_raw(s, id).await)["account"].clone()
    }

    pub async fn close_account_raw(&self, s: &Session, id: &str) -> Value {
        self.gql(
            s.token(),
            &format!("mutation C($id: ID!) {{ closeAccount(id: $id) {{ {ACCOUNT_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await
    }

    pub async fn add_contact(&self, s: &Session, name: &str, number: &str) -> String {
        let data = expect_data(
            self.gql(
                s.token(),
                "mutation C($n: String!, $a: String!) { \
                   addContact(input: {name: $n, accountNumber: $a}) { id name accountNumber } }",
                json!({ "n": name, "a": number }),
            )
            .await,
        );
        str_field(&data, "/addContact/id")
    }

    // -- money ----------------------------------------------------------------

    pub async fn deposit_raw(
        &self,
        s: &Session,
        account_id: &str,
        amount: impl Serialize,
        key: &str,
    ) -> Value {
        self.gql(
            s.token(),
            &format!(
                "mutation D($acc: ID!, $amt: Decimal!, $key: String!) {{ \
                   deposit(input: {{accountId: $acc, amount: $amt, idempotencyKey: $key}}) \
                   {{ {TRANSFER_FIELDS} }} }}"
            ),
            json!({ "acc": account_id, "amt": amount, "key": key }),
        )
        .await
    }

    pub async fn deposit(&self, s: &Session, account_id: &str, amount: &str, key: &str) -> Value {
        expect_data(self.deposit_raw(s, account_id, amount, key).await)["deposit"].clone()
    }

    pub async fn withdraw_raw(
        &self,
        s: &Session,
        account_id: &str,
        amount: impl Serialize,
        key: &str,
    ) -> Value {
        self.gql(
            s.token(),
            &format!(
                "mutation W($acc: ID!, $amt: Decimal!, $key: String!) {{ \
                   withdraw(input: {{accountId: $acc, amount: $amt, idempotencyKey: $key}}) \
                   {{ {TRANSFER_FIELDS} }} }}"
            ),
            json!({ "acc": account_id, "amt": amount, "key": key }),
        )
        .await
    }

    pub async fn withdraw(&self, s: &Session, account_id: &str, amount: &str, key: &str) -> Value {
        expect_data(self.withdraw_raw(s, account_id, amount, key).await)["withdraw"].clone()
    }

    pub async fn transfer_raw(
        &self,
        s: &Session,
        from_id: &str,
        to_number: &str,
        amount: impl Serialize,
        key: &str,
    ) -> Value {
        self.gql(
            s.token(),
            &format!(
                "mutation T($from: ID!, $to: String!, $amt: Decimal!, $key: String!) {{ \
                   transfer(input: {{fromAccountId: $from, toAccountNumber: $to, amount: $amt, \
                                    idempotencyKey: $key}}) {{ {TRANSFER_FIELDS} }} }}"
            ),
            json!({ "from": from_id, "to": to_number, "amt": amount, "key": key }),
        )
        .await
    }

    pub async fn transfer(
        &self,
        s: &Session,
        from_id: &str,
        to_number: &str,
        amount: &str,
        key: &str,
    ) -> Value {
        expect_data(self.transfer_raw(s, from_id, to_number, amount, key).await)["transfer"].clone()
    }

    pub async fn transfer_to_contact_raw(
        &self,
        s: &Session,
        from_id: &str,
        contact_id: &str,
        amount: &str,
        key: &str,
    ) -> Value {
        self.gql(
            s.token(),
            &format!(
                "mutation T($from: ID!, $c: ID!, $amt: Decimal!, $key: String!) {{ \
                   transfer(input: {{fromAccountId: $from, toContactId: $c, amount: $amt, \
                                    idempotencyKey: $key}}) {{ {TRANSFER_FIELDS} }} }}"
            ),
            json!({ "from": from_id, "c": contact_id, "amt": amount, "key": key }),
        )
        .await
    }

    pub async fn transfer_by_id_raw(&self, s: &Session, id: &str) -> Value {
        self.gql(
            s.token(),
            &format!("query T($id: ID!) {{ transfer(id: $id) {{ {TRANSFER_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await
    }

    pub async fn transfer_by_id(&self, s: &Session, id: &str) -> Value {
        expect_data(self.transfer_by_id_raw(s, id).await)["transfer"].clone()
    }

    /// Polls `transfer(id)` every 20 ms until it is no longer PENDING.
    pub async fn wait_transfer_final(&self, s: &Session, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let transfer = self.transfer_by_id(s, id).await;
            if transfer["status"] != "PENDING" {
                return transfer;
            }
            if Instant::now() > deadline {
                panic!(
                    "transfer {id} still PENDING after {timeout:?}: {transfer} (logs: {})",
                    self.log_dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens a CHECKING account, deposits `amount` and waits until the
    /// deposit is COMPLETED.
    pub async fn funded_account(&self, s: &Session, currency: &str, amount: &str) -> AccountRef {
        let account = self.open_account(s, "CHECKING", currency).await;
        let deposit = self.deposit(s, &account.id, amount, &key()).await;
        let id = deposit["id"].as_str().expect("deposit id").to_string();
        let done = self
            .wait_transfer_final(s, &id, Duration::from_secs(30))
            .await;
        assert_eq!(done["status"], "COMPLETED", "funding deposit: {done}");
        account
    }

    /// Admin: polls `allTransfers(status: PENDING)` until its totalCount is 0.
    pub async fn wait_no_pending(&self, admin: &Session, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = self.count_transfers(admin, Some("PENDING")).await;
            if pending == 0 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{pending} transfers still PENDING after {timeout:?} (logs: {})",
                    self.log_dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Admin: `allTransfers(status:)` totalCount.
    pub async fn count_transfers(&self, admin: &Session, status: Option<&str>) -> i64 {
        let data = expect_data(
            self.gql(
                admin.token(),
                "query P($s: TransferStatus) { allTransfers(status: $s, first: 1) { totalCount } }",
                json!({ "s": status }),
            )
            .await,
        );
        data["allTransfers"]["totalCount"]
            .as_i64()
            .unwrap_or_else(|| panic!("totalCount is not an integer: {data}"))
    }

    /// Admin: the trial balance lines keyed by currency.
    pub async fn trial_balance(&self, admin: &Session) -> Vec<Value> {
        let data = expect_data(
            self.gql(
                admin.token(),
                "{ trialBalance { currency customerTotal systemTotal net } }",
                json!({}),
            )
            .await,
        );
        data["trialBalance"]
            .as_array()
            .expect("trialBalance is a list")
            .clone()
    }

    pub async fn notifications(&self, s: &Session) -> Vec<Value> {
        let data = expect_data(
            self.gql(
                s.token(),
                "{ notifications(first: 20) { edges { node { id kind subject body emailStatus createdAt } } } }",
                json!({}),
            )
            .await,
        );
        data["notifications"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"].clone())
            .collect()
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics", "text/plain").await;
        assert_eq!(response.status(), 200, "/metrics status");
        response.text().await.expect("metrics body")
    }
}

fn session_from(payload: &Value, full_name: &str) -> Session {
    Session {
        access_token: str_field(payload, "/accessToken"),
        refresh_token: str_field(payload, "/refreshToken"),
        user_id: str_field(payload, "/user/id"),
        email: str_field(payload, "/user/email"),
        full_name: full_name.to_string(),
    }
}

/// Sum of every sample of a Prometheus metric (with or without labels).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = if rest.starts_with('{') {
            match rest.find('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue; // another metric whose name starts with `name`
        };
        let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

/// Luhn check over all digits (the last one being the check digit).
pub fn luhn_valid(number: &str) -> bool {
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    luhn_sum(number).is_multiple_of(10)
}

fn luhn_sum(number: &str) -> u32 {
    number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum()
}

/// Appends the Luhn check digit to `payload`.
pub fn with_luhn_digit(payload: &str) -> String {
    for d in 0..10 {
        let candidate = format!("{payload}{d}");
        if luhn_valid(&candidate) {
            return candidate;
        }
    }
    unreachable!("one check digit always fits")
}

/// Parses a contract `Decimal` string with exactly `digits` minor digits.
#[track_caller]
pub fn minor(amount: &str, digits: u32) -> i64 {
    let (negative, body) = match amount.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, amount),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    assert_eq!(
        frac.len() as u32,
        digits,
        "{amount:?} does not carry exactly {digits} minor digits"
    );
    assert!(
        !int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()),
        "{amount:?} is not a decimal"
    );
    assert!(
        frac.bytes().all(|b| b.is_ascii_digit()),
        "{amount:?} is not a decimal"
    );
    let value: i64 = format!("{int}{frac}").parse().expect("decimal fits i64");
    if negative { -value } else { value }
}

/// Formats minor units with `digits` decimals, as the contract outputs them.
pub fn fmt_minor(value: i64, digits: u32) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u64.pow(digits);
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

/// Decodes base64url without padding (JWT segments).
pub fn base64url_decode(input: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in input.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("invalid base64url character {:?} in {input:?}", c as char),
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

/// The decoded header and claims of a JWT.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three segments: {token}");
    let header = serde_json::from_slice(&base64url_decode(parts[0])).expect("JWT header is JSON");
    let claims = serde_json::from_slice(&base64url_decode(parts[1])).expect("JWT claims are JSON");
    (header, claims)
}

/// A small deterministic PRNG (SplitMix64) so that load tests need no extra
/// dependency; the seed is printed by the tests for reproduction.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn seeded_randomly() -> (Rng, u64) {
        let seed = Uuid::new_v4().as_u64_pair().0;
        (Rng(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

// ---------------------------------------------------------------------------
// Access tokens minted by the tests
// ---------------------------------------------------------------------------

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// An access token with the server's claims (`sub`, `role`, `tv`, `iat`,
/// `exp`, `iss` "corebank", `aud` "corebank-api"), HS256-signed with
/// `secret`; `iat` is now.
pub fn mint_access_token(
    secret: &str,
    user_id: &str,
    role: &str,
    token_version: i32,
    exp: i64,
) -> String {
    let claims = json!({
        "sub": user_id,
        "role": role,
        "tv": token_version,
        "iat": unix_now(),
        "exp": exp,
        "iss": "corebank",
        "aud": "corebank-api",
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign the test token")
}

// ---------------------------------------------------------------------------
// WebSocket client for /graphql/ws
// ---------------------------------------------------------------------------

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The two subprotocols of `/graphql/ws`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsProtocol {
    /// `graphql-transport-ws` (the graphql-ws library).
    TransportWs,
    /// `graphql-ws`, the legacy subscriptions-transport-ws protocol.
    Legacy,
}

impl WsProtocol {
    pub fn name(self) -> &'static str {
        match self {
            WsProtocol::TransportWs => "graphql-transport-ws",
            WsProtocol::Legacy => "graphql-ws",
        }
    }
}

/// One thing read from the socket.
enum WsIncoming {
    Json(Value),
    Closed(u16, String),
    TimedOut,
    /// A graphql-transport-ws `ping` was answered (only when asked for).
    Pinged,
}

/// A close code that was not sent in a close frame: the TCP connection ended
/// without a close handshake (RFC 6455 "abnormal closure").
pub const CLOSE_ABNORMAL: u16 = 1006;

/// A minimal GraphQL-over-WebSocket client for the tests. Answers the
/// server's `{"type":"ping"}` with `{"type":"pong"}` (graphql-transport-ws),
/// skips `ka` keepalives (legacy), keeps messages for other subscription ids
/// until asked for, and keeps a transcript for failure messages.
pub struct Ws {
    stream: WsStream,
    pub protocol: WsProtocol,
    pub url: String,
    buffered: std::collections::VecDeque<Value>,
    closed: Option<(u16, String)>,
    /// How many graphql-transport-ws `ping` messages the server sent.
    pub pings_received: usize,
    /// How many legacy `ka` keepalives the server sent.
    pub keepalives_received: usize,
    transcript: Vec<String>,
}

pub fn ws_url(addr: &str) -> String {
    format!("ws://{addr}/graphql/ws")
}

impl Ws {
    /// Opens the socket with `protocol` as `Sec-WebSocket-Protocol`; sends
    /// nothing. Panics when the upgrade fails or the server does not select
    /// the requested subprotocol.
    pub async fn open(addr: &str, protocol: WsProtocol) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::HeaderValue;

        let url = ws_url(addr);
        let mut request = url
            .as_str()
            .into_client_request()
            .unwrap_or_else(|e| panic!("bad WebSocket URL {url}: {e}"));
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(protocol.name()),
        );
        let upgrade = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async(request),
        )
        .await;
        let (stream, response) = match upgrade {
            Err(_) => panic!("WebSocket upgrade to {url} timed out after 30 s"),
            Ok(Err(e)) => panic!(
                "WebSocket upgrade to {url} ({}) failed: {e}",
                protocol.name()
            ),
            Ok(Ok(connected)) => connected,
        };
        let selected = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(
            selected,
            protocol.name(),
            "the server did not select the requested subprotocol"
        );
        Ws {
            stream,
            protocol,
            url,
            buffered: Default::default(),
            closed: None,
            pings_received: 0,
            keepalives_received: 0,
            transcript: Vec::new(),
        }
    }

    /// `graphql-transport-ws`, `connection_init` with
    /// `{"Authorization": "Bearer <token>"}`, then waits for `connection_ack`.
    pub async fn connect(addr: &str, token: &str) -> Ws {
        Ws::connect_with(addr, WsProtocol::TransportWs, token).await
    }

    /// Like `connect`, over the legacy `graphql-ws` protocol.
    pub async fn connect_legacy(addr: &str, token: &str) -> Ws {
        Ws::connect_with(addr, WsProtocol::Legacy, token).await
    }

    pub async fn connect_with(addr: &str, protocol: WsProtocol, token: &str) -> Ws {
        let mut ws = Ws::open(addr, protocol).await;
        ws.init(Some(json!({ "Authorization": format!("Bearer {token}") })))
            .await;
        ws.expect_ack(Duration::from_secs(30)).await;
        ws
    }

    fn note(&mut self, line: String) {
        if self.transcript.len() >= 200 {
            self.transcript.remove(0);
        }
        self.transcript.push(line);
    }

    /// The last messages exchanged, for failure messages.
    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }

    /// Sends one JSON message as a text frame.
    pub async fn send_json(&mut self, message: Value) {
        use futures::SinkExt;
        let text = message.to_string();
        self.note(format!(">> {text}"));
        if let Err(e) = self
            .stream
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
        {
            panic!(
                "sending on {} failed: {e}\ntranscript:\n{}",
                self.url,
                self.transcript()
            );
        }
    }

    /// Sends `connection_init`, with `payload` when given.
    pub async fn init(&mut self, payload: Option<Value>) {
        let mut message = json!({ "type": "connection_init" });
        if let Some(payload) = payload {
            message["payload"] = payload;
        }
        self.send_json(message).await;
    }

    /// Waits for `connection_ack`; panics on a close, an error or a timeout.
    pub async fn expect_ack(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.recv(deadline).await {
                WsIncoming::Json(m) if m["type"] == "connection_ack" => return,
                WsIncoming::Pinged => {}
                WsIncoming::Json(m) => {
                    panic!(
                        "expected connection_ack, got {m}\ntranscript:\n{}",
                        self.transcript()
                    )
                }
                WsIncoming::Closed(code, reason) => panic!(
                    "socket closed with {code} {reason:?} instead of connection_ack\ntranscript:\n{}",
                    self.transcript()
                ),
                WsIncoming::TimedOut => panic!(
                    "no connection_ack within {timeout:?}\ntranscript:\n{}",
                    self.transcript()
                ),
            }
        }
    }

    /// Starts an operation: `subscribe` (graphql-transport-ws) or `start`
    /// (legacy).
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = match self.protocol {
            WsProtocol::TransportWs => "subscribe",
            WsProtocol::Legacy => "start",
        };
        self.send_json(json!({
            "id": id,
            "type": kind,
            "payload": { "query": query, "variables": variables },
        }))
        .await;
    }

    /// Ends an operation: `complete` (graphql-transport-ws) or `stop`.
    pub async fn unsubscribe(&mut self, id: &str) {
        let kind = match self.protocol {
            WsProtocol::TransportWs => "complete",
            WsProtocol::Legacy => "stop",
        };
        self.send_json(json!({ "id": id, "type": kind })).await;
    }

    /// Reads one message; answers pings and skips keepalives on the way.
    async fn recv(&mut self, deadline: tokio::time::Instant) -> WsIncoming {
        self.recv_inner(deadline, false).await
    }

    async fn recv_inner(
        &mut self,
        deadline: tokio::time::Instant,
        stop_on_ping: bool,
    ) -> WsIncoming {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        if let Some((code, reason)) = &self.closed {
            return WsIncoming::Closed(*code, reason.clone());
        }
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return WsIncoming::TimedOut,
                Ok(frame) => frame,
            };
            let (code, reason) = match frame {
                Some(Ok(Message::Text(text))) => {
                    let text = text.to_string();
                    self.note(format!("<< {text}"));
                    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                        panic!(
                            "the server sent a non-JSON text frame ({e}): {text:.500}\ntranscript:\n{}",
                            self.transcript()
                        )
                    });
                    match value["type"].as_str() {
                        Some("ping") if self.protocol == WsProtocol::TransportWs => {
                            self.pings_received += 1;
                            self.send_pong().await;
                            if stop_on_ping {
                                return WsIncoming::Pinged;
                            }
                            continue;
                        }
                        Some("pong") => continue,
                        Some("ka") if self.protocol == WsProtocol::Legacy => {
                            self.keepalives_received += 1;
                            continue;
                        }
                        _ => return WsIncoming::Json(value),
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    panic!(
                        "the server sent a binary frame ({} bytes)\ntranscript:\n{}",
                        bytes.len(),
                        self.transcript()
                    )
                }
                // Control frames: tungstenite answers pings itself.
                Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
                Some(Ok(Message::Frame(_))) => continue,
                Some(Ok(Message::Close(Some(frame)))) => {
                    (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) => (1005, String::new()),
                Some(Err(e)) => (CLOSE_ABNORMAL, format!("<{e}>")),
                None => (
                    CLOSE_ABNORMAL,
                    "<connection ended without a close frame>".to_string(),
                ),
            };
            self.note(format!("<< CLOSE {code} {reason:?}"));
            self.closed = Some((code, reason.clone()));
            return WsIncoming::Closed(code, reason);
        }
    }

    async fn send_pong(&mut self) {
        use futures::SinkExt;
        let text = json!({ "type": "pong" }).to_string();
        self.note(format!(">> {text}"));
        // The socket may be closing; a lost pong is then irrelevant.
        let _ = self
            .stream
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await;
    }

    /// The next message for operation `id` (`next`/`data`, `error` or
    /// `complete`), whole. Messages for other ids are kept for later calls.
    /// Panics on a close or when nothing comes within `timeout`.
    pub async fn next_for(&mut self, id: &str, timeout: Duration) -> Value {
        if let Some(pos) = self.buffered.iter().position(|m| m["id"] == id) {
            return self.buffered.remove(pos).expect("position is valid");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.recv(deadline).await {
                WsIncoming::Json(m) if m["id"] == id => return m,
                WsIncoming::Json(m) => self.buffered.push_back(m),
                WsIncoming::Pinged => {}
                WsIncoming::Closed(code, reason) => panic!(
                    "socket closed with {code} {reason:?} while waiting for a message for {id:?}\n\
                     transcript:\n{}",
                    self.transcript()
                ),
                WsIncoming::TimedOut => panic!(
                    "no message for {id:?} within {timeout:?}\ntranscript:\n{}",
                    self.transcript()
                ),
            }
        }
    }

    /// The next result of operation `id`, which must be a `next` (`data` on
    /// the legacy protocol) without errors; returns its `payload.data`.
    pub async fn next_data(&mut self, id: &str, timeout: Duration) -> Value {
        let m = self.next_for(id, timeout).await;
        let expected = match self.protocol {
            WsProtocol::TransportWs => "next",
            WsProtocol::Legacy => "data",
        };
        assert_eq!(
            m["type"],
            expected,
            "expected a {expected} message for {id:?}, got {m}\ntranscript:\n{}",
            self.transcript()
        );
        let payload = check_response(m["payload"].clone());
        assert!(
            payload.get("errors").is_none(),
            "{expected} message for {id:?} carries errors: {m}"
        );
        payload
            .get("data")
            .cloned()
            .filter(|d| !d.is_null())
            .unwrap_or_else(|| panic!("{expected} message for {id:?} without data: {m}"))
    }

    /// Waits for the server to close the socket and returns the close code
    /// and reason (`CLOSE_ABNORMAL` when the TCP connection just ended).
    /// Messages received meanwhile are kept. Panics after `timeout`.
    pub async fn expect_close(&mut self, timeout: Duration) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.recv(deadline).await {
                WsIncoming::Json(m) => self.buffered.push_back(m),
                WsIncoming::Pinged => {}
                WsIncoming::Closed(code, reason) => return (code, reason),
                WsIncoming::TimedOut => panic!(
                    "the server did not close the socket within {timeout:?}\ntranscript:\n{}",
                    self.transcript()
                ),
            }
        }
    }

    /// Waits until the server sent a graphql-transport-ws `ping` (answered
    /// with a pong). Panics on a close or after `timeout`.
    pub async fn expect_server_ping(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.recv_inner(deadline, true).await {
                WsIncoming::Pinged => return,
                WsIncoming::Json(m) => self.buffered.push_back(m),
                WsIncoming::Closed(code, reason) => panic!(
                    "socket closed with {code} {reason:?} while waiting for a ping\ntranscript:\n{}",
                    self.transcript()
                ),
                WsIncoming::TimedOut => panic!(
                    "no ping from the server within {timeout:?}\ntranscript:\n{}",
                    self.transcript()
                ),
            }
        }
    }

    /// Reads for `duration` (answering pings) and returns the messages that
    /// arrived meanwhile; they are also kept for `next_for`. Stops early
    /// when the socket closes.
    pub async fn drain_for(&mut self, duration: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + duration;
        let mut got = Vec::new();
        loop {
            match self.recv(deadline).await {
                WsIncoming::Json(m) => {
                    got.push(m.clone());
                    self.buffered.push_back(m);
                }
                WsIncoming::Pinged => {}
                WsIncoming::Closed(..) | WsIncoming::TimedOut => return got,
            }
        }
    }

    /// Every JSON message received so far (as far as the transcript goes:
    /// the last 200 lines), pings and keepalives included.
    pub fn received(&self) -> Vec<Value> {
        self.transcript
            .iter()
            .filter_map(|line| line.strip_prefix("<< "))
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect()
    }

    /// Whether the server closed the socket (as far as this client read).
    pub fn close_status(&self) -> Option<(u16, String)> {
        self.closed.clone()
    }

    /// Closes the socket from the client side (best-effort).
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// The GraphQL errors of an `error` message (graphql-transport-ws: the
/// payload is the list of errors), checked against the error contract.
pub fn ws_error_list(message: &Value) -> Vec<Value> {
    assert_eq!(message["type"], "error", "not an error message: {message}");
    let list = message["payload"]
        .as_array()
        .unwrap_or_else(|| panic!("error payload is not a list of GraphQL errors: {message}"))
        .clone();
    check_response(json!({ "errors": list.clone() }));
    list
}

// ---------------------------------------------------------------------------
// SMTP sink for the email tests (tests/smtp_sink.py)
// ---------------------------------------------------------------------------

impl TestAppBuilder {
    /// Turns email delivery on for the api and every worker: `SMTP_URL` set
    /// to `addr` (`127.0.0.1:<port>`, or a whole `smtp://` URL).
    pub fn smtp(self, addr: &str) -> Self {
        let url = if addr.starts_with("smtp://") || addr.starts_with("smtps://") {
            addr.to_string()
        } else {
            format!("smtp://{addr}")
        };
        self.env("SMTP_URL", &url)
    }
}

/// One message the sink stored, parsed just enough for the tests.
#[derive(Clone, Debug)]
pub struct ParsedMail {
    /// Envelope recipients (RCPT TO), lower-cased, joined with ", ".
    pub to: String,
    /// The `To:` header as sent.
    pub header_to: String,
    pub from: String,
    /// The `Subject:` header, RFC 2047 encoded words decoded.
    pub subject: String,
    /// The text/plain part, transfer encoding (quoted-printable, base64)
    /// decoded; empty when the message has none.
    pub text: String,
    /// The text/html part, decoded, when there is one.
    pub html: Option<String>,
    /// Every top-level content type seen (`multipart/alternative`, ...).
    pub content_type: String,
    pub file: PathBuf,
}

impl ParsedMail {
    /// Whether `email` is one of the envelope recipients.
    pub fn is_to(&self, email: &str) -> bool {
        let email = email.to_lowercase();
        self.to.split(", ").any(|r| r == email)
    }

    /// The first `token=<64 hex chars>` of the text part.
    pub fn token(&self) -> Option<String> {
        extract_token(&self.text)
    }
}

/// The first `token=<64 hex chars>` in `text`.
pub fn extract_token(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(pos) = rest.find("token=") {
        let after = &rest[pos + "token=".len()..];
        let hex: String = after
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        if hex.len() == 64 {
            return Some(hex);
        }
        rest = after;
    }
    None
}

/// `python3 tests/smtp_sink.py <port> <dir>`: an SMTP server on 127.0.0.1
/// that stores every message as an `.eml` file. Killed when dropped; its
/// directory is removed unless the test panicked.
pub struct SmtpSink {
    pub port: u16,
    /// Where the `.eml` files land.
    pub dir: PathBuf,
    root: PathBuf,
    reject_rcpt: Vec<String>,
    child: Option<Child>,
    stdin: Option<tokio::process::ChildStdin>,
    starts: usize,
}

impl SmtpSink {
    /// Starts a sink on a free port; panics (never skips) when python3 or
    /// aiosmtpd are missing.
    pub async fn start() -> SmtpSink {
        SmtpSink::start_with(&[]).await
    }

    /// A sink that answers `550 mailbox unavailable` to every recipient
    /// containing one of `reject_rcpt`.
    pub async fn start_with(reject_rcpt: &[&str]) -> SmtpSink {
        let root = std::env::temp_dir()
            .join("corebank-tests")
            .join(format!("smtp-{}", Uuid::new_v4().simple()));
        let dir = root.join("mail");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut sink = SmtpSink {
            port: 0,
            dir,
            root,
            reject_rcpt: reject_rcpt.iter().map(|s| s.to_string()).collect(),
            child: None,
            stdin: None,
            starts: 0,
        };
        // A free port can be taken between `free_port` and the sink's bind.
        let mut last_error = String::new();
        for _ in 0..5 {
            sink.port = free_port();
            match sink.launch().await {
                Ok(()) => return sink,
                Err(e) => last_error = e,
            }
        }
        panic!("the SMTP sink did not start: {last_error}");
    }

    /// `127.0.0.1:<port>`, for `TestAppBuilder::smtp`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("sink.log")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    async fn launch(&mut self) -> Result<(), String> {
        self.starts += 1;
        let script = repo_root().join("tests").join("smtp_sink.py");
        let ready_file = self.root.join(format!("ready-{}.out", self.starts));
        let log = self.log_path();
        let stdout = std::fs::File::create(&ready_file)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", ready_file.display()));
        let (_, stderr) = open_log(&log);
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .arg(self.port.to_string())
            .arg(&self.dir)
            .arg("--exit-on-stdin-eof");
        for r in &self.reject_rcpt {
            command.arg("--reject-rcpt").arg(r);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::from(stdout))
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run python3 for the SMTP sink ({e}): the email tests need python3 \
                 with aiosmtpd (scripts/services.sh installs it); tests are never skipped"
            )
        });
        let stdin = child.stdin.take();
        let timeout = Duration::from_secs(30);
        let deadline = Instant::now() + timeout;
        loop {
            if std::fs::read_to_string(&ready_file)
                .map(|s| s.lines().any(|l| l.trim() == "READY"))
                .unwrap_or(false)
            {
                self.child = Some(child);
                self.stdin = stdin;
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let tail = log_tail(&log, 20);
                if status.code() == Some(3) || tail.contains("aiosmtpd is missing") {
                    panic!(
                        "the SMTP sink cannot run: {tail}\n(the email tests need python3 with \
                         aiosmtpd; run scripts/services.sh; tests are never skipped)"
                    );
                }
                return Err(format!(
                    "{} exited with {status} on port {}; log {}:\n{tail}",
                    script.display(),
                    self.port,
                    log.display()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                panic!(
                    "the SMTP sink printed no READY within {timeout:?}; log {}:\n{}",
                    log.display(),
                    log_tail(&log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes the mail server down (SIGKILL): connections to its port are
    /// refused until `start_again`.
    pub async fn stop(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts the sink again on the same port and directory.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the SMTP sink is already running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!(
                        "the SMTP sink did not start again on port {}: {e}",
                        self.port
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Every message stored so far, oldest first.
    pub fn messages(&self) -> Vec<ParsedMail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|dir| {
                dir.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .filter_map(|path| {
                let bytes = std::fs::read(&path).ok()?;
                Some(parse_mail(&bytes, path))
            })
            .collect()
    }

    /// The messages whose envelope recipients include `email`.
    pub fn messages_to(&self, email: &str) -> Vec<ParsedMail> {
        self.messages()
            .into_iter()
            .filter(|m| m.is_to(email))
            .collect()
    }

    /// A one-line-per-message summary, for failure messages.
    pub fn summary(&self) -> String {
        let messages = self.messages();
        let mut out = format!(
            "{} message(s) at the sink {}:",
            messages.len(),
            self.dir.display()
        );
        for m in messages {
            let _ = write!(out, "\n  to {} | {}", m.to, m.subject);
        }
        out
    }

    /// Polls the stored messages every 100 ms until `pred` holds for them
    /// and returns them; panics after `timeout` with a summary.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&[ParsedMail]) -> bool,
        timeout: Duration,
    ) -> Vec<ParsedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if pred(&messages) {
                return messages;
            }
            if Instant::now() > deadline {
                panic!(
                    "the SMTP sink did not get the expected messages within {timeout:?}; {}\n\
                     sink log {}:\n{}",
                    self.summary(),
                    self.log_path().display(),
                    log_tail(&self.log_path(), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the first message matching `pred` and returns it.
    pub async fn wait_for_message(
        &self,
        pred: impl Fn(&ParsedMail) -> bool,
        timeout: Duration,
    ) -> ParsedMail {
        let messages = self.wait_for(|ms| ms.iter().any(&pred), timeout).await;
        messages
            .into_iter()
            .find(|m| pred(m))
            .expect("wait_for returned a matching message")
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "\n==== SMTP sink kept in {} ====\n{}\n---- tail of {} ----\n{}\n",
                self.root.display(),
                self.summary(),
                self.log_path().display(),
                log_tail(&self.log_path(), 30)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Splits a message (or a MIME part) into unfolded headers (names
/// lower-cased) and body; line ends are normalised to `\n`.
fn split_mail(text: &str) -> (Vec<(String, String)>, String) {
    let text = text.replace("\r\n", "\n");
    let (head, body) = match text.find("\n\n") {
        Some(pos) => (&text[..pos], text[pos + 2..].to_string()),
        None => (text.as_str(), String::new()),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_lowercase(), value.trim().to_string()));
        }
    }
    (headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The value of parameter `name` of a header such as `Content-Type`.
fn header_param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Decodes quoted-printable: soft line breaks `=\n` vanish, `=XX` is a byte.
pub fn decode_quoted_printable(input: &str) -> String {
    let input = input.replace("\r\n", "\n");
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if bytes.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) {
                let hex = |c: u8| (c as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(h), hex(l)) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes standard base64, ignoring whitespace and padding.
pub fn decode_base64(input: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in input.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`).
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let Some(end) = rest[start + 2..].find("?=").map(|e| start + 2 + e) else {
            break;
        };
        let word = &rest[start + 2..end];
        let parts: Vec<&str> = word.splitn(3, '?').collect();
        let decoded = match parts.as_slice() {
            [_charset, enc, data] if enc.eq_ignore_ascii_case("b") => {
                Some(String::from_utf8_lossy(&decode_base64(data)).into_owned())
            }
            [_charset, enc, data] if enc.eq_ignore_ascii_case("q") => {
                Some(decode_quoted_printable(&data.replace('_', " ")))
            }
            _ => None,
        };
        let between = &rest[..start];
        match decoded {
            Some(d) => {
                // Whitespace between two encoded words is not part of the text.
                if !(last_was_word && between.trim().is_empty()) {
                    out.push_str(between);
                }
                out.push_str(&d);
                last_was_word = true;
            }
            None => {
                out.push_str(&rest[..end + 2]);
                last_was_word = false;
            }
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// A part's body with its `Content-Transfer-Encoding` undone.
fn decode_part_body(headers: &[(String, String)], body: &str) -> String {
    let encoding = header(headers, "content-transfer-encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => String::from_utf8_lossy(&decode_base64(body)).into_owned(),
        _ => body.to_string(),
    }
}

/// Collects the first text/plain and text/html parts, descending into
/// multiparts.
fn collect_parts(
    headers: &[(String, String)],
    body: &str,
    text: &mut Option<String>,
    html: &mut Option<String>,
) {
    let content_type = header(headers, "content-type").unwrap_or("text/plain");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("multipart/") {
        let Some(boundary) = header_param(content_type, "boundary") else {
            return;
        };
        let delimiter = format!("--{boundary}");
        let mut current: Option<Vec<&str>> = None;
        for line in body.split('\n') {
            let trimmed = line.trim_end();
            if trimmed == delimiter || trimmed == format!("{delimiter}--") {
                if let Some(lines) = current.take() {
                    let (h, b) = split_mail(&lines.join("\n"));
                    collect_parts(&h, &b, text, html);
                }
                if trimmed == delimiter {
                    current = Some(Vec::new());
                }
            } else if let Some(lines) = current.as_mut() {
                lines.push(line);
            }
        }
    } else if mime == "text/plain" && text.is_none() {
        *text = Some(decode_part_body(headers, body));
    } else if mime == "text/html" && html.is_none() {
        *html = Some(decode_part_body(headers, body));
    }
}

/// Parses a stored `.eml` file (see `tests/smtp_sink.py`).
pub fn parse_mail(bytes: &[u8], file: PathBuf) -> ParsedMail {
    let raw = String::from_utf8_lossy(bytes);
    let (headers, body) = split_mail(&raw);
    let header_to = header(&headers, "to").unwrap_or("").to_string();
    let to = match header(&headers, "x-envelope-to") {
        Some(envelope) => envelope.to_lowercase(),
        None => {
            // Fall back to the address inside <...> of the To: header.
            let t = header_to.as_str();
            match (t.find('<'), t.rfind('>')) {
                (Some(a), Some(b)) if a < b => t[a + 1..b].to_lowercase(),
                _ => t.trim().to_lowercase(),
            }
        }
    };
    let mut text = None;
    let mut html = None;
    collect_parts(&headers, &body, &mut text, &mut html);
    ParsedMail {
        to,
        header_to,
        from: header(&headers, "from").unwrap_or("").to_string(),
        subject: decode_encoded_words(header(&headers, "subject").unwrap_or("")),
        text: text.unwrap_or_default(),
        html,
        content_type: header(&headers, "content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
        file,
    }
}

// ---------------------------------------------------------------------------
// Mock utility provider for the bill tests (the `mock-provider` binary)
// ---------------------------------------------------------------------------

/// The `mock-provider` binary, built next to `api` by
/// `cargo build --workspace --bins --tests`.
pub fn mock_provider_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_api")).with_file_name("mock-provider");
    if !path.exists() {
        panic!(
            "the mock-provider binary is missing at {}: build every binary first with \
             `cargo build --workspace --bins --tests` (or `cargo build -p mock-provider`)",
            path.display()
        );
    }
    path
}

/// A running `mock-provider` on a free port of 127.0.0.1 (contract §7's
/// provider API plus `POST /_control` and `GET /_payments`). Killed on drop;
/// its log is printed when the test panics.
pub struct MockProvider {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// `http://127.0.0.1:<port>`, the `apiBaseUrl` to register.
    pub base_url: String,
    pub log: PathBuf,
    root: PathBuf,
    http: reqwest::Client,
}

impl MockProvider {
    /// Starts `mock-provider --currency USD` and waits for its
    /// `mock-provider listening on http://ADDR` line.
    pub async fn start() -> MockProvider {
        MockProvider::start_with(&["--currency", "USD"]).await
    }

    /// Starts it with extra flags (`--currency`, `--latency-ms`,
    /// `--error-rate`); `--addr` is chosen here.
    pub async fn start_with(args: &[&str]) -> MockProvider {
        use tokio::io::{AsyncBufReadExt, BufReader};

        let binary = mock_provider_binary();
        let root = std::env::temp_dir()
            .join("corebank-tests")
            .join(format!("mock-provider-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        let log = root.join("provider.log");
        let mut last_failure = String::new();
        // A free port can be taken between `free_port` and the bind: retry.
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let (_, stderr) = open_log(&log);
            let mut command = Command::new(&binary);
            command
                .arg("--addr")
                .arg(&addr)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr)
                .kill_on_drop(true);
            let mut child = command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let stdout = child.stdout.take().expect("piped stdout");
            let mut lines = BufReader::new(stdout).lines();
            let timeout = Duration::from_secs(30);
            let ready = tokio::time::timeout(timeout, async {
                loop {
                    match lines.next_line().await {
                        Ok(Some(line)) if line.contains("mock-provider listening on http://") => {
                            return Some(line);
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => return None,
                    }
                }
            })
            .await;
            match ready {
                Ok(Some(line)) => {
                    // Keep draining stdout so that a later print cannot fail.
                    let log_for_task = log.clone();
                    tokio::spawn(async move {
                        while let Ok(Some(line)) = lines.next_line().await {
                            use std::io::Write as _;
                            if let Ok(mut f) = std::fs::OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(&log_for_task)
                            {
                                let _ = writeln!(f, "{line}");
                            }
                        }
                    });
                    let base_url = line
                        .split("listening on ")
                        .nth(1)
                        .map(|s| s.trim().trim_end_matches('/').to_string())
                        .unwrap_or_else(|| format!("http://{addr}"));
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .expect("http client");
                    return MockProvider {
                        child: Some(child),
                        addr,
                        base_url,
                        log,
                        root,
                        http,
                    };
                }
                Ok(None) => {
                    let _ = child.wait().await;
                    last_failure =
                        format!("exited before it was ready; log:\n{}", log_tail(&log, 20));
                }
                Err(_) => {
                    let _ = child.start_kill();
                    panic!(
                        "mock-provider printed no `listening` line within {timeout:?}; log {}:\n{}",
                        log.display(),
                        log_tail(&log, 20)
                    );
                }
            }
        }
        panic!("mock-provider could not start: {last_failure}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// `POST /_control` (`latencyMs`, `errorRate`, `failNextPayments`,
    /// `down`); returns the provider's resulting settings.
    pub async fn control(&self, body: Value) -> Value {
        let response = self
            .http
            .post(self.url("/_control"))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /_control on the mock provider failed: {e}"));
        assert!(
            response.status().is_success(),
            "POST /_control {body} answered {}",
            response.status()
        );
        response.json().await.expect("/_control answers JSON")
    }

    /// `GET /_payments`: `[{"payment": {...}, "timesReceived": n}]`.
    pub async fn payments(&self) -> Vec<Value> {
        let response = self
            .http
            .get(self.url("/_payments"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /_payments on the mock provider failed: {e}"));
        assert!(
            response.status().is_success(),
            "GET /_payments answered {}",
            response.status()
        );
        let value: Value = response.json().await.expect("/_payments answers JSON");
        value
            .as_array()
            .unwrap_or_else(|| panic!("/_payments is not a list: {value}"))
            .clone()
    }

    /// The recorded payments whose `payment.reference` is `reference`.
    pub async fn payments_for(&self, reference: &str) -> Vec<Value> {
        self.payments()
            .await
            .into_iter()
            .filter(|p| p["payment"]["reference"] == reference)
            .collect()
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "\n==== mock provider log {} ====\n{}\n",
                self.log.display(),
                log_tail(&self.log, 30)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
