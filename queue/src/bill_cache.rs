use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger::bills::CachedBills;
use uuid::Uuid;

/// How long fetched bills are kept; past this a link shows no bills until
/// the next successful refresh.
pub const BILLS_TTL: Duration = Duration::from_secs(24 * 3600);

/// The last good bills of every link: Redis (shared by all processes) or,
/// in embedded mode, process memory.
#[derive(Clone)]
pub enum BillCache {
    Memory(Arc<Mutex<HashMap<Uuid, CachedBills>>>),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

impl BillCache {
    pub fn memory() -> BillCache {
        BillCache::Memory(Arc::new(Mutex::new(HashMap::new())))
    }

    pub async fn redis(url: &str, prefix: &str) -> Result<BillCache, redis::RedisError> {
        let conn = redis::aio::ConnectionManager::new(redis::Client::open(url)?).await?;
        Ok(BillCache::Redis {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    pub async fn get(&self, link_id: Uuid) -> Option<CachedBills> {
        match self {
            BillCache::Memory(m) => {
                let m = m.lock().unwrap_or_else(|p| p.into_inner());
                m.get(&link_id)
                    .filter(|c| {
                        (chrono::Utc::now() - c.fetched_at)
                            .to_std()
                            .unwrap_or_default()
                            < BILLS_TTL
                    })
                    .cloned()
            }
            BillCache::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let raw: Option<String> = redis::cmd("GET")
                    .arg(format!("{prefix}:bills:{link_id}"))
                    .query_async(&mut c)
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "bill cache unavailable"))
                    .ok()
                    .flatten();
                raw.and_then(|r| serde_json::from_str(&r).ok())
            }
        }
    }

    pub async fn put(&self, link_id: Uuid, bills: &CachedBills) {
        match self {
            BillCache::Memory(m) => {
                m.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(link_id, bills.clone());
            }
            BillCache::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let Ok(json) = serde_json::to_string(bills) else {
                    return;
                };
                let res: Result<(), _> = redis::cmd("SET")
                    .arg(format!("{prefix}:bills:{link_id}"))
                    .arg(json)
                    .arg("EX")
                    .arg(BILLS_TTL.as_secs())
                    .query_async(&mut c)
                    .await;
                if let Err(e) = res {
                    tracing::warn!(error = %e, "bill cache write failed");
                }
            }
        }
    }
}
