//! Events published after a commit made them true, for live subscriptions.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A change of an account's balance or available balance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BalanceChanged {
    pub account_id: Uuid,
    pub owner_id: Option<Uuid>,
    pub currency: String,
    pub balance_minor: i64,
    pub available_minor: i64,
    pub transfer_id: Option<Uuid>,
    pub version: i64,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A transfer changed status (created PENDING, then COMPLETED or FAILED).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransferChanged {
    pub transfer_id: Uuid,
    /// The status this event announces (the row may have moved on since).
    #[serde(default)]
    pub status: String,
    /// The transfer's kind (DEPOSIT, TRANSFER, …), for metrics by kind.
    #[serde(default)]
    pub kind: String,
    /// The row as this event's commit left it, so that live subscribers
    /// answer without reading it again (absent from older producers).
    #[serde(default)]
    pub row: Option<Box<entity::transfer::Model>>,
    /// Owners of either side, so a subscriber can filter without a query.
    pub party_user_ids: Vec<Uuid>,
    pub account_ids: Vec<Uuid>,
}

/// Everything the ledger emits after a commit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum LedgerEvent {
    Balance(BalanceChanged),
    Transfer(TransferChanged),
    Notification {
        user_id: Uuid,
        notification_id: Uuid,
    },
    /// A bill payment settled: report it to the provider.
    BillPaymentSettled {
        payment_id: Uuid,
        user_id: Uuid,
    },
    /// The user's bills changed (refreshed, paid, reported).
    BillsChanged {
        user_id: Uuid,
    },
}
