//! Everything a run measured, and its three renderings: markdown tables
//! (stdout and `results.md`), one JSON file with every figure and its
//! conditions (`results.json`), and the plots (plot.rs).
//!
//! Every figure sits next to the baseline measured in the same run that it
//! is divided by: settled transfers/s by raw-SQL transfers/s of the same
//! mode and concurrency, mutation latencies by the raw-SQL transaction's,
//! reads by `GET /healthz` at the same concurrency.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use crate::baseline::Mode;
use crate::load::{Run, num, pct, summary};
use crate::subscriptions::Level;
use crate::transfers::E2e;

#[derive(Default)]
pub struct Results {
    /// git commit, machine, date, settings.
    pub conditions: Value,
    pub raw_sql: Vec<(Mode, usize, Run)>,
    pub healthz: Vec<(usize, Run)>,
    pub e2e: Vec<E2e>,
    pub reads: Vec<(usize, Run)>,
    pub subscriptions: Vec<Level>,
}

impl Results {
    pub fn raw(&self, mode: Mode, clients: usize) -> Option<&Run> {
        self.raw_sql
            .iter()
            .find(|(m, c, _)| *m == mode && *c == clients)
            .map(|(_, _, r)| r)
    }

    pub fn health(&self, clients: usize) -> Option<&Run> {
        self.healthz
            .iter()
            .find(|(c, _)| *c == clients)
            .map(|(_, r)| r)
    }
}

fn ratio(value: f64, baseline: Option<f64>) -> Option<f64> {
    baseline.filter(|b| *b > 0.0).map(|b| value / b)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}"))
}

fn ms(x: f64) -> String {
    if x.is_nan() {
        "—".into()
    } else if x < 10.0 {
        format!("{x:.2} ms")
    } else {
        format!("{x:.1} ms")
    }
}

fn p50_p99(s: &[f64]) -> String {
    format!("{} / {}", ms(pct(s, 0.5)), ms(pct(s, 0.99)))
}

