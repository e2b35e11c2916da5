use sea_orm::entity::prelude::*;

/// Serializable so that a transfer event can carry the row as committed
/// (live subscribers then need no read of their own).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "transfers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `TRANSFER`, `DEPOSIT`, `WITHDRAWAL`, `BILL_PAYMENT` or `REVERSAL`.
    pub kind: String,
    /// `PENDING`, `COMPLETED` or `FAILED`.
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
    /// NULL for deposits (the money comes from the currency's system account).
    pub source_account_id: Option<Uuid>,
    /// NULL for withdrawals (the money goes to the currency's system account).
    pub destination_account_id: Option<Uuid>,
    /// The user who asked for it; scopes the idempotency key.
    pub initiated_by: Uuid,
    pub idempotency_key: Option<String>,
    /// Hash of the request's inputs: same key with other inputs is a conflict.
    pub request_fingerprint: Option<String>,
    pub memo: Option<String>,
    pub failure_reason: Option<String>,
    /// Amount currently held on the source account for this transfer.
    pub hold_minor: i64,
    /// The transfer this one reverses, for `REVERSAL`.
    pub reversal_of: Option<Uuid>,
    /// Last time a settlement job was handed to the queue; the recovery sweep
    /// uses it to re-enqueue transfers whose job was lost.
    pub enqueued_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub settled_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
