//! In-app notifications and the state of their email delivery.
//!
//! A notification is one row per event per user, written in the same
//! transaction as the event that caused it; the `(user_id, dedup_key)`
//! unique index makes recording idempotent, so a settlement that runs twice
//! cannot notify twice. The row is also the email outbox: with email
//! delivery on it starts `QUEUED`, and its retry schedule lives in the row
//! (`email_attempts`, `next_attempt_at`) rather than in the job queue, so a
//! lost job or a crashed worker only delays an email, never loses it.

use std::sync::OnceLock;

use chrono::Duration;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
    sea_query::{Expr, OnConflict},
};
use uuid::Uuid;

use entity::{notification, user};

use crate::db::now;
use crate::page::{Page, PageRequest};
use crate::{LedgerError, LedgerResult, Viewer};

pub const NOT_SENT: &str = "NOT_SENT";
pub const QUEUED: &str = "QUEUED";
pub const SENT: &str = "SENT";
/// Claimed by one email job; shown to clients as QUEUED.
pub const SENDING: &str = "SENDING";
pub const FAILED: &str = "FAILED";

/// How long a handed-over attempt may run before the sweep hands it over again.
const ATTEMPT_LEASE_SECS: i64 = 60;

/// When and how often email delivery is retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubles each time up to `cap_secs`.
    pub base_secs: i64,
    pub cap_secs: i64,
    pub attempts_max: i32,
}

impl Default for RetryPolicy {
    /// 30 s doubling to a 4 h cap, 14 attempts: about 24 h in all, long
    /// enough to ride out a mail provider's bad day, short enough that a
    /// customer is not surprised by a day-old email.
    fn default() -> Self {
        RetryPolicy {
            base_secs: 30,
            cap_secs: 4 * 3600,
            attempts_max: 14,
        }
    }
}

impl RetryPolicy {
    /// Delay after the given number of failed attempts, with ±20 % jitter
    /// so that a recovering mail server is not hit by every retry at once.
    pub fn backoff_secs(&self, attempts: i32, jitter: f64) -> i64 {
        let exp = (attempts.max(1) - 1).min(30) as u32;
        let raw = self
            .base_secs
            .saturating_mul(1i64 << exp.min(20))
            .min(self.cap_secs);
        let factor = 1.0 + (jitter.clamp(0.0, 1.0) - 0.5) * 0.4;
        ((raw as f64) * factor).round().max(1.0) as i64
    }
}

static EMAIL_DELIVERY: OnceLock<bool> = OnceLock::new();

/// Set once at start: whether notifications are also delivered by email.
pub fn enable_email_delivery(enabled: bool) {
    let _ = EMAIL_DELIVERY.set(enabled);
}

pub fn email_delivery_enabled() -> bool {
    EMAIL_DELIVERY.get().copied().unwrap_or(false)
}

/// Records a notification; returns its id if it was new.
pub async fn record(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    kind: &str,
    subject: &str,
    body: &str,
    dedup_key: &str,
) -> LedgerResult<Option<Uuid>> {
    let draft = Draft {
        user_id,
        kind: kind.into(),
        subject: subject.into(),
        body: body.into(),
        dedup_key: dedup_key.into(),
    };
    Ok(record_many(db, vec![draft]).await?.pop().flatten())
}

/// A notification not yet recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub user_id: Uuid,
    pub kind: String,
    pub subject: String,
    pub body: String,
    /// Unique per user: recording the same key twice records it once.
    pub dedup_key: String,
}

