use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use ledger::events::LedgerEvent;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

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
    routes: Arc<Routes>,
}

/// What a live subscription listens to: one account, or one user's events.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Topic {
    Account(Uuid),
    User(Uuid),
}

/// The topics an event is for. A subscription sees an event once if its
/// one topic is among them.
fn topics(event: &LedgerEvent) -> Vec<Topic> {
    match event {
        LedgerEvent::Balance(b) => vec![Topic::Account(b.account_id)],
        LedgerEvent::Transfer(t) => t
            .account_ids
            .iter()
            .map(|a| Topic::Account(*a))
            .chain(t.party_user_ids.iter().map(|u| Topic::User(*u)))
            .collect(),
        LedgerEvent::Notification { user_id, .. }
        | LedgerEvent::BillPaymentSettled { user_id, .. }
        | LedgerEvent::BillsChanged { user_id } => vec![Topic::User(*user_id)],
    }
}

/// Events a subscription may have waiting before it is deemed lagging and
/// loses events (it then re-queries).
const SUBSCRIPTION_BACKLOG: usize = 256;

/// Per-topic routing of this process's events.
///
/// Each event goes only to the subscriptions of its topics: with N sockets
/// open, an event costs a hash lookup and a send or two, not N wake-ups and
/// N filter checks.
#[derive(Default)]
struct Routes {
    table: Mutex<RouteTable>,
    started: std::sync::OnceLock<()>,
}

#[derive(Default)]
struct RouteTable {
    next_id: u64,
    by_topic: HashMap<Topic, Vec<(u64, mpsc::Sender<LedgerEvent>)>>,
}

impl Routes {
    fn table(&self) -> std::sync::MutexGuard<'_, RouteTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver(&self, event: LedgerEvent) {
        let mut table = self.table();
        for topic in topics(&event) {
            let Some(subscribers) = table.by_topic.get_mut(&topic) else {
                continue;
            };
            subscribers.retain(|(_, tx)| match tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(?topic, "subscriber lagged; event skipped");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
            if subscribers.is_empty() {
                table.by_topic.remove(&topic);
            }
        }
    }

    fn remove(&self, topic: Topic, id: u64) {
        let mut table = self.table();
        if let Some(subscribers) = table.by_topic.get_mut(&topic) {
            subscribers.retain(|(i, _)| *i != id);
            if subscribers.is_empty() {
                table.by_topic.remove(&topic);
            }
        }
    }
}

/// A subscription's events; leaves the routing table when dropped.
pub struct TopicStream {
    rx: mpsc::Receiver<LedgerEvent>,
    routes: Arc<Routes>,
    topic: Topic,
    id: u64,
}

impl futures::Stream for TopicStream {
    type Item = LedgerEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<LedgerEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for TopicStream {
    fn drop(&mut self) {
        self.routes.remove(self.topic, self.id);
    }
}

impl EventBus {
    pub fn in_process() -> EventBus {
        EventBus {
            local: broadcast::channel(FANOUT_CAPACITY).0,
            redis: None,
            routes: Arc::default(),
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
            routes: Arc::default(),
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

    /// The events of one topic, for one live subscription.
    pub fn subscribe_topic(&self, topic: Topic) -> TopicStream {
        self.routes.started.get_or_init(|| {
            // One router task per process reads the broadcast and routes.
            let mut rx = self.local.subscribe();
            let routes = self.routes.clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(event) => routes.deliver(event),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "event router lagged; events skipped");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        });
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BACKLOG);
        let id = {
            let mut table = self.routes.table();
            table.next_id += 1;
            let id = table.next_id;
            table.by_topic.entry(topic).or_default().push((id, tx));
            id
        };
        TopicStream {
            rx,
            routes: self.routes.clone(),
            topic,
            id,
        }
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