pub fn markdown(r: &Results) -> String {
    let mut o = String::new();
    let c = &r.conditions;
    let _ = writeln!(
        o,
        "# corebank bench — {} ({} profile), commit {}{}, {} cores\n",
        c["date"].as_str().unwrap_or(""),
        c["profile"].as_str().unwrap_or("?"),
        c["git_commit"].as_str().unwrap_or("?"),
        if c["git_dirty"] == true {
            " (dirty)"
        } else {
            ""
        },
        c["machine"]["cores"],
    );
    if !r.raw_sql.is_empty() || !r.healthz.is_empty() {
        o.push_str("## Baselines (same run, same machine)\n\n");
        o.push_str("| baseline | mode | clients | ops/s | latency p50 / p99 |\n| --- | --- | --- | --- | --- |\n");
        for (mode, clients, run) in &r.raw_sql {
            let _ = writeln!(
                o,
                "| raw-SQL transfer transactions | {} | {clients} | {:.0} | {} |",
                mode.name(),
                run.per_second(),
                p50_p99(&run.latencies_ms)
            );
        }
        for (clients, run) in &r.healthz {
            let _ = writeln!(
                o,
                "| GET /healthz | — | {clients} | {:.0} | {} |",
                run.per_second(),
                p50_p99(&run.latencies_ms)
            );
        }
        o.push('\n');
    }
    if !r.e2e.is_empty() {
        o.push_str("## Transfers end to end (ratio: ÷ raw SQL, same mode and clients)\n\n");
        o.push_str("| mode | clients | transfers | settled transfers/s | raw SQL/s | ratio | mutation p50 / p99 | ratio p50 / p99 | mutation → COMPLETED p50 / p99 | ratio p50 / p99 |\n");
        o.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        for e in &r.e2e {
            let raw = r.raw(e.mode, e.clients);
            let raw_tps = raw.map(Run::per_second);
            let lat_ratio = |s: &[f64]| {
                let b = raw.map(|b| &b.latencies_ms[..]).unwrap_or(&[]);
                format!(
                    "{} / {}",
                    fmt_ratio(ratio(pct(s, 0.5), Some(pct(b, 0.5)))),
                    fmt_ratio(ratio(pct(s, 0.99), Some(pct(b, 0.99))))
                )
            };
            let _ = writeln!(
                o,
                "| {} | {} | {}{} | {:.0} | {} | {} | {} | {} | {} | {} |",
                e.mode.name(),
                e.clients,
                e.transfers,
                if e.events_missed > 0 {
                    format!(" ({} events missed)", e.events_missed)
                } else {
                    String::new()
                },
                e.settled_per_s,
                raw_tps.map_or("—".into(), |t| format!("{t:.0}")),
                fmt_ratio(ratio(e.settled_per_s, raw_tps)),
                p50_p99(&e.mutation_ms),
                lat_ratio(&e.mutation_ms),
                p50_p99(&e.completed_ms),
                lat_ratio(&e.completed_ms),
            );
        }
        o.push('\n');
    }
    if !r.reads.is_empty() {
        o.push_str("## Reads: account(id) + transfers(first: 20) (ratio: ÷ GET /healthz, same clients)\n\n");
        o.push_str("| clients | queries/s | /healthz req/s | ratio | p50 / p99 | /healthz p99 | ratio p99 |\n| --- | --- | --- | --- | --- | --- | --- |\n");
        for (clients, run) in &r.reads {
            let h = r.health(*clients);
            let h_rps = h.map(Run::per_second);
            let h_p99 = h.map(|h| pct(&h.latencies_ms, 0.99));
            let p99 = pct(&run.latencies_ms, 0.99);
            let _ = writeln!(
                o,
                "| {clients} | {:.0} | {} | {} | {} | {} | {} |",
                run.per_second(),
                h_rps.map_or("—".into(), |t| format!("{t:.0}")),
                fmt_ratio(ratio(run.per_second(), h_rps)),
                p50_p99(&run.latencies_ms),
                h_p99.map_or("—".into(), ms),
                fmt_ratio(ratio(p99, h_p99)),
            );
        }
        o.push('\n');
    }
    if !r.subscriptions.is_empty() {
        o.push_str("## Idle balanceChanged subscribers on one api\n\n");
        o.push_str("| subscribers | events | api RSS per subscriber | commit → client p50 / p99 | mutation reply → every subscriber p50 / p99 | reply → client p50 / p99 | sockets opened/s |\n");
        o.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
        for l in &r.subscriptions {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {:.0} |",
                l.subscribers,
                l.events,
                l.rss_per_subscriber_kib()
                    .map_or("— (no --pid)".into(), |k| format!("{k:.1} KiB")),
                p50_p99(&l.commit_to_client_ms),
                p50_p99(&l.reply_to_all_ms),
                p50_p99(&l.reply_to_client_ms),
                l.opened as f64 / l.connect_s,
            );
        }
        o.push('\n');
    }
    o
}

fn run_json(run: &Run) -> Value {
    let (_, lat) = summary(run.latencies_ms.clone());
    json!({
        "ops": run.ops,
        "seconds": num(run.elapsed.as_secs_f64()),
        "ops_per_s": num(run.per_second()),
        "latency": lat,
    })
}