/// Records many notifications with one statement (settlement records two
/// per transfer, and a batch settles hundreds). Returns, per draft, the new
/// notification's id, or None when its dedup key was already recorded.
pub async fn record_many(
    db: &impl ConnectionTrait,
    drafts: Vec<Draft>,
) -> LedgerResult<Vec<Option<Uuid>>> {
    if drafts.is_empty() {
        return Ok(vec![]);
    }
    let t = now();
    let email = email_delivery_enabled();
    let ids: Vec<Uuid> = drafts.iter().map(|_| Uuid::now_v7()).collect();
    let rows = drafts
        .iter()
        .zip(&ids)
        .map(|(d, id)| notification::ActiveModel {
            id: Set(*id),
            user_id: Set(d.user_id),
            kind: Set(d.kind.clone()),
            subject: Set(d.subject.clone()),
            body: Set(d.body.clone()),
            email_status: Set(if email { QUEUED } else { NOT_SENT }.into()),
            dedup_key: Set(d.dedup_key.clone()),
            email_attempts: Set(0),
            // The producer pushes the job right after commit; this lease keeps
            // the sweep from pushing a duplicate unless that push was lost.
            next_attempt_at: Set(email.then(|| t + Duration::seconds(ATTEMPT_LEASE_SECS / 4))),
            last_error: Set(None),
            created_at: Set(t),
        });
    let inserted = notification::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([notification::Column::UserId, notification::Column::DedupKey])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    // The ids are fresh, so when some rows lost to an existing dedup key the
    // ones that exist now are exactly the ones this statement inserted.
    let kept: std::collections::HashSet<Uuid> = if inserted as usize == ids.len() {
        ids.iter().copied().collect()
    } else {
        notification::Entity::find()
            .select_only()
            .column(notification::Column::Id)
            .filter(notification::Column::Id.is_in(ids.clone()))
            .into_tuple::<Uuid>()
            .all(db)
            .await?
            .into_iter()
            .collect()
    };
    Ok(drafts
        .iter()
        .zip(ids)
        .map(|(d, id)| {
            if !kept.contains(&id) {
                tracing::info!(notification.kind = %d.kind, "notification already recorded");
                return None;
            }
            if !email {
                tracing::info!(notification.id = %id, notification.kind = %d.kind, user.id = %d.user_id, "notification recorded (email delivery off)");
            }
            Some(id)
        })
        .collect())
}

