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
