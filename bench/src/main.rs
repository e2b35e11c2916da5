//! corebank benchmarks: one command measures the end-to-end figures and,
//! in the same run on the same machine, the baselines they are divided by.
//! Nothing here is a test; `bench/run.sh` starts a fresh api + worker and
//! runs it (`bash bench/run.sh --smoke` is the quick check used by
//! scripts/test.sh).
//!
//! ```text
//! bench [SCENARIOS] [--url http://127.0.0.1:8000] [--db postgres://…] [--pid <api pid>]
//!       [--clients 1,4,16,64] [--modes uniform,hot] [--read-clients …] [--duration 10]
//!       [--accounts 1000] [--accounts-per-user 20] [--subscribers 1000,10000]
//!       [--events 20] [--out bench/results]
//! ```
//!
//! SCENARIOS is `all` (the default) or a comma list of:
//! - `baseline`: the ceilings alone. Raw-SQL settlement-shaped transactions
//!   at each `--clients` and mode (uniform over 10,000 accounts, hot-spot
//!   over 10) on scratch `bench_*` tables in `--db`, and `GET /healthz`
//!   req/s at each `--read-clients` (baseline.rs).
//! - `transfers`: GraphQL `transfer` mutations at each `--clients` and
//!   `--modes`, each for `--duration` s, then until every one is settled;
//!   settled transfers/s, mutation latency, and mutation → COMPLETED latency
//!   seen on `transferUpdated` subscriptions, each ÷ the raw-SQL baseline
//!   of the same mode and concurrency (transfers.rs; runs that baseline).
//! - `reads`: `account(id)` + `transfers(first: 20)` queries/s and latency
//!   at each `--read-clients`, ÷ `GET /healthz` (reads.rs; runs that
//!   baseline).
//! - `subscriptions`: `--subscribers` idle `balanceChanged` sockets (levels
//!   are cumulative), `--events` deposits each delivered to all: commit →
//!   client and mutation reply → every subscriber latency, api RSS per
//!   subscriber with `--pid` (subscriptions.rs).
//!
//! Output: markdown tables on stdout, and `results.md`, `results.json`
//! (every figure with its conditions: commit, clients, accounts, mode,
//! cores, date) and `throughput.png`, `latency_cdf.png` in `--out`.
//! Any failure (an error reply, a transfer that never settles, a
//! subscriber that misses an event, a file not written) exits non-zero.
//!
//! The api needs a high `RATE_LIMIT_PER_MINUTE` (every request and every
//! subscribe counts) and `EMAIL_VERIFICATION=optional`; the bench process
//! raises its own open-files limit for 10,000 sockets, the api needs
//! `ulimit -n` raised by whoever starts it. Defaults can also come from
//! `BENCH_URL`, `BENCH_DATABASE_URL` and `BENCH_API_PID`.

mod api;
mod baseline;
mod load;
mod plot;
mod reads;
mod report;
mod subscriptions;
mod transfers;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::json;

use baseline::Mode;
use report::Results;

struct Args {
    scenarios: Vec<String>,
    url: String,
    db: String,
    pid: Option<u32>,
    clients: Vec<usize>,
    read_clients: Option<Vec<usize>>,
    modes: Vec<Mode>,
    duration: Duration,
    accounts: usize,
    accounts_per_user: usize,
    subscribers: Vec<usize>,
    events: usize,
    out: PathBuf,
}

const SCENARIOS: [&str; 4] = ["baseline", "transfers", "reads", "subscriptions"];

fn list<T: std::str::FromStr>(v: &str) -> anyhow::Result<Vec<T>> {
    v.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| anyhow!("bad list item {s:?} in {v:?}"))
        })
        .collect()
}

fn parse_args() -> anyhow::Result<Args> {
    let env = |n: &str, d: &str| std::env::var(n).unwrap_or_else(|_| d.to_owned());
    let mut a = Args {
        scenarios: SCENARIOS.iter().map(|s| s.to_string()).collect(),
        url: env("BENCH_URL", "http://127.0.0.1:8000"),
        db: env(
            "BENCH_DATABASE_URL",
            "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        ),
        pid: std::env::var("BENCH_API_PID")
            .ok()
            .and_then(|p| p.parse().ok()),
        clients: vec![1, 4, 16, 64],
        read_clients: None,
        modes: vec![Mode::Uniform, Mode::Hot],
        duration: Duration::from_secs(10),
        accounts: 1000,
        accounts_per_user: 20,
        subscribers: vec![1000, 10_000],
        events: 20,
        out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results")),
    };
    let mut it = std::env::args().skip(1).peekable();
    if let Some(first) = it.peek()
        && !first.starts_with("--")
    {
        let first = it.next().unwrap_or_default();
        if first != "all" {
            a.scenarios = list(&first)?;
            for s in &a.scenarios {
                if !SCENARIOS.contains(&s.as_str()) {
                    bail!(
                        "unknown scenario {s}; available: all, {}",
                        SCENARIOS.join(", ")
                    );
                }
            }
        }
    }
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = v.trim_end_matches('/').to_owned(),
            "--db" => a.db = v,
            "--pid" => a.pid = Some(v.parse()?),
            "--clients" => a.clients = list(&v)?,
            "--read-clients" => a.read_clients = Some(list(&v)?),
            "--modes" => {
                a.modes = v
                    .split(',')
                    .map(|m| Mode::parse(m.trim()))
                    .collect::<anyhow::Result<_>>()?
            }
            "--duration" => a.duration = Duration::from_secs_f64(v.parse()?),
            "--accounts" => a.accounts = v.parse()?,
            "--accounts-per-user" => a.accounts_per_user = v.parse()?,
            // `--count` and `--rounds` are the names the first version used.
            "--subscribers" | "--count" => a.subscribers = list(&v)?,
            "--events" | "--rounds" => a.events = v.parse()?,
            "--out" => a.out = PathBuf::from(v),
            _ => bail!("unknown flag {flag} (see the doc comment in bench/src/main.rs)"),
        }
    }
    if a.clients.contains(&0) || a.read_clients.iter().flatten().any(|c| *c == 0) {
        bail!("client counts must be positive");
    }
    Ok(a)
}

