//! `transfers`: end-to-end transfer throughput against a raw-SQL ceiling
//! measured in the same run on the same PostgreSQL.
//!
//! The baseline runs, per transfer, what a correct settlement needs (lock
//! two accounts in id order, check funds, update both balances, insert two
//! ledger entries and a transfer row, commit) on scratch tables; the
//! end-to-end part sends GraphQL `transfer` mutations from `clients`
//! concurrent tasks and waits until the workers have settled every one.
//! Start the api with a high `RATE_LIMIT_PER_MINUTE` and with
//! `BOOTSTRAP_ADMIN_*` matching `--admin-email/--admin-password`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement, TransactionTrait};
use serde_json::{Value, json};

pub struct Args {
    pub url: String,
    pub db: String,
    pub admin_email: String,
    pub admin_password: String,
    pub accounts: usize,
    pub per_client: usize,
    pub clients: Vec<usize>,
}

async fn gql(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    vars: Value,
) -> anyhow::Result<Value> {
    let mut req = http
        .post(format!("{url}/graphql"))
        .json(&json!({"query": query, "variables": vars}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let v: Value = req.send().await?.json().await?;
    if let Some(e) = v.get("errors") {
        bail!("graphql error: {e}");
    }
    Ok(v["data"].clone())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        f64::NAN
    } else {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

/// Raw-SQL single-transfer transactions per second at `clients` concurrency.
async fn baseline(
    db_url: &str,
    clients: usize,
    per_client: usize,
    accounts: usize,
) -> anyhow::Result<f64> {
    let db = Database::connect(db_url).await?;
    let ddl = [
        "DROP TABLE IF EXISTS bench_entries, bench_transfers, bench_accounts",
        "CREATE TABLE bench_accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)",
        "CREATE TABLE bench_transfers (id BIGSERIAL PRIMARY KEY, src BIGINT, dst BIGINT, amount BIGINT, status TEXT)",
        "CREATE TABLE bench_entries (id BIGSERIAL PRIMARY KEY, transfer_id BIGINT, account_id BIGINT, amount BIGINT)",
    ];
    for s in ddl {
        db.execute_unprepared(s).await?;
    }
    db.execute_unprepared(&format!(
        "INSERT INTO bench_accounts SELECT g, 100000000 FROM generate_series(1, {accounts}) g"
    ))
    .await?;
    let db = Arc::new(db);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..per_client {
                    let (a, b) = {
                        let mut r = rand::rng();
                        let a = r.random_range(1..=accounts as i64);
                        let mut b = r.random_range(1..=accounts as i64);
                        if b == a {
                            b = a % accounts as i64 + 1;
                        }
                        (a, b)
                    };
                    let (lo, hi) = (a.min(b), a.max(b));
                    let txn = db.begin().await?;
                    let q = |s: String| Statement::from_string(DbBackend::Postgres, s);
                    txn.query_all_raw(q(format!("SELECT id, balance FROM bench_accounts WHERE id IN ({lo}, {hi}) ORDER BY id FOR UPDATE"))).await?;
                    txn.execute_raw(q(format!("UPDATE bench_accounts SET balance = balance - 1 WHERE id = {a}"))).await?;
                    txn.execute_raw(q(format!("UPDATE bench_accounts SET balance = balance + 1 WHERE id = {b}"))).await?;
                    let row = txn
                        .query_one_raw(q(format!("INSERT INTO bench_transfers (src, dst, amount, status) VALUES ({a}, {b}, 1, 'COMPLETED') RETURNING id")))
                        .await?
                        .context("no id")?;
                    let id: i64 = row.try_get("", "id")?;
                    txn.execute_raw(q(format!("INSERT INTO bench_entries (transfer_id, account_id, amount) VALUES ({id}, {a}, -1), ({id}, {b}, 1)"))).await?;
                    txn.commit().await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let tps = (clients * per_client) as f64 / started.elapsed().as_secs_f64();
    db.execute_unprepared("DROP TABLE IF EXISTS bench_entries, bench_transfers, bench_accounts")
        .await?;
    Ok(tps)
}

struct Account {
    token: String,
    id: String,
    number: String,
}

async fn setup(http: &reqwest::Client, a: &Args) -> anyhow::Result<Vec<Account>> {
    let mut out = Vec::new();
    for i in 0..a.accounts {
        let email = format!("bench-{}-{i}@example.test", uuid::Uuid::new_v4().simple());
        let reg = gql(http, &a.url, None, "mutation($e: String!) { register(input: {email: $e, password: \"correct horse battery\", fullName: \"Bench\"}) { accessToken } }", json!({"e": email})).await?;
        let token = reg["register"]["accessToken"]
            .as_str()
            .context("token")?
            .to_owned();
        let acc = gql(
            http,
            &a.url,
            Some(&token),
            "mutation { openAccount(input: {kind: CHECKING, currency: \"USD\"}) { id number } }",
            json!({}),
        )
        .await?;
        let id = acc["openAccount"]["id"].as_str().context("id")?.to_owned();
        let number = acc["openAccount"]["number"]
            .as_str()
            .context("number")?
            .to_owned();
        gql(http, &a.url, Some(&token), "mutation($a: ID!) { deposit(input: {accountId: $a, amount: \"1000000\", idempotencyKey: \"fund\"}) { id } }", json!({"a": id})).await?;
        out.push(Account { token, id, number });
    }
    Ok(out)
}

async fn wait_settled(http: &reqwest::Client, url: &str, admin: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let d = gql(
            http,
            url,
            Some(admin),
            "{ allTransfers(status: PENDING, first: 1) { totalCount } }",
            json!({}),
        )
        .await?;
        if d["allTransfers"]["totalCount"] == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("transfers still pending after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let login = gql(&http, &a.url, None, "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }", json!({"e": a.admin_email, "p": a.admin_password})).await?;
    let admin = login["login"]["accessToken"]
        .as_str()
        .context("admin token")?
        .to_owned();
    let accounts = Arc::new(setup(&http, &a).await?);
    wait_settled(&http, &a.url, &admin).await?;
    println!(
        "| clients | raw SQL transfers/s | settled transfers/s | ratio | mutation p50 / p99 |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for &clients in &a.clients {
        let raw = baseline(&a.db, clients, a.per_client, a.accounts).await?;
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (http, url, accounts) = (http.clone(), a.url.clone(), accounts.clone());
                let per_client = a.per_client;
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        let (from, to) = {
                            let mut r = rand::rng();
                            let f = r.random_range(0..accounts.len());
                            let mut t = r.random_range(0..accounts.len());
                            if t == f {
                                t = (f + 1) % accounts.len();
                            }
                            (f, t)
                        };
                        let s = Instant::now();
                        gql(&http, &url, Some(&accounts[from].token), "mutation($f: ID!, $n: String!, $k: String!) { transfer(input: {fromAccountId: $f, toAccountNumber: $n, amount: \"0.01\", idempotencyKey: $k}) { id } }",
                            json!({"f": accounts[from].id, "n": accounts[to].number, "k": format!("b-{clients}-{c}-{i}-{}", uuid::Uuid::new_v4().simple())})).await?;
                        lat.push(s.elapsed().as_secs_f64() * 1000.0);
                    }
                    anyhow::Ok(lat)
                })
            })
            .collect();
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await??);
        }
        wait_settled(&http, &a.url, &admin).await?;
        let settled = (clients * a.per_client) as f64 / started.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        println!(
            "| {clients} | {raw:.0} | {settled:.0} | {:.2} | {:.1} ms / {:.1} ms |",
            settled / raw,
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }
    Ok(())
}
