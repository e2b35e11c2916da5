//! Rate limits shared by every `api` process: fixed-window counters in
//! Redis (or in memory in embedded mode, where there is one process).
//!
//! Limits are checked inside resolvers, not only at the HTTP layer, because
//! one HTTP request can carry many operations through aliases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Failed logins allowed per account in `LOGIN_WINDOW`, from anywhere.
pub const LOGIN_FAILURES_PER_ACCOUNT: u64 = 5;
/// Failed logins allowed per client address in `LOGIN_WINDOW`.
pub const LOGIN_FAILURES_PER_CLIENT: u64 = 30;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Aliased fields allowed in one document (1,000 aliased `login`s are an attack).
pub const MAX_ALIASES: usize = 30;
/// Operations allowed in one document.
pub const MAX_OPERATIONS: usize = 10;

#[derive(Clone)]
pub enum Limiter {
    Memory(Arc<Mutex<HashMap<String, (Instant, u64)>>>),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

impl Limiter {
    pub fn memory() -> Limiter {
        Limiter::Memory(Arc::new(Mutex::new(HashMap::new())))
    }

    pub async fn redis(url: &str, prefix: &str) -> Result<Limiter, redis::RedisError> {
        let conn = redis::aio::ConnectionManager::new(redis::Client::open(url)?).await?;
        Ok(Limiter::Redis {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// Adds one hit to `key` in the current window; returns the new count.
    /// If the store is unreachable the request is allowed (fail open): a
    /// Redis outage must not lock every customer out of their money.
    pub async fn hit(&self, key: &str, window: Duration) -> u64 {
        match self {
            Limiter::Memory(map) => {
                let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                if m.len() > 100_000 {
                    m.retain(|_, (start, _)| now.duration_since(*start) < window);
                }
                let e = m.entry(key.to_owned()).or_insert((now, 0));
                if now.duration_since(e.0) >= window {
                    *e = (now, 0);
                }
                e.1 += 1;
                e.1
            }
            Limiter::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let k = format!("{prefix}:rl:{key}");
                // SET NX starts the window with its expiry; INCR keeps the TTL.
                let res: Result<(Option<String>, u64), _> = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&k)
                    .arg(0)
                    .arg("EX")
                    .arg(window.as_secs().max(1))
                    .arg("NX")
                    .cmd("INCR")
                    .arg(&k)
                    .query_async(&mut c)
                    .await;
                match res {
                    Ok((_, n)) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "rate limiter unavailable; allowing");
                        0
                    }
                }
            }
        }
    }

    /// Current count of `key` without adding to it.
    pub async fn count(&self, key: &str, window: Duration) -> u64 {
        match self {
            Limiter::Memory(map) => {
                let m = map.lock().unwrap_or_else(|p| p.into_inner());
                match m.get(key) {
                    Some((start, n)) if start.elapsed() < window => *n,
                    _ => 0,
                }
            }
            Limiter::Redis { conn, prefix } => {
                let mut c = conn.clone();
                redis::cmd("GET")
                    .arg(format!("{prefix}:rl:{key}"))
                    .query_async::<Option<u64>>(&mut c)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            }
        }
    }

    pub async fn reset(&self, key: &str) {
        match self {
            Limiter::Memory(map) => {
                map.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            }
            Limiter::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let _ = redis::cmd("DEL")
                    .arg(format!("{prefix}:rl:{key}"))
                    .query_async::<()>(&mut c)
                    .await;
            }
        }
    }
}

/// Rate-limit keys never contain an email address in clear.
pub fn account_key(email: &str) -> String {
    format!(
        "login:acct:{}",
        hex::encode(&Sha256::digest(email.trim().to_lowercase().as_bytes())[..16])
    )
}

/// Counts aliases and operations in a parsed document.
pub fn document_shape(doc: &async_graphql::parser::types::ExecutableDocument) -> (usize, usize) {
    use async_graphql::parser::types::{Selection, SelectionSet};
    fn aliases(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|s| match &s.node {
                Selection::Field(f) => {
                    usize::from(f.node.alias.is_some()) + aliases(&f.node.selection_set.node)
                }
                Selection::InlineFragment(i) => aliases(&i.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let ops: Vec<_> = doc.operations.iter().collect();
    let mut total = ops
        .iter()
        .map(|(_, op)| aliases(&op.node.selection_set.node))
        .sum::<usize>();
    total += doc
        .fragments
        .values()
        .map(|f| aliases(&f.node.selection_set.node))
        .sum::<usize>();
    (total, ops.len())
}

/// Whether the document asks for `__schema` or `__type` anywhere.
pub fn uses_introspection(doc: &async_graphql::parser::types::ExecutableDocument) -> bool {
    use async_graphql::parser::types::{Selection, SelectionSet};
    fn walk(set: &SelectionSet) -> bool {
        set.items.iter().any(|s| match &s.node {
            Selection::Field(f) => {
                let n = f.node.name.node.as_str();
                n == "__schema" || n == "__type" || walk(&f.node.selection_set.node)
            }
            Selection::InlineFragment(i) => walk(&i.node.selection_set.node),
            Selection::FragmentSpread(_) => false,
        })
    }
    doc.operations
        .iter()
        .any(|(_, op)| walk(&op.node.selection_set.node))
        || doc
            .fragments
            .values()
            .any(|f| walk(&f.node.selection_set.node))
}