/// Raises the soft open-files limit to the hard one: 10,000 subscriber
/// sockets need 10,000 descriptors, and the usual soft default is 1,024.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r = raised;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux x86_64, not everywhere
    let cur = r.rlim_cur as u64;
    cur
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn cpu_model() -> Option<String> {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_owned())
}

fn conditions(a: &Args, nofile: u64) -> serde_json::Value {
    json!({
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "git_commit": std::env::var("BENCH_GIT_COMMIT").ok().or_else(|| git(&["rev-parse", "HEAD"])),
        "git_dirty": git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        // The api/worker build profile as run.sh passes it; else the bench's own.
        "profile": std::env::var("BENCH_PROFILE").unwrap_or_else(|_| if cfg!(debug_assertions) { "debug" } else { "release" }.into()),
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": cpu_model(),
            "open_files_limit": nofile,
        },
        "url": a.url,
        "scenarios": a.scenarios,
        "clients": a.clients,
        "read_clients": a.read_clients.clone().unwrap_or_else(|| a.clients.clone()),
        "modes": a.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "duration_s": a.duration.as_secs_f64(),
        "e2e_uniform_accounts": a.accounts.max(baseline::HOT_ACCOUNTS),
        "accounts_per_user": a.accounts_per_user,
        "hot_accounts": baseline::HOT_ACCOUNTS,
        "sql_uniform_accounts": baseline::SQL_UNIFORM_ACCOUNTS,
        "transfer_amount": "0.01 USD",
        "subscribers": a.subscribers,
        "events_per_subscriber_level": a.events,
        "api_pid": a.pid,
        "note": "raw-SQL baselines run first, before the api's and worker's connection pools have grown, so that PostgreSQL's 100 connections suffice at 64 clients",
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let nofile = raise_nofile();
    let wants = |s: &str| a.scenarios.iter().any(|x| x == s);
    let max_subs = a.subscribers.iter().copied().max().unwrap_or(0);
    if wants("subscriptions") && (max_subs as u64) + 256 > nofile {
        bail!(
            "{max_subs} subscribers need more open files than this process may have ({nofile}); raise the hard limit (ulimit -Hn)"
        );
    }
    let read_clients = a.read_clients.clone().unwrap_or_else(|| a.clients.clone());
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut r = Results {
        conditions: conditions(&a, nofile),
        ..Results::default()
    };

    // Baselines first (see the note in the conditions).
    if wants("baseline") || wants("transfers") {
        for &mode in &a.modes {
            for &clients in &a.clients {
                let run = baseline::raw_sql(&a.db, mode, clients, a.duration).await?;
                eprintln!(
                    "[bench] raw SQL {} {clients} clients: {:.0} transfers/s",
                    mode.name(),
                    run.per_second()
                );
                r.raw_sql.push((mode, clients, run));
            }
        }
    }
    if wants("baseline") || wants("reads") {
        for &clients in &read_clients {
            let run = baseline::healthz(&http, &a.url, clients, a.duration).await?;
            eprintln!(
                "[bench] /healthz {clients} clients: {:.0} req/s",
                run.per_second()
            );
            r.healthz.push((clients, run));
        }
    }

    if wants("transfers") || wants("reads") {
        let mut pool =
            transfers::Pool::setup(&http, &a.url, a.accounts, a.accounts_per_user).await?;
        if wants("transfers") {
            for &mode in &a.modes {
                for &clients in &a.clients {
                    let e = transfers::run(&http, &pool, mode, clients, a.duration).await?;
                    eprintln!(
                        "[bench] transfers {} {clients} clients: {} sent, {:.0} settled/s",
                        mode.name(),
                        e.transfers,
                        e.settled_per_s
                    );
                    r.e2e.push(e);
                }
            }
        }
        if wants("reads") {
            pool.refresh_tokens(&http).await?;
            for &clients in &read_clients {
                let run = reads::run(&http, &pool, clients, a.duration).await?;
                eprintln!(
                    "[bench] reads {clients} clients: {:.0} queries/s",
                    run.per_second()
                );
                r.reads.push((clients, run));
            }
        }
    }

    if wants("subscriptions") {
        r.subscriptions =
            subscriptions::run(&http, &a.url, a.pid, &a.subscribers, a.events).await?;
    }

    print!("{}", report::markdown(&r));
    let files = report::write_all(&r, &a.out)?;
    for f in files {
        eprintln!("[bench] wrote {}", f.display());
    }
    Ok(())
}
