//! The shared closed-loop load generator and the percentile helpers.
//!
//! Every scenario (raw SQL, /healthz, GraphQL mutations and queries) is
//! driven by the same loop so that their ratios compare like with like:
//! `clients` tasks each run one operation after another until the deadline,
//! and the run counts completed operations and records each one's latency.
//! A failing operation fails the whole run: a benchmark that quietly drops
//! errors reports a speed that nobody gets.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What one closed-loop run measured.
pub struct Run {
    /// Operations completed by all clients together.
    pub ops: usize,
    /// From the start of the first operation to the end of the last one.
    pub elapsed: Duration,
    /// The instant the clients were released.
    pub started: Instant,
    /// Latency of every operation in milliseconds, sorted ascending.
    pub latencies_ms: Vec<f64>,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `op(client, iteration)` from `clients` concurrent tasks until
/// `duration` has passed. Each client runs at least one operation, so a tiny
/// smoke duration still exercises every path.
pub async fn closed_loop<F, Fut>(clients: usize, duration: Duration, op: F) -> anyhow::Result<Run>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    // Release every client at the same instant: spawning 64 tasks takes
    // long enough to skew the first client's share otherwise.
    let gate = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (op, gate) = (op.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                let deadline = Instant::now() + duration;
                let mut lat = Vec::new();
                let mut i = 0;
                loop {
                    let s = Instant::now();
                    op(c, i).await?;
                    lat.push(s.elapsed().as_secs_f64() * 1000.0);
                    i += 1;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                anyhow::Ok((lat, Instant::now()))
            })
        })
        .collect();
    gate.wait().await;
    let started = Instant::now();
    let mut latencies_ms = Vec::new();
    let mut last = started;
    for t in tasks {
        let (lat, end) = t.await??;
        latencies_ms.extend(lat);
        last = last.max(end);
    }
    latencies_ms.sort_by(f64::total_cmp);
    Ok(Run {
        ops: latencies_ms.len(),
        elapsed: last.duration_since(started),
        started,
        latencies_ms,
    })
}

/// Nearest-rank percentile of an ascending slice (`p` in 0..=1); NaN when empty.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts a latency sample and summarises it for the JSON file.
pub fn summary(mut sample: Vec<f64>) -> (Vec<f64>, Value) {
    sample.sort_by(f64::total_cmp);
    let v = json!({
        "count": sample.len(),
        "p50_ms": num(pct(&sample, 0.5)),
        "p90_ms": num(pct(&sample, 0.9)),
        "p99_ms": num(pct(&sample, 0.99)),
        "max_ms": num(sample.last().copied().unwrap_or(f64::NAN)),
    });
    (sample, v)
}

/// A JSON number, or null for NaN (JSON has no NaN).
pub fn num(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

#[cfg(test)]
mod tests {
    use super::pct;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(pct(&s, 0.5), 50.0);
        assert_eq!(pct(&s, 0.99), 99.0);
        assert_eq!(pct(&s, 1.0), 100.0);
        assert_eq!(pct(&s, 0.0), 1.0);
        assert_eq!(pct(&[7.0], 0.99), 7.0);
        assert!(pct(&[], 0.5).is_nan());
    }
}
