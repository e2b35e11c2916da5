//! Process-wide gauges exported on `/metrics`.

use std::sync::atomic::{AtomicI64, Ordering};

use futures::{Stream, StreamExt};

/// Open subscription WebSockets on this process.
pub static SUBSCRIPTION_SOCKETS: AtomicI64 = AtomicI64::new(0);

/// The subscription fields, as `corebank_subscriptions_active{field}` labels.
pub const SUBSCRIPTION_FIELDS: [&str; 4] = [
    "balanceChanged",
    "transferUpdated",
    "notificationReceived",
    "billsUpdated",
];

static ACTIVE_SUBSCRIPTIONS: [AtomicI64; SUBSCRIPTION_FIELDS.len()] =
    [const { AtomicI64::new(0) }; SUBSCRIPTION_FIELDS.len()];

/// Active subscriptions per field, in the order of `SUBSCRIPTION_FIELDS`.
pub fn active_subscriptions() -> [(&'static str, i64); SUBSCRIPTION_FIELDS.len()] {
    std::array::from_fn(|i| {
        (
            SUBSCRIPTION_FIELDS[i],
            ACTIVE_SUBSCRIPTIONS[i].load(Ordering::Relaxed),
        )
    })
}

/// Counts one active subscription until dropped: the guard lives inside the
/// subscription's stream, so a `complete`, a closed socket or a shutdown
/// (anything that drops the stream) takes it off the gauge.
struct ActiveGuard(usize);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE_SUBSCRIPTIONS[self.0].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wraps a subscription's event stream so that it counts in
/// `corebank_subscriptions_active{field}` for as long as it lives.
pub fn track_subscription<S: Stream>(field: &str, stream: S) -> impl Stream<Item = S::Item> {
    let index = SUBSCRIPTION_FIELDS
        .iter()
        .position(|f| *f == field)
        .expect("subscription field listed in SUBSCRIPTION_FIELDS");
    ACTIVE_SUBSCRIPTIONS[index].fetch_add(1, Ordering::Relaxed);
    let guard = ActiveGuard(index);
    stream.map(move |item| {
        let _alive = &guard;
        item
    })
}

/// Rows a scrape-time count reads at most: a backlog (or a dead-letter pile)
/// larger than this is reported as this many, so that a scrape never turns
/// into a scan of a huge table.
pub const COUNT_CAP: u64 = 100_000;

/// How long one scrape-time source (database, queue) may take; a slow one
/// leaves its samples out rather than stalling the scrape.
const SOURCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

const TRANSFER_KINDS: [&str; 5] = [
    ledger::transfers::TRANSFER,
    ledger::transfers::DEPOSIT,
    ledger::transfers::WITHDRAWAL,
    ledger::transfers::BILL_PAYMENT,
    ledger::transfers::REVERSAL,
];

/// PENDING transfers by kind and the creation time of the oldest one. Uses
/// `ix_transfers_status (status, enqueued_at)` and reads at most
/// `COUNT_CAP` pending rows (normally a handful: settlement takes
/// milliseconds), never the settled history.
async fn pending_transfers(
    db: &sea_orm::DatabaseConnection,
) -> Result<(Vec<(String, i64)>, Option<chrono::DateTime<chrono::Utc>>), sea_orm::DbErr> {
    use sea_orm::ConnectionTrait;
    let sql = format!(
        "SELECT kind, COUNT(*) AS n, MIN(created_at) AS oldest FROM \
           (SELECT kind, created_at FROM transfers WHERE status = '{}' LIMIT {COUNT_CAP}) p \
         GROUP BY kind",
        ledger::transfers::PENDING
    );
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await?;
    let mut counts = Vec::new();
    let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
    for row in rows {
        let kind: String = row.try_get("", "kind")?;
        let n: i64 = row.try_get("", "n")?;
        let at: Option<chrono::DateTime<chrono::Utc>> = row.try_get("", "oldest")?;
        if let Some(at) = at {
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        counts.push((kind, n));
    }
    Ok((counts, oldest))
}

/// Notifications whose email is dead-lettered (`FAILED`), through
/// `ix_notifications_delivery (email_status, next_attempt_at)`, capped.
async fn email_dead_letters(db: &sea_orm::DatabaseConnection) -> Result<i64, sea_orm::DbErr> {
    use sea_orm::ConnectionTrait;
    let sql = format!(
        "SELECT COUNT(*) AS n FROM \
           (SELECT 1 AS one FROM notifications WHERE email_status = '{}' LIMIT {COUNT_CAP}) d",
        ledger::notify::FAILED
    );
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get("", "n")?,
        None => 0,
    })
}

