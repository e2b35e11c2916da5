//! Operations that run the bank; each writes its audit entry in the same
//! transaction as the change it records.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait,
    QueryFilter, QuerySelect, Set,
};
use uuid::Uuid;

use entity::{account, audit_entry, user};
use sea_orm::sea_query::ExprTrait;

use crate::accounts::{ACTIVE, CLOSED, FROZEN};
use crate::db::{begin_write, now};
use crate::page::{Page, PageRequest};
use crate::{LedgerError, LedgerResult, Role, Viewer};

pub async fn audit(
    db: &impl ConnectionTrait,
    actor: &Viewer,
    action: &str,
    target_id: Option<Uuid>,
    reason: Option<&str>,
) -> LedgerResult<()> {
    audit_entry::ActiveModel {
        id: Set(Uuid::now_v7()),
        actor_id: Set(actor.user_id),
        action: Set(action.into()),
        target_id: Set(target_id),
        reason: Set(reason.map(str::to_owned)),
        created_at: Set(now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

fn require_reason(reason: &str) -> LedgerResult<&str> {
    let r = reason.trim();
    if r.is_empty() || r.chars().count() > 500 {
        return Err(LedgerError::bad_input("reason must be 1 to 500 characters"));
    }
    Ok(r)
}

async fn set_status(
    db: &DatabaseConnection,
    admin: &Viewer,
    id: Uuid,
    to: &str,
    action: &str,
    reason: Option<&str>,
) -> LedgerResult<(account::Model, Vec<crate::events::LedgerEvent>)> {
    admin.require_admin()?;
    let txn = begin_write(db).await?;
    let a = account::Entity::find_by_id(id)
        .filter(account::Column::IsSystem.eq(false))
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(LedgerError::NotFound("account"))?;
    if a.status == CLOSED {
        return Err(LedgerError::AccountClosed);
    }
    let mut am: account::ActiveModel = a.into();
    am.status = Set(to.into());
    am.updated_at = Set(now());
    let a = am.update(&txn).await?;
    audit(&txn, admin, action, Some(id), reason).await?;
    let mut events = Vec::new();
    if let Some(owner) = a.owner_id {
        let (kind, subject, body) = if to == FROZEN {
            (
                "ACCOUNT_FROZEN",
                format!("Your account {} was frozen", a.number),
                format!(
                    "Your account {} was frozen: it can neither send nor receive money until it is unfrozen.\nReason: {}\nContact support if you did not expect this.\n",
                    a.number,
                    reason.unwrap_or("-")
                ),
            )
        } else {
            (
                "ACCOUNT_UNFROZEN",
                format!("Your account {} is active again", a.number),
                format!(
                    "Your account {} was unfrozen and can send and receive money again.\n",
                    a.number
                ),
            )
        };
        let key = format!(
            "account:{}:{}:{}",
            a.id,
            kind,
            a.updated_at.timestamp_micros()
        );
        if let Some(n) = crate::notify::record(&txn, owner, kind, &subject, &body, &key).await? {
            events.push(crate::events::LedgerEvent::Notification {
                user_id: owner,
                notification_id: n,
            });
        }
    }
    txn.commit().await?;
    Ok((a, events))
}

/// Freezes an account and notifies its owner; returns events to publish.
pub async fn freeze(
    db: &DatabaseConnection,
    admin: &Viewer,
    id: Uuid,
    reason: &str,
) -> LedgerResult<(account::Model, Vec<crate::events::LedgerEvent>)> {
    let reason = require_reason(reason)?;
    set_status(db, admin, id, FROZEN, "FREEZE_ACCOUNT", Some(reason)).await
}

pub async fn unfreeze(
    db: &DatabaseConnection,
    admin: &Viewer,
    id: Uuid,
) -> LedgerResult<(account::Model, Vec<crate::events::LedgerEvent>)> {
    set_status(db, admin, id, ACTIVE, "UNFREEZE_ACCOUNT", None).await
}

pub async fn change_kind(
    db: &DatabaseConnection,
    admin: &Viewer,
    id: Uuid,
    kind: &str,
) -> LedgerResult<account::Model> {
    admin.require_admin()?;
    let kind = crate::accounts::parse_kind(kind)?;
    let txn = begin_write(db).await?;
    let a = account::Entity::find_by_id(id)
        .filter(account::Column::IsSystem.eq(false))
        .one(&txn)
        .await?
        .ok_or(LedgerError::NotFound("account"))?;
    let mut am: account::ActiveModel = a.into();
    am.kind = Set(kind.into());
    am.updated_at = Set(now());
    let a = am.update(&txn).await?;
    audit(&txn, admin, "CHANGE_ACCOUNT_KIND", Some(id), Some(kind)).await?;
    txn.commit().await?;
    Ok(a)
}

pub async fn set_role(
    db: &DatabaseConnection,
    admin: &Viewer,
    user_id: Uuid,
    role: Role,
) -> LedgerResult<user::Model> {
    admin.require_admin()?;
    let txn = begin_write(db).await?;
    let u = user::Entity::find_by_id(user_id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(LedgerError::NotFound("user"))?;
    if u.role == Role::Admin.as_str() && role == Role::Customer {
        // Lock every admin row so two admins demoting each other at once
        // are serialised and the second sees the first's change.
        let admins = user::Entity::find()
            .filter(user::Column::Role.eq(Role::Admin.as_str()))
            .lock_exclusive()
            .all(&txn)
            .await?
            .len();
        if admins <= 1 {
            return Err(LedgerError::bad_input(
                "the last administrator cannot be demoted",
            ));
        }
    }
    let version = u.token_version + 1;
    let mut am: user::ActiveModel = u.into();
    am.role = Set(role.as_str().into());
    // Tokens carry the role: revoke the old ones so the change applies at once.
    am.token_version = Set(version);
    let u = am.update(&txn).await?;
    audit(
        &txn,
        admin,
        "SET_USER_ROLE",
        Some(user_id),
        Some(role.as_str()),
    )
    .await?;
    txn.commit().await?;
    Ok(u)
}

pub async fn users(
    db: &impl ConnectionTrait,
    search: Option<&str>,
    page: PageRequest,
) -> LedgerResult<Page<user::Model>> {
    let mut q = user::Entity::find();
    if let Some(s) = search.map(str::trim).filter(|s| !s.is_empty()) {
        // Escape LIKE wildcards so a search for "a_b" means exactly that.
        let escaped = s
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = sea_orm::sea_query::LikeExpr::new(format!("%{escaped}%")).escape('\\');
        q = q.filter(
            Condition::any()
                .add(user::Column::Email.like(pattern.clone()))
                .add(
                    sea_orm::sea_query::Expr::expr(sea_orm::sea_query::Func::lower(
                        sea_orm::sea_query::Expr::col(user::Column::FullName),
                    ))
                    .like(pattern),
                ),
        );
    }
    crate::page::fetch(db, q, user::Column::CreatedAt, user::Column::Id, page).await
}

pub async fn audit_log(
    db: &impl ConnectionTrait,
    page: PageRequest,
) -> LedgerResult<Page<audit_entry::Model>> {
    let q = audit_entry::Entity::find();
    crate::page::fetch(
        db,
        q,
        audit_entry::Column::CreatedAt,
        audit_entry::Column::Id,
        page,
    )
    .await
}
