//! Idle subscribers: `count` WebSockets on one api, each with a
//! `balanceChanged` subscription on the same account, then deposits into
//! that account one at a time, each waited for at every subscriber.
//!
//! Levels are cumulative (1,000 then 9,000 more for 10,000) so that the
//! memory figure is always "api RSS with N sockets − RSS before the first",
//! not blurred by what the allocator kept from a previous, closed level.
//! Figures per level:
//! - api RSS per subscriber (VmRSS from /proc/<pid>/status, needs --pid);
//! - commit → client: the event's own `at` (stamped at the settlement
//!   commit) to its arrival at each socket, wall clock, same machine;
//! - mutation reply → every subscriber: from the deposit's reply until the
//!   last of the N sockets has the event (the fan-out's tail);
//! - mutation reply → client: the same for each socket (the distribution).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use crate::api::{self, gql};

pub struct Level {
    pub subscribers: usize,
    pub events: usize,
    /// Seconds to open this level's new sockets, and how many were new.
    pub connect_s: f64,
    pub opened: usize,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub commit_to_client_ms: Vec<f64>,
    pub reply_to_client_ms: Vec<f64>,
    /// One value per event: reply → the last subscriber.
    pub reply_to_all_ms: Vec<f64>,
}

impl Level {
    pub fn rss_per_subscriber_kib(&self) -> Option<f64> {
        Some(
            self.rss_after_kib?.saturating_sub(self.rss_before_kib?) as f64
                / self.subscribers as f64,
        )
    }
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is --pid the api's?)"))?;
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

/// An event as it reached socket `idx`.
struct Arrival {
    idx: usize,
    balance: String,
    at: String,
    arrived: Instant,
    wall: chrono::DateTime<chrono::Utc>,
}

/// Sockets opened at once: enough to open 10,000 in seconds, few enough
/// not to look like a connection flood to the api's accept loop.
const CONNECT_CONCURRENCY: usize = 64;

pub async fn run(
    http: &reqwest::Client,
    url: &str,
    pid: Option<u32>,
    counts: &[usize],
    events: usize,
) -> anyhow::Result<Vec<Level>> {
    let (_, token) = api::register(http, url, "subs").await?;
    let d = gql(
        http,
        url,
        Some(&token),
        "mutation { openAccount(input: {kind: CHECKING, currency: \"USD\"}) { id } }",
        json!({}),
    )
    .await?;
    let account = d["openAccount"]["id"].as_str().context("id")?.to_owned();

    let (tx, mut rx) = mpsc::unbounded_channel::<Arrival>();
    let mut sockets: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let abort_all = |s: &mut Vec<tokio::task::JoinHandle<()>>| s.drain(..).for_each(|h| h.abort());
    let mut counts = counts.to_vec();
    counts.sort_unstable();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = pid.map(rss_kib).transpose()?;
    let mut balance_minor: i64 = 0;
    let mut levels = Vec::new();
    for count in counts {
        let start = Instant::now();
        let first = sockets.len();
        let opened: Vec<anyhow::Result<api::Ws>> = futures::stream::iter(first..count)
            .map(|_| {
                let (url, token, account) = (url.to_owned(), token.clone(), account.clone());
                async move {
                    let mut ws = api::connect(&url, &token).await?;
                    api::subscribe(
                        &mut ws,
                        "b",
                        "subscription($a: ID!) { balanceChanged(accountId: $a) { balance at } }",
                        json!({"a": account}),
                    )
                    .await?;
                    Ok(ws)
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        for (i, ws) in opened.into_iter().enumerate() {
            let ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    abort_all(&mut sockets);
                    bail!("opening subscriber {} of {count}: {e}", first + i + 1);
                }
            };
            sockets.push(tokio::spawn(listen(first + i, ws, tx.clone())));
        }
        let connect_s = start.elapsed().as_secs_f64();
        // Let the api settle (subscriptions registered, buffers allocated)
        // before reading its memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after = pid.map(rss_kib).transpose()?;
        while rx.try_recv().is_ok() {}

        let mut level = Level {
            subscribers: count,
            events,
            connect_s,
            opened: count - first,
            rss_before_kib: rss_before,
            rss_after_kib: rss_after,
            commit_to_client_ms: Vec::new(),
            reply_to_client_ms: Vec::new(),
            reply_to_all_ms: Vec::new(),
        };
        for round in 0..events {
            balance_minor += 100;
            let expected = format!("{}.{:02}", balance_minor / 100, balance_minor % 100);
            gql(
                http,
                url,
                Some(&token),
                "mutation($a: ID!, $k: String!) { deposit(input: {accountId: $a, amount: \"1.00\", idempotencyKey: $k}) { id } }",
                json!({"a": account, "k": format!("bench-subs-{count}-{round}")}),
            )
            .await?;
            let replied = Instant::now();
            let mut seen = vec![false; count];
            let (mut got, mut last) = (0, replied);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while got < count {
                let a = match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(a)) => a,
                    _ => {
                        abort_all(&mut sockets);
                        bail!(
                            "only {got} of {count} subscribers got balance {expected} within 60 s"
                        );
                    }
                };
                if a.balance != expected || a.idx >= count || seen[a.idx] {
                    continue;
                }
                seen[a.idx] = true;
                got += 1;
                let at = chrono::DateTime::parse_from_rfc3339(&a.at)?;
                level.commit_to_client_ms.push(
                    (a.wall - at.with_timezone(&chrono::Utc))
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1000.0,
                );
                level
                    .reply_to_client_ms
                    .push(a.arrived.saturating_duration_since(replied).as_secs_f64() * 1000.0);
                last = last.max(a.arrived);
            }
            level
                .reply_to_all_ms
                .push(last.duration_since(replied).as_secs_f64() * 1000.0);
        }
        level.commit_to_client_ms.sort_by(f64::total_cmp);
        level.reply_to_client_ms.sort_by(f64::total_cmp);
        level.reply_to_all_ms.sort_by(f64::total_cmp);
        eprintln!(
            "[bench] subscriptions: {count} subscribers, {events} events each delivered to all"
        );
        levels.push(level);
    }
    abort_all(&mut sockets);
    Ok(levels)
}

/// Forwards every `balanceChanged` event of one socket to the driver.
async fn listen(idx: usize, mut ws: api::Ws, tx: mpsc::UnboundedSender<Arrival>) {
    loop {
        match api::next_event(&mut ws).await {
            Ok(Some(p)) => {
                let (arrived, wall) = (Instant::now(), chrono::Utc::now());
                let ev = &p["data"]["balanceChanged"];
                let arrival = Arrival {
                    idx,
                    balance: ev["balance"].as_str().unwrap_or_default().to_owned(),
                    at: ev["at"].as_str().unwrap_or_default().to_owned(),
                    arrived,
                    wall,
                };
                if tx.send(arrival).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                eprintln!("[bench] subscriber {idx} failed: {e}");
                return;
            }
        }
    }
}
