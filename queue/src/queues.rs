use std::time::Duration;

use apalis::prelude::TaskSink;
use apalis_redis::{ConnectionManager, RedisStorage};
use apalis_sqlite::{SqlitePool, SqliteStorage};
use ledger::jobs::{RefreshBills, ReportBillPayment, SendEmail, SettleTransfer};

pub const SETTLEMENT_QUEUE: &str = "settlement";
pub const EMAIL_QUEUE: &str = "email";
pub const BILLS_QUEUE: &str = "bills";
pub const REPORTS_QUEUE: &str = "bill-reports";

/// Heartbeat of every worker; orphaned jobs of a dead worker are taken back
/// after `HEARTBEAT * MISSED_HEARTBEATS` instead of apalis' default 300 s.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
pub const MISSED_HEARTBEATS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}

/// The producer side of the job queues, shared by request handlers.
#[derive(Clone)]
pub enum Queues {
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
    Embedded {
        pool: SqlitePool,
        prefix: String,
    },
}

/// A worker name unique to this process, so a restarted process never
/// collides with its predecessor's registration (apalis refuses, silently).
pub fn worker_name(role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!(
        "{role}-{host}-{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

impl Queues {
    pub async fn redis(url: &str, prefix: &str) -> Result<Queues, QueueError> {
        let conn = apalis_redis::connect(url)
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        Ok(Queues::Redis {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// Embedded queue inside the SQLite database. Creates apalis' tables
    /// once, before any worker starts (concurrent setup fails).
    pub async fn embedded(pool: SqlitePool, prefix: &str) -> Result<Queues, QueueError> {
        SqliteStorage::setup(&pool)
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        Ok(Queues::Embedded {
            pool,
            prefix: prefix.to_owned(),
        })
    }

    pub fn queue_name(&self, queue: &str) -> String {
        let prefix = match self {
            Queues::Redis { prefix, .. } | Queues::Embedded { prefix, .. } => prefix,
        };
        format!("{prefix}:{queue}")
    }

    pub fn redis_config(&self, queue: &str) -> apalis_redis::Config {
        apalis_redis::Config::default()
            .queue(self.queue_name(queue))
            .heartbeat_interval(HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS)
    }

    pub fn sqlite_config(&self, queue: &str) -> apalis_sqlite::Config {
        apalis_sqlite::Config::default()
            .queue(self.queue_name(queue))
            .heartbeat_interval(HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS)
    }

    pub async fn push_settlement(&self, job: SettleTransfer) -> Result<(), QueueError> {
        self.push(SETTLEMENT_QUEUE, job).await
    }

    pub async fn push_email(&self, job: SendEmail) -> Result<(), QueueError> {
        self.push(EMAIL_QUEUE, job).await
    }

    pub async fn push_refresh(&self, job: RefreshBills) -> Result<(), QueueError> {
        self.push(BILLS_QUEUE, job).await
    }

    pub async fn push_report(&self, job: ReportBillPayment) -> Result<(), QueueError> {
        self.push(REPORTS_QUEUE, job).await
    }

    async fn push<T>(&self, queue: &str, job: T) -> Result<(), QueueError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + Unpin + 'static,
    {
        let err = |e: &dyn std::fmt::Display| QueueError::Unavailable(e.to_string());
        match self {
            Queues::Redis { conn, .. } => {
                let mut storage =
                    RedisStorage::<T>::new(conn.clone()).with_config(self.redis_config(queue));
                storage.push(job).await.map_err(|e| err(&e))
            }
            Queues::Embedded { pool, .. } => {
                let mut storage =
                    SqliteStorage::<T>::new(pool).with_config(self.sqlite_config(queue));
                storage.push(job).await.map_err(|e| err(&e))
            }
        }
    }

    /// Readiness: can the queue be reached right now?
    pub async fn ping(&self) -> bool {
        match self {
            Queues::Redis { conn, .. } => {
                let mut c = conn.clone();
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut c);
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), ping).await,
                    Ok(Ok(_))
                )
            }
            Queues::Embedded { pool, .. } => pool.acquire().await.is_ok(),
        }
    }
}

/// Every queue, in the order metrics list them.
pub const ALL_QUEUES: [&str; 4] = [SETTLEMENT_QUEUE, EMAIL_QUEUE, BILLS_QUEUE, REPORTS_QUEUE];

/// What one queue holds right now, for `/metrics`.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueDepth {
    /// The short name (`settlement`, `email`, …), without the prefix.
    pub queue: &'static str,
    /// Due and not taken by a worker yet.
    pub waiting: u64,
    /// Due later (apalis' retry backoff, or a push whose time has not come).
    pub scheduled: u64,
    /// Taken by a worker and not acknowledged yet.
    pub running: u64,
    /// Given up by apalis (attempts exhausted or aborted).
    pub dead: u64,
    /// How long the oldest waiting job has waited; 0 when none waits.
    pub oldest_age_secs: f64,
}

/// One round trip per queue over apalis-redis 1.0's keys (see its `lua/`):
/// `{q}:active` (list of due ids), `{q}:scheduled` (zset scored by run-at
/// seconds; every push lands here first), `{q}:workers` (zset of worker
/// names) with one `{q}:inflight:{worker}` set each, and `{q}:dead` (set).
/// The stock `stats.lua` reads the done/dead sets with ZCARD, which fails
/// on these plain sets, hence this script.
const REDIS_DEPTH_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local active = redis.call('LLEN', KEYS[1])
local head = redis.call('LINDEX', KEYS[1], 0)
local due = redis.call('ZCOUNT', KEYS[2], '-inf', now)
local later = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local running = 0
for _, w in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    running = running + redis.call('SCARD', KEYS[4] .. ':' .. w)
end
local dead = 0
if redis.call('TYPE', KEYS[5])['ok'] == 'set' then
    dead = redis.call('SCARD', KEYS[5])
