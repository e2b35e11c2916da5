//! In-app notifications: one row per event per user, written in the same
//! transaction as the event that caused it.
//!
//! The `(user_id, dedup_key)` unique index makes recording idempotent, so a
//! settlement that runs twice cannot notify twice. Email delivery reads these
//! rows later; nothing here waits on a mail server.

use sea_orm::{ConnectionTrait, EntityTrait, Set, sea_query::OnConflict};
use uuid::Uuid;

use entity::notification;

use crate::LedgerResult;
use crate::db::now;

pub const EMAIL_NOT_SENT: &str = "NOT_SENT";

/// Records a notification; returns its id if it was new.
pub async fn record(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    kind: &str,
    subject: &str,
    body: &str,
    dedup_key: &str,
) -> LedgerResult<Option<Uuid>> {
    let id = Uuid::now_v7();
    let res = notification::Entity::insert(notification::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        kind: Set(kind.into()),
        subject: Set(subject.into()),
        body: Set(body.into()),
        email_status: Set(EMAIL_NOT_SENT.into()),
        dedup_key: Set(dedup_key.into()),
        email_attempts: Set(0),
        created_at: Set(now()),
    })
    .on_conflict(
        OnConflict::columns([notification::Column::UserId, notification::Column::DedupKey])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok((res > 0).then_some(id))
}

/// The user's notifications, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    page: crate::page::PageRequest,
) -> LedgerResult<crate::page::Page<notification::Model>> {
    use sea_orm::{ColumnTrait, Condition, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
    let mut q = notification::Entity::find().filter(notification::Column::UserId.eq(user_id));
    let total_count = q.clone().count(db).await?;
    if let Some(c) = page.after {
        q = q.filter(
            Condition::any().add(notification::Column::CreatedAt.lt(c.created_at)).add(
                Condition::all().add(notification::Column::CreatedAt.eq(c.created_at)).add(notification::Column::Id.lt(c.id)),
            ),
        );
    }
    let mut items = q
        .order_by_desc(notification::Column::CreatedAt)
        .order_by_desc(notification::Column::Id)
        .limit(page.first + 1)
        .all(db)
        .await?;
    let has_next_page = items.len() as u64 > page.first;
    items.truncate(page.first as usize);
    Ok(crate::page::Page { items, has_next_page, total_count })
}
