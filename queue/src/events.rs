use std::time::Duration;

use futures::StreamExt;
use ledger::events::LedgerEvent;
use tokio::sync::broadcast;

/// Capacity of the in-process fan-out; a subscriber that lags further than
/// this loses events and is told so (it then re-queries).
const FANOUT_CAPACITY: usize = 4096;

/// Publishes ledger events and fans them out to this process's subscribers.
///
/// With Redis there is one pub/sub subscription per process, whatever the
/// number of GraphQL subscriptions; they all read from one broadcast channel.
#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<LedgerEvent>,
    redis: Option<(redis::aio::ConnectionManager, String)>,
}

impl EventBus {
    pub fn in_process() -> EventBus {
        EventBus {
            local: broadcast::channel(FANOUT_CAPACITY).0,
            redis: None,
        }
    }

    /// Connects publisher and the process's single subscriber to Redis.
    pub async fn redis(url: &str, prefix: &str) -> Result<EventBus, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new(client.clone()).await?;
        let channel = format!("{prefix}:events");
        let local = broadcast::channel(FANOUT_CAPACITY).0;
        tokio::spawn(relay(client, channel.clone(), local.clone()));
        Ok(EventBus {
            local,
            redis: Some((conn, channel)),
        })
    }

    /// Publishes after commit. Events are hints for live views, not the
    /// record: a lost event is repaired by the client re-querying.
    pub async fn publish(&self, events: Vec<LedgerEvent>) {
        events.iter().for_each(count_settled);
        match &self.redis {
            Some((conn, channel)) => {
                // One round trip for all of them: a settlement batch
                // announces hundreds of events at once. Order is kept.
                let mut pipe = redis::pipe();
                for event in &events {
                    if let Ok(payload) = serde_json::to_string(event) {
                        pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                    }
                }
                let mut c = conn.clone();
                if let Err(e) = pipe.query_async::<()>(&mut c).await {
                    tracing::warn!(error = %e, events = events.len(), "event publish failed");
                }
            }
            None => {
                for event in events {
                    let _ = self.local.send(event);
                }
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LedgerEvent> {
        self.local.subscribe()
    }
}

/// Counts transfers that left PENDING. Every producer publishes its events
/// here once, after its commit (the Redis relay below feeds subscribers
/// without passing through `publish`), so each settlement counts once, in
/// the process that made it.
fn count_settled(event: &LedgerEvent) {
    if let LedgerEvent::Transfer(t) = event
        && (t.status == ledger::transfers::COMPLETED || t.status == ledger::transfers::FAILED)
    {
        crate::metrics::count(
            "corebank_transfers_settled_total",
            &format!(
                "kind=\"{}\",status=\"{}\"",
                crate::metrics::label(&t.kind),
                t.status
            ),
        );
    }
}

/// Forwards the Redis channel into the local broadcast, reconnecting forever.
async fn relay(client: redis::Client, channel: String, local: broadcast::Sender<LedgerEvent>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if let Err(e) = pubsub.subscribe(&channel).await {
                    tracing::warn!(error = %e, "event subscription failed");
                } else {
                    let mut stream = pubsub.on_message();
                    while let Some(msg) = stream.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<LedgerEvent>(&payload) {
                            Ok(ev) => {
                                let _ = local.send(ev);
                            }
                            Err(e) => tracing::warn!(error = %e, "undecodable event"),
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "event bus cannot reach redis"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