pub fn json(r: &Results) -> Value {
    let raw_sql: Vec<Value> = r
        .raw_sql
        .iter()
        .map(|(mode, clients, run)| {
            json!({
                "mode": mode.name(),
                "clients": clients,
                "accounts": match mode { Mode::Uniform => crate::baseline::SQL_UNIFORM_ACCOUNTS, Mode::Hot => crate::baseline::HOT_ACCOUNTS },
                "run": run_json(run),
            })
        })
        .collect();
    let healthz: Vec<Value> = r
        .healthz
        .iter()
        .map(|(clients, run)| json!({"clients": clients, "run": run_json(run)}))
        .collect();
    let transfers: Vec<Value> = r
        .e2e
        .iter()
        .map(|e| {
            let raw = r.raw(e.mode, e.clients);
            let raw_tps = raw.map(Run::per_second);
            let b = raw.map(|b| &b.latencies_ms[..]).unwrap_or(&[]);
            json!({
                "mode": e.mode.name(),
                "clients": e.clients,
                "accounts": e.accounts,
                "transfers": e.transfers,
                "settled_per_s": num(e.settled_per_s),
                "accepted_per_s": num(e.accepted_per_s),
                "events_missed": e.events_missed,
                "mutation_latency": summary(e.mutation_ms.clone()).1,
                "mutation_to_completed_latency": summary(e.completed_ms.clone()).1,
                "reply_to_completed_latency": summary(e.reply_to_completed_ms.clone()).1,
                "baseline_raw_sql_per_s": raw_tps.map_or(Value::Null, num),
                "ratio_settled_to_raw_sql": ratio(e.settled_per_s, raw_tps).map_or(Value::Null, num),
                "ratio_mutation_p50_to_raw_sql_p50": ratio(pct(&e.mutation_ms, 0.5), Some(pct(b, 0.5))).map_or(Value::Null, num),
                "ratio_mutation_p99_to_raw_sql_p99": ratio(pct(&e.mutation_ms, 0.99), Some(pct(b, 0.99))).map_or(Value::Null, num),
            })
        })
        .collect();
    let reads: Vec<Value> = r
        .reads
        .iter()
        .map(|(clients, run)| {
            let h = r.health(*clients);
            json!({
                "clients": clients,
                "run": run_json(run),
                "baseline_healthz_per_s": h.map_or(Value::Null, |h| num(h.per_second())),
                "ratio_to_healthz": ratio(run.per_second(), h.map(Run::per_second)).map_or(Value::Null, num),
                "ratio_p99_to_healthz_p99": ratio(pct(&run.latencies_ms, 0.99), h.map(|h| pct(&h.latencies_ms, 0.99))).map_or(Value::Null, num),
            })
        })
        .collect();
    let subscriptions: Vec<Value> = r
        .subscriptions
        .iter()
        .map(|l| {
            json!({
                "subscribers": l.subscribers,
                "events": l.events,
                "deliveries": l.commit_to_client_ms.len(),
                "connect_seconds": num(l.connect_s),
                "sockets_opened": l.opened,
                "api_rss_before_kib": l.rss_before_kib,
                "api_rss_after_kib": l.rss_after_kib,
                "api_rss_per_subscriber_kib": l.rss_per_subscriber_kib().map_or(Value::Null, num),
                "commit_to_client_latency": summary(l.commit_to_client_ms.clone()).1,
                "reply_to_every_subscriber_latency": summary(l.reply_to_all_ms.clone()).1,
                "reply_to_client_latency": summary(l.reply_to_client_ms.clone()).1,
            })
        })
        .collect();
    json!({
        "conditions": r.conditions,
        "baselines": {"raw_sql": raw_sql, "healthz": healthz},
        "transfers": transfers,
        "reads": reads,
        "subscriptions": subscriptions,
    })
}

/// Writes results.md, results.json and the plots into `dir`; fails if any
/// file is missing or empty afterwards (the smoke run relies on that).
pub fn write_all(r: &Results, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = vec![dir.join("results.md"), dir.join("results.json")];
    std::fs::write(&files[0], markdown(r))?;
    std::fs::write(&files[1], serde_json::to_string_pretty(&json(r))? + "\n")?;
    files.extend(crate::plot::draw(r, dir)?);
    for f in &files {
        let len = std::fs::metadata(f)
            .with_context(|| format!("{} was not written", f.display()))?
            .len();
        anyhow::ensure!(len > 0, "{} is empty", f.display());
    }
    Ok(files)
}
