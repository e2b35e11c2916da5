//! corebank benchmarks, run against a live `api` (and workers).
//!
//! `cargo run -p bench --release -- subscriptions --url http://127.0.0.1:8000 --pid <api pid> --count 1000`
//! opens `count` idle `balanceChanged` subscriptions on one api process,
//! reports the api's resident memory per subscription (RSS after minus RSS
//! before, read from /proc), then makes deposits and reports how long the
//! settled balance took to reach every subscriber, measured from the
//! event's own commit timestamp (`at`) and from the mutation's reply.
//! Figures are printed as a markdown table; nothing here is a test.
//!
//! `cargo run -p bench --release -- transfers --url … --rounds <transfers per client>`
//! compares settled transfers/s end to end with a raw-SQL ceiling measured
//! in the same run (see `transfers.rs`; settings via `BENCH_*` variables).

mod transfers;

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

struct Args {
    url: String,
    pid: Option<u32>,
    count: usize,
    rounds: usize,
}

fn parse_args() -> anyhow::Result<(String, Args)> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_else(|| "subscriptions".into());
    let mut a = Args {
        url: "http://127.0.0.1:8000".into(),
        pid: None,
        count: 1000,
        rounds: 20,
    };
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = v,
            "--pid" => a.pid = Some(v.parse()?),
            "--count" => a.count = v.parse()?,
            "--rounds" => a.rounds = v.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok((cmd, a))
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

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("bad VmRSS")?
        .parse()?)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(url: &str, token: &str, account_id: &str) -> anyhow::Result<Ws> {
    let ws_url = url.replacen("http", "ws", 1) + "/graphql/ws";
    let mut req = ws_url.into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    ws.send(Message::Text(init.to_string().into())).await?;
    loop {
        let m = ws.next().await.context("closed before ack")??;
        if let Message::Text(t) = m
            && t.contains("connection_ack")
        {
            break;
        }
    }
    let sub = json!({"id": "1", "type": "subscribe", "payload": {
        "query": "subscription($a: ID!) { balanceChanged(accountId: $a) { balance version at } }",
        "variables": {"a": account_id}}});
    ws.send(Message::Text(sub.to_string().into())).await?;
    Ok(ws)
}

/// Waits for the next balance event with the given balance; returns its `at`.
async fn wait_balance(ws: &mut Ws, balance: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await?
            .context("closed")??;
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t)?;
        match v["type"].as_str() {
            Some("ping") => {
                ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await?;
            }
            Some("next") => {
                let ev = &v["payload"]["data"]["balanceChanged"];
                if ev["balance"] == balance {
                    let at = ev["at"].as_str().context("no at")?;
                    return Ok(
                        chrono::DateTime::parse_from_rfc3339(at)?.with_timezone(&chrono::Utc)
                    );
                }
            }
            Some("error") | Some("complete") => bail!("subscription ended: {t}"),
            _ => {}
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn subscriptions(a: Args) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let email = format!("bench-{}@example.test", uuid::Uuid::new_v4().simple());
    let reg = gql(&http, &a.url, None, "mutation($e: String!) { register(input: {email: $e, password: \"correct horse battery\", fullName: \"Bench\"}) { accessToken } }", json!({"e": email})).await?;
    let token = reg["register"]["accessToken"]
        .as_str()
        .context("token")?
        .to_owned();
    let acc = gql(
        &http,
        &a.url,
        Some(&token),
        "mutation { openAccount(input: {kind: CHECKING, currency: \"USD\"}) { id } }",
        json!({}),
    )
    .await?;
    let account = acc["openAccount"]["id"].as_str().context("id")?.to_owned();

    let before = a.pid.map(rss_kib).transpose()?;
    let mut sockets = Vec::with_capacity(a.count);
    for _ in 0..a.count {
        sockets.push(subscribe(&a.url, &token, &account).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = a.pid.map(rss_kib).transpose()?;

    // One listener measures latency; every socket must see the event.
    let mut commit_to_client = Vec::new();
    let mut reply_to_client = Vec::new();
    let mut balance_minor: i64 = 0;
    for round in 0..a.rounds {
        balance_minor += 100;
        let expected = format!("{}.{:02}", balance_minor / 100, balance_minor % 100);
        let sent = Instant::now();
        gql(&http, &a.url, Some(&token), "mutation($a: ID!, $k: String!) { deposit(input: {accountId: $a, amount: \"1.00\", idempotencyKey: $k}) { id } }", json!({"a": account, "k": format!("bench-{round}")})).await?;
        let replied = Instant::now();
        let at = wait_balance(&mut sockets[0], &expected).await?;
        let arrived_wall = chrono::Utc::now();
        let arrived = Instant::now();
        commit_to_client.push((arrived_wall - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        reply_to_client.push(arrived.duration_since(replied).as_secs_f64() * 1000.0);
        let _ = sent;
        let others = futures::future::join_all(
            sockets[1..]
                .iter_mut()
                .map(|ws| wait_balance(ws, &expected)),
        )
        .await;
        if let Some(Err(e)) = others.into_iter().find(|r| r.is_err()) {
            bail!("a subscriber missed the event: {e}");
        }
    }
    commit_to_client.sort_by(f64::total_cmp);
    reply_to_client.sort_by(f64::total_cmp);
    println!("| measure | value |\n| --- | --- |");
    println!("| idle subscriptions | {} |", a.count);
    if let (Some(b), Some(af)) = (before, after) {
        println!("| api RSS before / after | {b} KiB / {af} KiB |");
        println!(
            "| RSS per subscription | {:.1} KiB |",
            (af.saturating_sub(b)) as f64 / a.count as f64
        );
    }
    println!(
        "| events (deposits), each to all subscribers | {} |",
        a.rounds
    );
    println!(
        "| commit → first client, p50 / p99 | {:.2} ms / {:.2} ms |",
        percentile(&commit_to_client, 0.5),
        percentile(&commit_to_client, 0.99)
    );
    println!(
        "| mutation reply → settled event, p50 / p99 | {:.2} ms / {:.2} ms |",
        percentile(&reply_to_client, 0.5),
        percentile(&reply_to_client, 0.99)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (cmd, args) = parse_args()?;
    match cmd.as_str() {
        "subscriptions" => subscriptions(args).await,
        "transfers" => {
            let var = |n: &str, d: &str| std::env::var(n).unwrap_or_else(|_| d.to_owned());
            let clients = var("BENCH_CLIENTS", "1,4,16,64")
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect();
            transfers::run(transfers::Args {
                url: args.url,
                db: var(
                    "BENCH_DATABASE_URL",
                    "postgres://postgres:postgres@127.0.0.1:5432/postgres",
                ),
                admin_email: var("BENCH_ADMIN_EMAIL", "admin@corebank.test"),
                admin_password: var("BENCH_ADMIN_PASSWORD", "admin-password-123"),
                accounts: var("BENCH_ACCOUNTS", "100").parse()?,
                per_client: args.rounds,
                clients,
            })
            .await
        }
        other => bail!("unknown benchmark {other}; available: subscriptions, transfers"),
    }
}
