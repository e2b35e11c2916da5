use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub subject: String,
    pub body: String,
    /// `NOT_SENT`, `QUEUED`, `SENT` or `FAILED`.
    pub email_status: String,
    /// Source event (e.g. `transfer:<id>:settled`); unique per user so a
    /// settlement that runs twice cannot notify twice.
    pub dedup_key: String,
    pub email_attempts: i32,
    /// When the next delivery attempt is due (QUEUED), or the lease of the
    /// attempt in flight; the email sweep hands due rows to the queue.
    pub next_attempt_at: Option<DateTimeUtc>,
    /// Why the last attempt failed, for the dead-letter list.
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
