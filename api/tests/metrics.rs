//! `/metrics` after real activity (issue #7): transfers by kind and status,
//! the hold and settlement histograms, queue depth and age per queue, the
//! PENDING backlog, database pools (api and worker), active subscriptions,
//! and email retries and dead letters. Every test runs the real binaries
//! against PostgreSQL and Redis.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const QUEUES: [&str; 4] = ["settlement", "email", "bills", "bill-reports"];

/// The value of one exact series, e.g. `name{a="b"}` or a bare `name`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn must(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in /metrics:\n{text}"))
}

/// Every sample line has a `# TYPE` for its family and a parseable value;
/// every family has a `# HELP`.
fn assert_exposition_format(text: &str) {
    let mut typed: Vec<String> = Vec::new();
    let mut helped: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            assert!(
                !typed.iter().any(|t| t == name),
                "family {name} declared twice:\n{text}"
            );
            typed.push(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let family = typed
            .iter()
            .find(|t| {
                name == t.as_str()
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(t.as_str()))
            })
            .unwrap_or_else(|| panic!("sample {line:?} has no # TYPE before it:\n{text}"));
        assert!(
            name.starts_with("corebank_"),
            "{name} lacks the corebank_ prefix"
        );
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(
            value.parse::<f64>().is_ok(),
            "unparseable value in {line:?}"
        );
        let _ = family;
    }
    for name in &typed {
        assert!(
            helped.contains(name),
            "family {name} has no # HELP line:\n{text}"
        );
    }
}

