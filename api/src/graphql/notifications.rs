//! The in-app inbox and saved payees.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use entity::{contact, notification};
use ledger::page::PageRequest;

use super::access::{Access, access};
use super::scalars::DateTime;
use super::{Conn, Gql, connection, parse_id, state, viewer};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum EmailStatus {
    NotSent,
    Queued,
    Sent,
    Failed,
}

pub struct Notification(pub notification::Model);

#[Object(directive = access::apply("OWNER_OR_ADMIN".into()))]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    async fn subject(&self) -> &str {
        &self.0.subject
    }
    async fn body(&self) -> &str {
        &self.0.body
    }
    async fn email_status(&self) -> EmailStatus {
        match self.0.email_status.as_str() {
            "QUEUED" | "SENDING" => EmailStatus::Queued,
            "SENT" => EmailStatus::Sent,
            "FAILED" => EmailStatus::Failed,
            _ => EmailStatus::NotSent,
        }
    }
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

#[derive(SimpleObject)]
#[graphql(directive = access::apply("OWNER_OR_ADMIN".into()))]
pub struct Contact {
    id: ID,
    name: String,
    account_number: String,
    created_at: DateTime,
}

impl From<contact::Model> for Contact {
    fn from(c: contact::Model) -> Self {
        Contact {
            id: ID(c.id.to_string()),
            name: c.name,
            account_number: c.account_number,
            created_at: DateTime(c.created_at),
        }
    }
}

#[derive(InputObject)]
pub struct AddContactInput {
    name: String,
    account_number: String,
}

#[derive(Default)]
pub struct NotificationQueries;

#[Object]
impl NotificationQueries {
    /// The viewer's notifications, newest first.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()), complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + 1")]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Notification>> {
        let v = viewer(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let rows = ledger::notify::list(&state(ctx).db, v.user_id, page)
            .await
            .gql()?;
        Ok(connection(rows, page.after.is_some(), Notification))
    }

    /// The viewer's saved payees.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn contacts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Contact>> {
        let v = viewer(ctx)?;
        Ok(ledger::contacts::list(&state(ctx).db, &v)
            .await
            .gql()?
            .into_iter()
            .map(Contact::from)
            .collect())
    }
}

#[derive(Default)]
pub struct ContactMutations;

#[Object]
impl ContactMutations {
    /// Saves a payee; the account number must exist (confirmation of payee).
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn add_contact(
        &self,
        ctx: &Context<'_>,
        input: AddContactInput,
    ) -> async_graphql::Result<Contact> {
        let v = viewer(ctx)?;
        Ok(
            ledger::contacts::add(&state(ctx).db, &v, &input.name, &input.account_number)
                .await
                .gql()?
                .into(),
        )
    }

    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn remove_contact(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let v = viewer(ctx)?;
        let id = parse_id(&id, "contact")?;
        ledger::contacts::remove(&state(ctx).db, &v, id).await.gql()
    }
}
