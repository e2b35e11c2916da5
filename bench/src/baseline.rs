//! The ceilings the end-to-end figures are divided by, measured in the same
//! run on the same machine.
//!
//! - Raw SQL: per transfer, in one transaction, what a correct settlement
//!   cannot avoid: lock both accounts in id order, check funds, update both
//!   balances, insert two ledger entries and a transfer row, commit. Driven
//!   by the same closed loop and concurrency as the GraphQL run, on scratch
//!   `bench_*` tables in the api's own database, dropped afterwards. Two
//!   account choices: uniform over 10,000 accounts (little lock contention)
//!   and hot-spot over 10 accounts (every transaction queues on row locks).
//! - HTTP: `GET /healthz` through the same reqwest load generator: what the
//!   HTTP stack and this client can do with no GraphQL and no database.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
    TransactionTrait,
};

use crate::load::{Run, closed_loop};

/// Account choice for a transfer: the same two modes end to end and in SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Uniform,
    Hot,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Uniform => "uniform",
            Mode::Hot => "hot",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Mode> {
        match s {
            "uniform" => Ok(Mode::Uniform),
            "hot" => Ok(Mode::Hot),
            _ => bail!("mode must be uniform or hot, not {s}"),
        }
    }
}

/// Accounts in the hot-spot mode, end to end and in SQL.
pub const HOT_ACCOUNTS: usize = 10;
/// Accounts in the raw-SQL uniform mode.
pub const SQL_UNIFORM_ACCOUNTS: usize = 10_000;

/// Two distinct indexes in `0..n`.
pub fn pick_pair(n: usize) -> (usize, usize) {
    let mut r = rand::rng();
    let a = r.random_range(0..n);
    let b = (a + r.random_range(1..n)) % n;
    (a, b)
}

/// Fails early with a clear message when PostgreSQL cannot give the bench
/// `clients` more connections (its default `max_connections` is 100, and
/// the api and worker pools hold up to 32 each once they have been busy).
async fn check_free_connections(db: &DatabaseConnection, clients: usize) -> anyhow::Result<()> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_setting('max_connections')::int \
               - current_setting('superuser_reserved_connections')::int \
               - (SELECT count(*) FROM pg_stat_activity)::int AS free",
        ))
        .await?
        .context("no row")?;
    let free: i32 = row.try_get("", "free")?;
    if (free as usize) < clients {
        bail!(
            "PostgreSQL has {free} free connections, the raw-SQL baseline at {clients} clients needs {clients}: \
             raise max_connections or lower --clients"
        );
    }
    Ok(())
}

/// Raw-SQL transfers at `clients` concurrency for `duration`.
pub async fn raw_sql(
    db_url: &str,
    mode: Mode,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let accounts = match mode {
        Mode::Uniform => SQL_UNIFORM_ACCOUNTS,
        Mode::Hot => HOT_ACCOUNTS,
    };
    let admin = Database::connect(db_url).await?;
    check_free_connections(&admin, clients).await?;
    // Fresh tables per measurement, so an earlier run's rows (table and
    // index growth, dead tuples) do not weigh on the next one.
    for s in [
        "DROP TABLE IF EXISTS bench_entries, bench_transfers, bench_accounts",
        "CREATE TABLE bench_accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)",
        "CREATE TABLE bench_transfers (id BIGSERIAL PRIMARY KEY, src BIGINT NOT NULL, dst BIGINT NOT NULL, amount BIGINT NOT NULL, status TEXT NOT NULL)",
        "CREATE TABLE bench_entries (id BIGSERIAL PRIMARY KEY, transfer_id BIGINT NOT NULL, account_id BIGINT NOT NULL, amount BIGINT NOT NULL)",
    ] {
        admin.execute_unprepared(s).await?;
    }
    admin
        .execute_unprepared(&format!(
            "INSERT INTO bench_accounts SELECT g, 100000000 FROM generate_series(1, {accounts}) g; ANALYZE bench_accounts"
        ))
        .await?;

    // One pooled connection per client, opened before the clock starts.
    let mut opts = ConnectOptions::new(db_url.to_owned());
    opts.max_connections(clients as u32)
        .min_connections(clients as u32)
        .sqlx_logging(false);
    let db = Arc::new(Database::connect(opts).await?);
    let result = closed_loop(clients, duration, move |_, _| {
        let db = db.clone();
        async move {
            let (a, b) = pick_pair(accounts);
            let (src, dst) = (a as i64 + 1, b as i64 + 1);
            transfer(&db, src, dst, 1).await
        }
    })
    .await;
    admin
        .execute_unprepared("DROP TABLE IF EXISTS bench_entries, bench_transfers, bench_accounts")
        .await?;
    result
}

/// One settlement-shaped transaction; parameters are bound, as the worker's are.
async fn transfer(db: &DatabaseConnection, src: i64, dst: i64, amount: i64) -> anyhow::Result<()> {
    let q = |sql: &str, values: Vec<sea_orm::Value>| {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
    };
    let txn = db.begin().await?;
    let rows = txn
        .query_all_raw(q(
            "SELECT id, balance FROM bench_accounts WHERE id IN ($1, $2) ORDER BY id FOR UPDATE",
            vec![src.into(), dst.into()],
        ))
        .await?;
    let mut funds = None;
    for r in &rows {
        if r.try_get::<i64>("", "id")? == src {
            funds = Some(r.try_get::<i64>("", "balance")?);
        }
    }
    if funds.context("source account missing")? < amount {
        bail!("raw SQL baseline ran out of funds; seed larger balances");
    }
    txn.execute_raw(q(
        "UPDATE bench_accounts SET balance = balance - $2 WHERE id = $1",
        vec![src.into(), amount.into()],
    ))
    .await?;
    txn.execute_raw(q(
        "UPDATE bench_accounts SET balance = balance + $2 WHERE id = $1",
        vec![dst.into(), amount.into()],
    ))
    .await?;
    let row = txn
        .query_one_raw(q(
            "INSERT INTO bench_transfers (src, dst, amount, status) VALUES ($1, $2, $3, 'COMPLETED') RETURNING id",
            vec![src.into(), dst.into(), amount.into()],
        ))
        .await?
        .context("no transfer id")?;
    let id: i64 = row.try_get("", "id")?;
    txn.execute_raw(q(
        "INSERT INTO bench_entries (transfer_id, account_id, amount) VALUES ($1, $2, $4), ($1, $3, $5)",
        vec![id.into(), src.into(), dst.into(), (-amount).into(), amount.into()],
    ))
    .await?;
    txn.commit().await?;
    Ok(())
}

/// `GET /healthz` requests at `clients` concurrency for `duration`.
pub async fn healthz(
    http: &reqwest::Client,
    url: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let (http, target) = (http.clone(), format!("{url}/healthz"));
    closed_loop(clients, duration, move |_, _| {
        let (http, target) = (http.clone(), target.clone());
        async move {
            let r = http.get(&target).send().await?;
            if !r.status().is_success() {
                bail!("/healthz answered {}", r.status());
            }
            r.bytes().await?;
            Ok(())
        }
    })
    .await
}
