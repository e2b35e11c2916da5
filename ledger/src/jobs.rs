//! Job payloads: ids only, so a job replayed late or twice reads fresh state.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Settle one pending transfer (post it or fail it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SettleTransfer {
    pub transfer_id: Uuid,
}

/// Deliver one notification by email.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendEmail {
    pub notification_id: Uuid,
}

/// Fetch one linked utility account's bills into the cache.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefreshBills {
    pub link_id: Uuid,
}

/// Tell the provider about a settled bill payment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportBillPayment {
    pub payment_id: Uuid,
}
