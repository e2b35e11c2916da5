//! Accounts: opening, closing, looking up with ownership enforced, and the
//! per-currency system accounts that deposits and withdrawals post against.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QuerySelect, Set, sea_query::OnConflict,
};
use uuid::Uuid;

use entity::{account, transfer};

use crate::account_number::AccountNumber;
use crate::db::{begin_write, is_unique_violation, now};
use crate::money::Currency;
use crate::page::{Page, PageRequest};
use crate::{LedgerError, LedgerResult, Viewer};

pub const ACTIVE: &str = "ACTIVE";
pub const FROZEN: &str = "FROZEN";
pub const CLOSED: &str = "CLOSED";

pub fn available_minor(a: &account::Model) -> i64 {
    a.balance_minor - a.held_minor
}

pub fn system_account_number(currency: Currency) -> String {
    format!("SYSTEM-{}", currency.code())
}

/// Refuses money into or out of an account that is not active.
pub fn ensure_active(a: &account::Model) -> LedgerResult<()> {
    match a.status.as_str() {
        FROZEN => Err(LedgerError::AccountFrozen),
        CLOSED => Err(LedgerError::AccountClosed),
        _ => Ok(()),
    }
}

pub fn parse_kind(kind: &str) -> LedgerResult<&'static str> {
    match kind {
        "CHECKING" => Ok("CHECKING"),
        "SAVINGS" => Ok("SAVINGS"),
        _ => Err(LedgerError::bad_input(
            "account kind must be CHECKING or SAVINGS",
        )),
    }
}

/// Returns the id of the currency's system account, creating it on first use.
pub async fn ensure_system_account(
    db: &impl ConnectionTrait,
    currency: Currency,
) -> LedgerResult<Uuid> {
    let number = system_account_number(currency);
    if let Some(a) = account::Entity::find()
        .filter(account::Column::Number.eq(&number))
        .one(db)
        .await?
    {
        return Ok(a.id);
    }
    let t = now();
    account::Entity::insert(account::ActiveModel {
        id: Set(Uuid::now_v7()),
        number: Set(number.clone()),
        owner_id: Set(None),
        is_system: Set(true),
        name: Set(Some(format!("{} system account", currency.code()))),
        kind: Set("SYSTEM".into()),
        currency: Set(currency.code().into()),
        status: Set(ACTIVE.into()),
        balance_minor: Set(0),
        held_minor: Set(0),
        version: Set(0),
        created_at: Set(t),
        updated_at: Set(t),
    })
    .on_conflict(
        OnConflict::column(account::Column::Number)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    account::Entity::find()
        .filter(account::Column::Number.eq(&number))
        .one(db)
        .await?
        .map(|a| a.id)
        .ok_or_else(|| LedgerError::internal("system account missing after insert"))
}

pub async fn open(
    db: &DatabaseConnection,
    viewer: &Viewer,
    kind: &str,
    currency: &str,
    name: Option<&str>,
) -> LedgerResult<account::Model> {
    let kind = parse_kind(kind)?;
    let currency = Currency::parse(currency)?;
    let name = match name.map(str::trim) {
        Some(n) if n.chars().count() > 100 => {
            return Err(LedgerError::bad_input(
                "account name is at most 100 characters",
            ));
        }
        Some("") | None => None,
        Some(n) => Some(n.to_owned()),
    };
    ensure_system_account(db, currency).await?;
    // A collision among 10^11 numbers is rare; retry rather than check first.
    for _ in 0..5 {
        let number = AccountNumber::generate(&mut rand::rng());
        let t = now();
        let res = account::ActiveModel {
            id: Set(Uuid::now_v7()),
            number: Set(number.as_str().to_owned()),
            owner_id: Set(Some(viewer.user_id)),
            is_system: Set(false),
            name: Set(name.clone()),
            kind: Set(kind.into()),
            currency: Set(currency.code().into()),
            status: Set(ACTIVE.into()),
            balance_minor: Set(0),
            held_minor: Set(0),
            version: Set(0),
            created_at: Set(t),
            updated_at: Set(t),
        }
        .insert(db)
        .await;
        match res {
            Ok(a) => return Ok(a),
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(LedgerError::internal(
        "could not allocate an account number",
    ))
}

/// The account if the viewer may see it: its owner, or any admin.
pub async fn get_for_viewer(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: Uuid,
) -> LedgerResult<account::Model> {
    let a = account::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(LedgerError::NotFound("account"))?;
    if viewer.is_admin() || a.owner_id == Some(viewer.user_id) {
        Ok(a)
    } else {
        Err(LedgerError::NotFound("account"))
    }
}

/// A customer account by its number (system accounts are not addressable).
pub async fn find_by_number(
    db: &impl ConnectionTrait,
    number: &AccountNumber,
) -> LedgerResult<account::Model> {
    account::Entity::find()
        .filter(account::Column::Number.eq(number.as_str()))
        .filter(account::Column::IsSystem.eq(false))
        .one(db)
        .await?
        .ok_or(LedgerError::NotFound("account"))
}

pub async fn list(
    db: &impl ConnectionTrait,
    owner_id: Option<Uuid>,
    status: Option<&str>,
    page: PageRequest,
) -> LedgerResult<Page<account::Model>> {
    let mut q = account::Entity::find().filter(account::Column::IsSystem.eq(false));
    if let Some(o) = owner_id {
        q = q.filter(account::Column::OwnerId.eq(o));
    }
    if let Some(s) = status {
        q = q.filter(account::Column::Status.eq(s));
    }
    crate::page::fetch(db, q, account::Column::CreatedAt, account::Column::Id, page).await
}

pub async fn by_ids(db: &impl ConnectionTrait, ids: &[Uuid]) -> LedgerResult<Vec<account::Model>> {
    Ok(account::Entity::find()
        .filter(account::Column::Id.is_in(ids.to_vec()))
        .all(db)
        .await?)
}

/// Closes an account that holds no money and has nothing in flight.
pub async fn close(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: Uuid,
) -> LedgerResult<account::Model> {
    let txn = begin_write(db).await?;
    let a = get_for_viewer(&txn, viewer, id).await?;
    let a = account::Entity::find_by_id(a.id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(LedgerError::NotFound("account"))?;
    if a.status == CLOSED {
        return Ok(a);
    }
    if a.balance_minor != 0 || a.held_minor != 0 {
        return Err(LedgerError::bad_input(
            "only an account with a zero balance can be closed",
        ));
    }
    let pending = transfer::Entity::find()
        .filter(transfer::Column::Status.eq(crate::transfers::PENDING))
        .filter(
            sea_orm::Condition::any()
                .add(transfer::Column::SourceAccountId.eq(a.id))
                .add(transfer::Column::DestinationAccountId.eq(a.id)),
        )
        .count(&txn)
        .await?;
    if pending > 0 {
        return Err(LedgerError::bad_input(
            "the account has a pending transfer; try again once it settles",
        ));
    }
    let mut am: account::ActiveModel = a.into();
    am.status = Set(CLOSED.into());
    am.updated_at = Set(now());
    let a = am.update(&txn).await?;
    txn.commit().await?;
    Ok(a)
}

/// Full names of the given users, for showing account holders.
pub async fn holder_names(
    db: &impl ConnectionTrait,
    user_ids: &[Uuid],
) -> LedgerResult<std::collections::HashMap<Uuid, String>> {
    let rows: Vec<(Uuid, String)> = entity::user::Entity::find()
        .filter(entity::user::Column::Id.is_in(user_ids.to_vec()))
        .select_only()
        .column(entity::user::Column::Id)
        .column(entity::user::Column::FullName)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}