async fn within<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(SOURCE_TIMEOUT, f).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::warn!(source = what, error = %e, "metrics source failed; its samples are left out");
            None
        }
        Err(_) => {
            tracing::warn!(
                source = what,
                "metrics source timed out; its samples are left out"
            );
            None
        }
    }
}

/// The gauges computed when `/metrics` is scraped: subscriptions, database
/// pools, queue depth and age, the PENDING backlog and email dead letters.
pub async fn render_scrape_time(state: &crate::app::AppState) -> String {
    use queue::metrics::gauge;
    let mut out = String::new();

    let subs: Vec<(String, f64)> = active_subscriptions()
        .iter()
        .map(|(field, n)| (format!("field=\"{field}\""), *n as f64))
        .collect();
    gauge(
        &mut out,
        "corebank_subscriptions_active",
        "Active GraphQL subscriptions on this process, by subscription field.",
        &subs,
    );
    out.push_str(&worker::process::render_pool_metrics());

    let db = worker::process::unmetered(&state.db);
    let (depths, pending, dead) = tokio::join!(
        within("queue depths", state.queues.depths()),
        within("pending transfers", pending_transfers(&db)),
        within("email dead letters", email_dead_letters(&db)),
    );
    if let Some(depths) = depths {
        let mut jobs = Vec::new();
        let mut ages = Vec::new();
        for d in &depths {
            for (st, n) in [
                ("waiting", d.waiting),
                ("scheduled", d.scheduled),
                ("running", d.running),
                ("dead", d.dead),
            ] {
                jobs.push((format!("queue=\"{}\",state=\"{st}\"", d.queue), n as f64));
            }
            ages.push((format!("queue=\"{}\"", d.queue), d.oldest_age_secs));
        }
        gauge(
            &mut out,
            "corebank_queue_jobs",
            "Jobs in each queue by state: waiting (due, not taken), scheduled (due later, e.g. retry backoff), running (taken, not acknowledged), dead (given up by apalis).",
            &jobs,
        );
        gauge(
            &mut out,
            "corebank_queue_oldest_waiting_age_seconds",
            "Age of the oldest waiting job of each queue; 0 when none waits.",
            &ages,
        );
    }
    if let Some((counts, oldest)) = pending {
        let samples: Vec<(String, f64)> = TRANSFER_KINDS
            .iter()
            .map(|kind| {
                let n = counts
                    .iter()
                    .filter(|(k, _)| k == kind)
                    .map(|(_, n)| *n)
                    .sum::<i64>();
                (format!("kind=\"{kind}\""), n as f64)
            })
            .collect();
        gauge(
            &mut out,
            "corebank_transfers_pending",
            "PENDING transfers (accepted, not settled yet) by kind; reads at most 100000 rows.",
            &samples,
        );
        let age = oldest
            .map(|at| ((chrono::Utc::now() - at).num_milliseconds().max(0) as f64) / 1000.0)
            .unwrap_or(0.0);
        gauge(
            &mut out,
            "corebank_transfers_pending_oldest_age_seconds",
            "Age of the oldest PENDING transfer; 0 when none is pending.",
            &[(String::new(), age)],
        );
    }
    if let Some(n) = dead {
        gauge(
            &mut out,
            "corebank_email_dead_letters",
            "Notifications whose email is dead-lettered (FAILED); reads at most 100000 rows.",
            &[(String::new(), n as f64)],
        );
    }
    out
}