end
return {active, head or '', due, later, first[2] or '', running, dead}
"#;

/// Milliseconds since the epoch in a ULID (apalis' task id): its first ten
/// Crockford base-32 characters.
fn ulid_millis(id: &str) -> Option<u64> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    if id.len() != 26 {
        return None;
    }
    let mut ms: u64 = 0;
    for c in id.bytes().take(10) {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())?;
        ms = (ms << 5) | v as u64;
    }
    Some(ms)
}

impl Queues {
    /// Depth and age of every queue, read at scrape time. Costs one Redis
    /// round trip (or one indexed SQLite query) per queue, whatever the
    /// backlog: counts come from LLEN/ZCOUNT/SCARD, not from listing jobs.
    pub async fn depths(&self) -> Result<Vec<QueueDepth>, QueueError> {
        let now = chrono::Utc::now();
        let now_secs = now.timestamp();
        let now_ms = now.timestamp_millis() as f64;
        let mut out = Vec::with_capacity(ALL_QUEUES.len());
        for queue in ALL_QUEUES {
            let depth = match self {
                Queues::Redis { conn, .. } => {
                    let config = self.redis_config(queue);
                    let mut c = conn.clone();
                    let (active, head, due, later, first, running, dead): (
                        u64,
                        String,
                        u64,
                        u64,
                        String,
                        u64,
                        u64,
                    ) = redis::Script::new(REDIS_DEPTH_SCRIPT)
                        .key(config.active_jobs_list())
                        .key(config.scheduled_jobs_set())
                        .key(config.workers_set())
                        .key(config.inflight_jobs_set())
                        .key(config.dead_jobs_set())
                        .arg(now_secs)
                        .invoke_async(&mut c)
                        .await
                        .map_err(|e| QueueError::Unavailable(e.to_string()))?;
                    // The active head is the oldest id handed to workers; a
                    // due scheduled job has waited since its run-at time.
                    let head_age = ulid_millis(&head)
                        .map(|ms| ((now_ms - ms as f64) / 1000.0).max(0.0))
                        .filter(|_| active > 0)
                        .unwrap_or(0.0);
                    let due_age = first
                        .parse::<f64>()
                        .ok()
                        .filter(|_| due > 0)
                        .map(|at| (now_secs as f64 - at).max(0.0))
                        .unwrap_or(0.0);
                    QueueDepth {
                        queue,
                        waiting: active + due,
                        scheduled: later,
                        running,
                        dead,
                        oldest_age_secs: head_age.max(due_age),
                    }
                }
                Queues::Embedded { pool, .. } => {
                    // apalis-sqlite keeps every job in `Jobs`, `job_type` being
                    // the queue name; Done rows (the bulk) are not read.
                    let row: (i64, i64, i64, i64, Option<i64>) = sqlx::query_as(
                        "SELECT \
                           COALESCE(SUM(CASE WHEN run_at <= ?2 AND ((status = 'Pending' AND lock_by IS NULL) \
                             OR (status = 'Failed' AND attempts < max_attempts)) THEN 1 ELSE 0 END), 0), \
                           COALESCE(SUM(CASE WHEN run_at > ?2 AND ((status = 'Pending' AND lock_by IS NULL) \
                             OR (status = 'Failed' AND attempts < max_attempts)) THEN 1 ELSE 0 END), 0), \
                           COALESCE(SUM(CASE WHEN status IN ('Queued', 'Running') \
                             OR (status = 'Pending' AND lock_by IS NOT NULL) THEN 1 ELSE 0 END), 0), \
                           COALESCE(SUM(CASE WHEN status = 'Killed' \
                             OR (status = 'Failed' AND attempts >= max_attempts) THEN 1 ELSE 0 END), 0), \
                           MIN(CASE WHEN run_at <= ?2 AND ((status = 'Pending' AND lock_by IS NULL) \
                             OR (status = 'Failed' AND attempts < max_attempts)) THEN run_at END) \
                         FROM Jobs WHERE job_type = ?1 \
                           AND status IN ('Pending', 'Queued', 'Running', 'Failed', 'Killed')",
                    )
                    .bind(self.queue_name(queue))
                    .bind(now_secs)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| QueueError::Unavailable(e.to_string()))?;
                    let (waiting, scheduled, running, dead, oldest) = row;
                    QueueDepth {
                        queue,
                        waiting: waiting.max(0) as u64,
                        scheduled: scheduled.max(0) as u64,
                        running: running.max(0) as u64,
                        dead: dead.max(0) as u64,
                        oldest_age_secs: oldest
                            .map(|at| (now_secs - at).max(0) as f64)
                            .unwrap_or(0.0),
                    }
                }
            };
            out.push(depth);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulid_timestamp_is_decoded() {
        // The ULID specification encodes 1469918176385 ms as 01ARYZ6S41.
        assert_eq!(
            ulid_millis("01ARYZ6S41TSV4RRFFQ69G5FAV"),
            Some(1_469_918_176_385)
        );
        assert_eq!(
            ulid_millis("01aryz6s41tsv4rrffq69g5fav"),
            Some(1_469_918_176_385)
        );
        assert_eq!(ulid_millis("not-a-ulid"), None);
    }
}
