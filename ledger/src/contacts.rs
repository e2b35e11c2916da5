//! Saved payees: a name for a checked account number.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

use entity::contact;

use crate::account_number::AccountNumber;
use crate::db::now;
use crate::{LedgerError, LedgerResult, Viewer};

pub async fn add(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    name: &str,
    number: &str,
) -> LedgerResult<contact::Model> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(LedgerError::bad_input(
            "contact name must be 1 to 100 characters",
        ));
    }
    let number = AccountNumber::parse(number)?;
    // Confirmation of payee: the number must belong to an account.
    crate::accounts::find_by_number(db, &number).await?;
    Ok(contact::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_id: Set(viewer.user_id),
        name: Set(name.into()),
        account_number: Set(number.as_str().into()),
        created_at: Set(now()),
    }
    .insert(db)
    .await?)
}

pub async fn list(db: &impl ConnectionTrait, viewer: &Viewer) -> LedgerResult<Vec<contact::Model>> {
    Ok(contact::Entity::find()
        .filter(contact::Column::OwnerId.eq(viewer.user_id))
        .order_by_desc(contact::Column::CreatedAt)
        .all(db)
        .await?)
}

pub async fn remove(db: &impl ConnectionTrait, viewer: &Viewer, id: Uuid) -> LedgerResult<bool> {
    let res = contact::Entity::delete_many()
        .filter(contact::Column::Id.eq(id))
        .filter(contact::Column::OwnerId.eq(viewer.user_id))
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Err(LedgerError::NotFound("contact"));
    }
    Ok(true)
}