/// Claims a queued notification for one email job and returns what the job
/// needs (the notification and its recipient address). Only one of several
/// jobs for the same notification — a redelivered job, a sweep's duplicate —
/// wins the claim, so an email is sent once unless a worker dies between
/// the mail server's OK and recording it.
pub async fn claim_for_send(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> LedgerResult<Option<(notification::Model, String)>> {
    let claimed = notification::Entity::update_many()
        .col_expr(notification::Column::EmailStatus, Expr::value(SENDING))
        .col_expr(
            notification::Column::NextAttemptAt,
            Expr::value(now() + Duration::seconds(ATTEMPT_LEASE_SECS)),
        )
        .filter(notification::Column::Id.eq(id))
        .filter(notification::Column::EmailStatus.eq(QUEUED))
        .exec(db)
        .await?;
    if claimed.rows_affected == 0 {
        return Ok(None);
    }
    let Some(n) = notification::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    let Some(u) = user::Entity::find_by_id(n.user_id).one(db).await? else {
        return Ok(None);
    };
    Ok(Some((n, u.email)))
}

pub async fn mark_sent(db: &impl ConnectionTrait, id: Uuid) -> LedgerResult<()> {
    notification::Entity::update_many()
        .col_expr(notification::Column::EmailStatus, Expr::value(SENT))
        .col_expr(
            notification::Column::EmailAttempts,
            sea_orm::sea_query::ExprTrait::add(Expr::col(notification::Column::EmailAttempts), 1),
        )
        .col_expr(
            notification::Column::NextAttemptAt,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .col_expr(
            notification::Column::LastError,
            Expr::value(Option::<String>::None),
        )
        .filter(notification::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Records a failed attempt: schedules the next one, or moves the
/// notification to the dead-letter state when the error is permanent or the
/// attempts are used up. Returns the new status.
pub async fn mark_attempt_failed(
    db: &DatabaseConnection,
    id: Uuid,
    error: &str,
    permanent: bool,
    policy: RetryPolicy,
) -> LedgerResult<&'static str> {
    let txn = db.begin().await?;
    let Some(n) = notification::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&txn)
        .await?
    else {
        return Ok(FAILED);
    };
    let attempts = n.email_attempts + 1;
    let dead = permanent || attempts >= policy.attempts_max;
    let status = if dead { FAILED } else { QUEUED };
    let mut am: notification::ActiveModel = n.into();
    am.email_attempts = Set(attempts);
    am.email_status = Set(status.into());
    am.last_error = Set(Some(error.chars().take(500).collect()));
    am.next_attempt_at = Set((!dead)
        .then(|| now() + Duration::seconds(policy.backoff_secs(attempts, rand::random::<f64>()))));
    am.update(&txn).await?;
    txn.commit().await?;
    Ok(status)
}

/// Queued notifications whose next attempt is due, and claims whose job
/// died (lease over); leases them so that concurrent sweeps do not hand the
/// same one over twice.
pub async fn claim_due_emails(db: &DatabaseConnection, limit: u64) -> LedgerResult<Vec<Uuid>> {
    let txn = crate::db::begin_write(db).await?;
    let t = now();
    let ids: Vec<Uuid> = notification::Entity::find()
        .filter(notification::Column::EmailStatus.is_in([QUEUED, SENDING]))
        .filter(notification::Column::NextAttemptAt.lte(t))
        .select_only()
        .column(notification::Column::Id)
        .order_by_asc(notification::Column::NextAttemptAt)
        .limit(limit)
        .into_tuple::<Uuid>()
        .all(&txn)
        .await?;
    if !ids.is_empty() {
        notification::Entity::update_many()
            .col_expr(
                notification::Column::NextAttemptAt,
                Expr::value(t + Duration::seconds(ATTEMPT_LEASE_SECS)),
            )
            .col_expr(notification::Column::EmailStatus, Expr::value(QUEUED))
            .filter(notification::Column::Id.is_in(ids.clone()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(ids)
}

/// Puts a dead-lettered notification back in the queue (admin action).
pub async fn retry(
    db: &DatabaseConnection,
    admin: &Viewer,
    id: Uuid,
) -> LedgerResult<notification::Model> {
    admin.require_admin()?;
    if !email_delivery_enabled() {
        return Err(LedgerError::bad_input(
            "email delivery is off (SMTP_URL unset)",
        ));
    }
    let txn = crate::db::begin_write(db).await?;
    let n = notification::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(LedgerError::NotFound("notification"))?;
    if n.email_status != FAILED {
        return Err(LedgerError::bad_input(
            "only a FAILED notification can be retried",
        ));
    }
    let mut am: notification::ActiveModel = n.into();
    am.email_status = Set(QUEUED.into());
    am.email_attempts = Set(0);
    am.next_attempt_at = Set(Some(now() + Duration::seconds(ATTEMPT_LEASE_SECS / 4)));
    let n = am.update(&txn).await?;
    crate::admin::audit(&txn, admin, "RETRY_NOTIFICATION", Some(id), None).await?;
    txn.commit().await?;
    Ok(n)
}

/// The user's notifications, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    page: PageRequest,
) -> LedgerResult<Page<notification::Model>> {
    list_where(db, notification::Column::UserId.eq(user_id), page).await
}

/// The dead-letter list: notifications whose email could not be delivered.
pub async fn failed(
    db: &impl ConnectionTrait,
    page: PageRequest,
) -> LedgerResult<Page<notification::Model>> {
    list_where(db, notification::Column::EmailStatus.eq(FAILED), page).await
}

async fn list_where(
    db: &impl ConnectionTrait,
    filter: sea_orm::sea_query::SimpleExpr,
    page: PageRequest,
) -> LedgerResult<Page<notification::Model>> {
    let q = notification::Entity::find().filter(filter);
    crate::page::fetch(
        db,
        q,
        notification::Column::CreatedAt,
        notification::Column::Id,
        page,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_secs(1, 0.5), 30);
        assert_eq!(p.backoff_secs(2, 0.5), 60);
        assert_eq!(p.backoff_secs(5, 0.5), 480);
        assert_eq!(p.backoff_secs(13, 0.5), 4 * 3600);
        assert_eq!(p.backoff_secs(40, 0.5), 4 * 3600);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = RetryPolicy::default();
        for j in [0.0, 0.25, 0.75, 1.0] {
            let d = p.backoff_secs(3, j);
            assert!((96..=144).contains(&d), "{d}");
        }
    }

    #[test]
    fn the_default_schedule_spans_about_a_day() {
        let p = RetryPolicy::default();
        let total: i64 = (1..p.attempts_max).map(|a| p.backoff_secs(a, 0.5)).sum();
        assert!((20 * 3600..=28 * 3600).contains(&total), "{total}");
    }
}
