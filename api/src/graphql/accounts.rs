//! Accounts: the Account type, opening, closing, listing.

use async_graphql::{Context, Enum, ID, InputObject, Object};
use entity::account;

use super::access::{Access, access};
use super::scalars::{DateTime, Decimal};
use super::transfers::{Transfer, TransferStatus};
use super::users::User;
use super::{Conn, Gql, connection, parse_id, state, viewer};
use ledger::page::PageRequest;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AccountKind {
    Checking,
    Savings,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Checking => "CHECKING",
            AccountKind::Savings => "SAVINGS",
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AccountStatus {
    Active,
    Frozen,
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "ACTIVE",
            AccountStatus::Frozen => "FROZEN",
            AccountStatus::Closed => "CLOSED",
        }
    }
    fn from_str(s: &str) -> AccountStatus {
        match s {
            "FROZEN" => AccountStatus::Frozen,
            "CLOSED" => AccountStatus::Closed,
            _ => AccountStatus::Active,
        }
    }
}

pub struct Account(pub account::Model);

#[Object(directive = access::apply("OWNER_OR_ADMIN".into()))]
impl Account {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// 12 digits, the last a Luhn check digit.
    async fn number(&self) -> &str {
        &self.0.number
    }
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    async fn kind(&self) -> AccountKind {
        if self.0.kind == "SAVINGS" {
            AccountKind::Savings
        } else {
            AccountKind::Checking
        }
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    async fn status(&self) -> AccountStatus {
        AccountStatus::from_str(&self.0.status)
    }
    /// Booked balance: settled movements only.
    async fn balance(&self) -> Decimal {
        Decimal::format(self.0.balance_minor, &self.0.currency)
    }
    /// Balance minus pending outgoing holds.
    async fn available_balance(&self) -> Decimal {
        Decimal::format(ledger::accounts::available_minor(&self.0), &self.0.currency)
    }
    async fn owner(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let owner = self
            .0
            .owner_id
            .ok_or_else(|| super::errors::to_gql(ledger::LedgerError::NotFound("user")))?;
        ctx.data_unchecked::<super::loaders::Users>()
            .load_one(owner)
            .await?
            .map(User)
            .ok_or_else(|| super::errors::to_gql(ledger::LedgerError::NotFound("user")))
    }
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
    /// Transfers into and out of this account, newest first.
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + 1")]
    async fn transfers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<TransferStatus>,
    ) -> async_graphql::Result<Conn<Transfer>> {
        let filter = ledger::transfers::TransferFilter {
            status: status.map(|s| s.as_str().into()),
            kind: None,
        };
        super::transfers::list(ctx, Some(vec![self.0.id]), filter, first, after).await
    }
}

#[derive(InputObject)]
pub struct OpenAccountInput {
    kind: AccountKind,
    /// ISO 4217 code such as "USD".
    currency: String,
    name: Option<String>,
}

#[derive(Default)]
pub struct AccountQueries;

#[Object]
impl AccountQueries {
    /// One of the viewer's accounts (admins: any). NOT_FOUND otherwise.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn account(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Account> {
        let v = viewer(ctx)?;
        let id = parse_id(&id, "account")?;
        Ok(Account(
            ledger::accounts::get_for_viewer(&state(ctx).db, &v, id)
                .await
                .gql()?,
        ))
    }

    /// The viewer's accounts, newest first.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()), complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + 1")]
    async fn accounts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Account>> {
        let v = viewer(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let rows = ledger::accounts::list(&state(ctx).db, Some(v.user_id), None, page)
            .await
            .gql()?;
        Ok(connection(rows, page.after.is_some(), Account))
    }
}

#[derive(Default)]
pub struct AccountMutations;

#[Object]
impl AccountMutations {
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn open_account(
        &self,
        ctx: &Context<'_>,
        input: OpenAccountInput,
    ) -> async_graphql::Result<Account> {
        let v = viewer(ctx)?;
        let a = ledger::accounts::open(
            &state(ctx).db,
            &v,
            input.kind.as_str(),
            &input.currency,
            input.name.as_deref(),
        )
        .await
        .gql()?;
        Ok(Account(a))
    }

    /// Only with a zero balance and no pending transfer.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn close_account(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Account> {
        let v = viewer(ctx)?;
        let id = parse_id(&id, "account")?;
        Ok(Account(
            ledger::accounts::close(&state(ctx).db, &v, id)
                .await
                .gql()?,
        ))
    }
}