/// Scrapes `url` until `series` satisfies `ok`, or fails with the last text.
async fn wait_series(
    http: &reqwest::Client,
    url: &str,
    series: &str,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .expect("metrics body");
        if sample(&text, series).is_some_and(&ok) {
            return text;
        }
        if Instant::now() > deadline {
            panic!(
                "{series} never became {what} within 20 s; last value {:?}:\n{text}",
                sample(&text, series)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_backlog_while_no_worker_runs_then_its_settlement() {
    // No worker at first: the deposit's settlement job must wait in Redis.
    let worker_metrics = free_addr();
    let app = TestApp::builder()
        .workers(0)
        .env("METRICS_ADDR", &worker_metrics)
        .spawn()
        .await;
    let http = reqwest::Client::new();
    let api_url = app.url("/metrics");
    let alice = app.register_random().await;
    let account = app.open_account(&alice, "CHECKING", "USD").await;
    let deposit = app.deposit(&alice, &account.id, "25.00", &key()).await;
    assert_eq!(deposit["status"], "PENDING", "{deposit}");

    // Queue ages are whole seconds on Redis: wait until one has passed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let text = app.metrics().await;
    assert_exposition_format(&text);
    assert!(
        must(
            &text,
            "corebank_hold_duration_seconds_count{kind=\"DEPOSIT\",outcome=\"ok\"}"
        ) >= 1.0
    );
    assert_eq!(
        must(&text, "corebank_transfers_accepted_total{kind=\"DEPOSIT\"}"),
        1.0
    );
    assert_eq!(
        must(&text, "corebank_transfers_pending{kind=\"DEPOSIT\"}"),
        1.0
    );
    assert_eq!(
        must(&text, "corebank_transfers_pending{kind=\"TRANSFER\"}"),
        0.0
    );
    let backlog_age = must(&text, "corebank_transfers_pending_oldest_age_seconds");
    assert!(
        (1.0..60.0).contains(&backlog_age),
        "oldest pending age {backlog_age}"
    );
    for q in QUEUES {
        for state in ["waiting", "scheduled", "running", "dead"] {
            must(
                &text,
                &format!("corebank_queue_jobs{{queue=\"{q}\",state=\"{state}\"}}"),
            );
        }
        must(
            &text,
            &format!("corebank_queue_oldest_waiting_age_seconds{{queue=\"{q}\"}}"),
        );
    }
    assert_eq!(
        must(
            &text,
            "corebank_queue_jobs{queue=\"settlement\",state=\"waiting\"}"
        ),
        1.0,
        "the deposit's settlement job waits:\n{text}"
    );
    let queue_age = must(
        &text,
        "corebank_queue_oldest_waiting_age_seconds{queue=\"settlement\"}",
    );
    assert!((1.0..60.0).contains(&queue_age), "queue age {queue_age}");
    assert!(must(&text, "corebank_db_pool_connections{pool=\"api\"}") >= 1.0);
    assert_eq!(
        must(&text, "corebank_db_pool_max_connections{pool=\"api\"}"),
        32.0
    );
    must(&text, "corebank_db_pool_idle_connections{pool=\"api\"}");
    assert_eq!(must(&text, "corebank_email_dead_letters"), 0.0);

    // A worker arrives and settles it.
    let _worker = app.spawn_worker().await;
    let done = app
        .wait_transfer_final(
            &alice,
            deposit["id"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let text = wait_series(
        &http,
        &api_url,
        "corebank_queue_jobs{queue=\"settlement\",state=\"waiting\"}",
        "0",
        |v| v == 0.0,
    )
    .await;
    assert_eq!(
        must(&text, "corebank_transfers_pending{kind=\"DEPOSIT\"}"),
        0.0
    );
    assert_eq!(
        must(&text, "corebank_transfers_pending_oldest_age_seconds"),
        0.0
    );
    assert_eq!(
        must(
            &text,
            "corebank_queue_oldest_waiting_age_seconds{queue=\"settlement\"}"
        ),
        0.0
    );

    // The worker's own endpoint: its pool, its settlement, by kind.
    let worker_url = format!("http://{worker_metrics}/metrics");
    let text = wait_series(
        &http,
        &worker_url,
        "corebank_transfers_settled_total{kind=\"DEPOSIT\",status=\"COMPLETED\"}",
        "1",
        |v| v == 1.0,
    )
    .await;
    assert_exposition_format(&text);
    assert!(must(&text, "corebank_db_pool_connections{pool=\"worker\"}") >= 1.0);
    assert_eq!(
        must(&text, "corebank_db_pool_max_connections{pool=\"worker\"}"),
        32.0
    );
    must(&text, "corebank_db_pool_idle_connections{pool=\"worker\"}");
    assert!(must(&text, "corebank_settlement_duration_seconds_count") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_transfers_by_kind_and_status_with_in_process_workers() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let from = app.funded_account(&alice, "USD", "100.00").await;
    let to = app.open_account(&bob, "CHECKING", "USD").await;
    // A transfer beyond the available balance is refused at the hold, so it
    // shows as a hold with outcome="error" and never reaches settlement.
    let ok = app
        .transfer(&alice, &from.id, &to.number, "10.00", &key())
        .await;
    app.wait_transfer_final(&alice, ok["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    let refused = app
        .transfer_raw(&alice, &from.id, &to.number, "1000.00", &key())
        .await;
    expect_code(&refused, "INSUFFICIENT_FUNDS");

    let text = wait_series(
        &reqwest::Client::new(),
        &app.url("/metrics"),
        "corebank_transfers_settled_total{kind=\"TRANSFER\",status=\"COMPLETED\"}",
        "1",
        |v| v == 1.0,
    )
    .await;
    assert_exposition_format(&text);
    assert_eq!(
        must(
            &text,
            "corebank_transfers_settled_total{kind=\"DEPOSIT\",status=\"COMPLETED\"}"
        ),
        1.0
    );
    assert_eq!(
        must(
            &text,
            "corebank_hold_duration_seconds_count{kind=\"TRANSFER\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        must(
            &text,
            "corebank_hold_duration_seconds_count{kind=\"TRANSFER\",outcome=\"error\"}"
        ),
        1.0
    );
    assert!(
        must(
            &text,
            "corebank_hold_duration_seconds_bucket{kind=\"DEPOSIT\",outcome=\"ok\",le=\"+Inf\"}"
        ) >= 1.0
    );
    // In-process workers have their own pool, listed beside the api's.
    assert!(must(&text, "corebank_db_pool_connections{pool=\"api\"}") >= 1.0);
    assert!(must(&text, "corebank_db_pool_connections{pool=\"worker\"}") >= 1.0);
    assert!(must(&text, "corebank_settlement_duration_seconds_count") >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_active_subscriptions_by_field_until_the_socket_closes() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let url = app.url("/metrics");
    let alice = app.register_random().await;
    let account = app.open_account(&alice, "CHECKING", "USD").await;
    let series = |f: &str| format!("corebank_subscriptions_active{{field=\"{f}\"}}");

    let text = app.metrics().await;
    // Scrape-time queries are not API statements: a scrape alone leaves
    // corebank_db_statements_total where it was.
    let again = app.metrics().await;
    assert_eq!(
        must(&text, "corebank_db_statements_total"),
        must(&again, "corebank_db_statements_total"),
        "scraping /metrics counted database statements"
    );
    for f in [
        "balanceChanged",
        "transferUpdated",
        "notificationReceived",
        "billsUpdated",
    ] {
        assert_eq!(must(&text, &series(f)), 0.0, "{f} before any socket");
    }

    let mut ws = Ws::connect(&app.addr, alice.token().unwrap()).await;
    ws.subscribe(
        "b",
        "subscription B($id: ID!) { balanceChanged(accountId: $id) { balance } }",
        json!({ "id": account.id }),
    )
    .await;
    ws.subscribe(
        "t",
        "subscription { transferUpdated { id status } }",
        json!({}),
    )
    .await;
    ws.subscribe(
        "n",
        "subscription { notificationReceived { id } }",
        json!({}),
    )
    .await;
    wait_series(&http, &url, &series("balanceChanged"), "1", |v| v == 1.0).await;
    wait_series(&http, &url, &series("transferUpdated"), "1", |v| v == 1.0).await;
    let text = wait_series(&http, &url, &series("notificationReceived"), "1", |v| {
        v == 1.0
    })
    .await;
    assert_eq!(must(&text, &series("billsUpdated")), 0.0);
    assert!(must(&text, "corebank_subscription_sockets") >= 1.0);

    // `complete` ends one subscription; the others live on.
    ws.unsubscribe("t").await;
    let text = wait_series(&http, &url, &series("transferUpdated"), "0", |v| v == 0.0).await;
    assert_eq!(must(&text, &series("balanceChanged")), 1.0);

    // Closing the socket ends the rest.
    ws.close().await;
    wait_series(&http, &url, &series("balanceChanged"), "0", |v| v == 0.0).await;
    wait_series(&http, &url, &series("notificationReceived"), "0", |v| {
        v == 0.0
    })
    .await;
    wait_series(&http, &url, "corebank_subscription_sockets", "0", |v| {
        v == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_email_outcomes_and_dead_letters() {
    let sink = SmtpSink::start_with(&["reject-"]).await;
    let app = TestApp::builder().smtp(&sink.addr()).spawn().await;
    let http = reqwest::Client::new();
    let url = app.url("/metrics");
    // Registration sends a verification email: one is accepted, one is
    // refused permanently by the mail server and dead-lettered.
    app.register_random().await;
    app.register(
        &format!("reject-{}@example.test", uuid::Uuid::new_v4().simple()),
        PASSWORD,
        "Rejected Holder",
    )
    .await;
    wait_series(
        &http,
        &url,
        "corebank_email_attempts_total{outcome=\"sent\"}",
        "≥ 1",
        |v| v >= 1.0,
    )
    .await;
    wait_series(
        &http,
        &url,
        "corebank_email_attempts_total{outcome=\"dead_permanent\"}",
        "1",
        |v| v == 1.0,
    )
    .await;
    let text = wait_series(&http, &url, "corebank_email_dead_letters", "1", |v| {
        v == 1.0
    })
    .await;
    assert_exposition_format(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_in_embedded_mode_read_the_sqlite_queue_and_pools() {
    let app = TestApp::builder().sqlite().spawn().await;
    let alice = app.register_random().await;
    app.funded_account(&alice, "USD", "10.00").await;
    let text = app.metrics().await;
    assert_exposition_format(&text);
    for q in QUEUES {
        must(
            &text,
            &format!("corebank_queue_jobs{{queue=\"{q}\",state=\"waiting\"}}"),
        );
        must(
            &text,
            &format!("corebank_queue_oldest_waiting_age_seconds{{queue=\"{q}\"}}"),
        );
    }
    assert_eq!(
        must(&text, "corebank_transfers_pending{kind=\"DEPOSIT\"}"),
        0.0
    );
    must(&text, "corebank_transfers_pending_oldest_age_seconds");
    assert_eq!(must(&text, "corebank_email_dead_letters"), 0.0);
    assert!(must(&text, "corebank_db_pool_connections{pool=\"api\"}") >= 1.0);
    assert_eq!(
        must(&text, "corebank_db_pool_max_connections{pool=\"worker\"}"),
        8.0
    );
    assert!(
        must(
            &text,
            "corebank_transfers_settled_total{kind=\"DEPOSIT\",status=\"COMPLETED\"}"
        ) >= 1.0
    );
}
