//! Prometheus counters and histograms shared by the binaries, rendered in
//! the text exposition format without an extra dependency. Gauges are
//! computed at scrape time by whoever serves `/metrics` and written with
//! [`gauge`].

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Latency buckets in seconds: 1 ms to 10 s.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(String, String), u64>,
    histograms: BTreeMap<(String, String), Histogram>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut guard = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Registry::default))
}

/// Series per registry beyond which new label sets are folded into one
/// `overflow` series: operation names come from clients, and a client must
/// not be able to grow the registry without bound.
const MAX_SERIES: usize = 500;

fn key(existing: bool, len: usize, name: &str, labels: &str) -> (String, String) {
    if existing || len < MAX_SERIES {
        (name.to_owned(), labels.to_owned())
    } else {
        (name.to_owned(), "overflow=\"true\"".to_owned())
    }
}

/// Labels are given preformatted, e.g. `kind="DEPOSIT",status="COMPLETED"`.
pub fn count(name: &str, labels: &str) {
    with(|r| {
        let existing = r
            .counters
            .contains_key(&(name.to_owned(), labels.to_owned()));
        let k = key(existing, r.counters.len(), name, labels);
        *r.counters.entry(k).or_default() += 1;
    });
}

pub fn observe(name: &str, labels: &str, seconds: f64) {
    with(|r| {
        let existing = r
            .histograms
            .contains_key(&(name.to_owned(), labels.to_owned()));
        let k = key(existing, r.histograms.len(), name, labels);
        let h = r.histograms.entry(k).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    });
}

/// Label values come from our own enums and operation names; quotes and
/// backslashes are escaped anyway.
pub fn label(value: &str) -> String {
    value
        .chars()
        .take(64)
        .collect::<String>()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// `# HELP` text of the series recorded through this registry.
fn help(name: &str) -> &'static str {
    match name {
        "corebank_transfers_accepted_total" => {
            "Transfers accepted (created PENDING, funds held) by kind."
        }
        "corebank_transfers_settled_total" => {
            "Transfers that left PENDING after their settlement committed, by kind and final status."
        }
        "corebank_settlements_total" => {
            "Settlement outcomes per transfer (SKIPPED: already settled, unknown, or taken by another worker; ERROR: database error, retried)."
        }
        "corebank_settlement_batches_total" => {
            "Settlement transactions (batches of transfers) run."
        }
        "corebank_settlement_duration_seconds" => "Time of one settlement job.",
        "corebank_hold_duration_seconds" => {
            "Time of the synchronous money mutation that validates and places the hold, by kind and outcome."
        }
        "corebank_graphql_request_duration_seconds" => {
            "GraphQL over HTTP request time by operation name and outcome."
        }
        "corebank_email_attempts_total" => {
            "Email delivery attempts by outcome (retry: rescheduled; dead_*: dead-lettered as FAILED)."
        }
        "corebank_bill_reports_total" => {
            "Bill payment reports to providers by outcome (retry: rescheduled in the payment row)."
        }
        "corebank_job_errors_total" => {
            "Job handler errors handed back to apalis for a retry, by queue."
        }
        // A series recorded without a line here still gets a HELP line.
        _ => "corebank series (no description yet: add one in queue/src/metrics.rs).",
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    if !help.is_empty() {
        out.push_str(&format!("# HELP {name} {help}\n"));
    }
    out.push_str(&format!("# TYPE {name} {kind}\n"));
}

/// Writes one gauge family computed at scrape time: `samples` are
/// (preformatted labels, value); an empty family still gets its header.
pub fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    header(out, name, "gauge", help);
    for (labels, v) in samples {
        out.push_str(&format!("{name}{} {v}\n", braces(labels)));
    }
}

pub fn render() -> String {
    with(|r| {
        let mut out = String::new();
        let mut last = String::new();
        for ((name, labels), v) in &r.counters {
            if *name != last {
                header(&mut out, name, "counter", help(name));
                last = name.clone();
            }
            out.push_str(&format!("{name}{} {v}\n", braces(labels)));
        }
        for ((name, labels), h) in &r.histograms {
            if *name != last {
                header(&mut out, name, "histogram", help(name));
                last = name.clone();
            }
            let sep = if labels.is_empty() { "" } else { "," };
            for (i, b) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}\n",
                    h.counts[i]
                ));
            }
            out.push_str(&format!(
                "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}\n",
                h.count
            ));
            let l = braces(labels);
            out.push_str(&format!(
                "{name}_sum{l} {}\n{name}_count{l} {}\n",
                h.sum, h.count
            ));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histogram_buckets() {
        count("test_things_total", "kind=\"A\"");
        count("test_things_total", "kind=\"A\"");
        observe("test_latency_seconds", "op=\"x\"", 0.003);
        observe("test_latency_seconds", "op=\"x\"", 0.3);
        let text = render();
        assert!(text.contains("test_things_total{kind=\"A\"} 2"), "{text}");
        assert!(
            text.contains("test_latency_seconds_bucket{op=\"x\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("test_latency_seconds_bucket{op=\"x\",le=\"0.5\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("test_latency_seconds_count{op=\"x\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn gauges_have_help_type_and_samples() {
        let mut out = String::new();
        gauge(
            &mut out,
            "test_depth",
            "Jobs waiting.",
            &[("queue=\"a\"".into(), 3.0), (String::new(), 0.5)],
        );
        assert_eq!(
            out,
            "# HELP test_depth Jobs waiting.\n# TYPE test_depth gauge\ntest_depth{queue=\"a\"} 3\ntest_depth 0.5\n"
        );
    }
}
