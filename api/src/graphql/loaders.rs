//! Batch loaders so that a page of transfers costs a constant number of
//! statements whatever its size (no N+1 on parties and owners).

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use entity::{account, user};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use uuid::Uuid;

pub struct AccountLoader(pub DatabaseConnection);
pub struct UserLoader(pub DatabaseConnection);

impl Loader<Uuid> for AccountLoader {
    type Value = account::Model;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, account::Model>, Self::Error> {
        let rows = account::Entity::find()
            .filter(account::Column::Id.is_in(keys.to_vec()))
            .all(&self.0)
            .await
            .map_err(|e| super::errors::to_gql(e.into()))?;
        Ok(rows.into_iter().map(|a| (a.id, a)).collect())
    }
}

impl Loader<Uuid> for UserLoader {
    type Value = user::Model;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, user::Model>, Self::Error> {
        let rows = user::Entity::find()
            .filter(user::Column::Id.is_in(keys.to_vec()))
            .all(&self.0)
            .await
            .map_err(|e| super::errors::to_gql(e.into()))?;
        Ok(rows.into_iter().map(|u| (u.id, u)).collect())
    }
}

pub type Accounts = async_graphql::dataloader::DataLoader<AccountLoader>;
pub type Users = async_graphql::dataloader::DataLoader<UserLoader>;

pub fn for_request(db: &DatabaseConnection) -> (Accounts, Users) {
    (
        async_graphql::dataloader::DataLoader::new(AccountLoader(db.clone()), tokio::spawn),
        async_graphql::dataloader::DataLoader::new(UserLoader(db.clone()), tokio::spawn),
    )
}
