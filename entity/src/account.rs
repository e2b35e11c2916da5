use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// 12 Luhn-checked digits for customer accounts; `SYSTEM-<CCY>` for the
    /// per-currency system accounts, which can never be typed as a destination.
    #[sea_orm(unique)]
    pub number: String,
    /// NULL for system accounts.
    pub owner_id: Option<Uuid>,
    pub is_system: bool,
    pub name: Option<String>,
    /// `CHECKING`, `SAVINGS` or `SYSTEM`.
    pub kind: String,
    pub currency: String,
    /// `ACTIVE`, `FROZEN` or `CLOSED`.
    pub status: String,
    /// Booked balance in minor units: settled movements only.
    pub balance_minor: i64,
    /// Sum of pending outgoing holds in minor units.
    pub held_minor: i64,
    /// Bumped on every change of balance or hold, so clients can order events.
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
