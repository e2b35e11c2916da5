use sea_orm::entity::prelude::*;

/// One payment of one bill; also the outbox of the report to the provider.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bill_payments")]
pub struct Model {
    /// Sent to the provider as `paymentId`, so a repeated report is idempotent there.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub provider_id: Uuid,
    pub link_id: Uuid,
    pub reference: String,
    pub transfer_id: Uuid,
    pub amount_minor: i64,
    pub currency: String,
    /// Set once the provider accepted the report: the bill is PAID.
    pub reported_at: Option<DateTimeUtc>,
    pub report_attempts: i32,
    /// When the next report attempt is due (after settlement).
    pub next_report_at: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
