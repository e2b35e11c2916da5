//! The transport between processes: apalis job queues and the live-event bus.
//!
//! Everything apalis-specific lives here so that the workarounds its 1.0
//! release needs (a poll strategy that really polls, unique worker names,
//! short heartbeats for orphan recovery, a one-time SQLite setup) are in one
//! place. Two backends behind one interface: Redis (`REDIS_URL` set; queues
//! via apalis-redis, events via Redis pub/sub so every `api` process sees
//! every worker's settlements) and embedded (apalis-sqlite in the main
//! database file; events over an in-process broadcast).
//!
//! Depends on `ledger` for job payloads and event types; knows nothing of
//! HTTP or GraphQL.

mod bill_cache;
mod events;
pub mod metrics;
mod poll;
mod queues;

pub use bill_cache::BillCache;
pub use events::{EventBus, Topic};
pub use poll::Tick;
pub use queues::{
    ALL_QUEUES, BILLS_QUEUE, EMAIL_QUEUE, QueueDepth, QueueError, Queues, REPORTS_QUEUE,
    SETTLEMENT_QUEUE, worker_name,
};

/// What every producer does once its transaction has committed: hand new
/// notifications to the email queue (when email delivery is on) and publish
/// the events for live views. A failed push only delays an email: the row
/// is the outbox and the email sweep finds it.
pub async fn after_commit(
    queues: &Queues,
    bus: &EventBus,
    events: Vec<ledger::events::LedgerEvent>,
) {
    for ev in &events {
        if let ledger::events::LedgerEvent::BillPaymentSettled { payment_id, .. } = ev
            && let Err(e) = queues
                .push_report(ledger::jobs::ReportBillPayment {
                    payment_id: *payment_id,
                })
                .await
        {
            tracing::warn!(bill_payment.id = %payment_id, error = %e, "report push failed; the sweep will retry");
        }
    }
    if ledger::notify::email_delivery_enabled() {
        for ev in &events {
            if let ledger::events::LedgerEvent::Notification {
                notification_id, ..
            } = ev
                && let Err(e) = queues
                    .push_email(ledger::jobs::SendEmail {
                        notification_id: *notification_id,
                    })
                    .await
            {
                tracing::warn!(notification.id = %notification_id, error = %e, "email push failed; the email sweep will retry");
            }
        }
    }
    bus.publish(events).await;
}
