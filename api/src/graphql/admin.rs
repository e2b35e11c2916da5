//! Operations for administrators. Every resolver starts with `admin(ctx)?`.

use async_graphql::{Context, ID, Object};
use entity::audit_entry;
use ledger::page::PageRequest;
use ledger::transfers::TransferFilter;

use super::access::{Access, access};
use super::accounts::{Account, AccountKind, AccountStatus};
use super::notifications::Notification;
use super::scalars::{DateTime, Decimal};
use super::transfers::{Transfer, TransferKind, TransferStatus, TrialBalanceLine};
use super::users::{Role, User};
use super::{Conn, Gql, admin, connection, parse_id, state};

pub struct AuditEntry(audit_entry::Model);

#[Object(directive = access::apply("ADMIN".into()))]
impl AuditEntry {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn actor(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        ctx.data_unchecked::<super::loaders::Users>()
            .load_one(self.0.actor_id)
            .await?
            .map(User)
            .ok_or_else(|| super::errors::to_gql(ledger::LedgerError::NotFound("user")))
    }
    async fn action(&self) -> &str {
        &self.0.action
    }
    async fn target_id(&self) -> Option<ID> {
        self.0.target_id.map(|t| ID(t.to_string()))
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

#[derive(Default)]
pub struct AdminQueries;

#[Object]
impl AdminQueries {
    /// ADMIN. Users, searched by email or name.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()), complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + 1")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<User>> {
        admin(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let rows = ledger::admin::users(&state(ctx).db, search.as_deref(), page)
            .await
            .gql()?;
        Ok(connection(rows, page.after.is_some(), User))
    }

    /// ADMIN. Every customer account.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()), complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + 1")]
    async fn all_accounts(
        &self,
        ctx: &Context<'_>,
        status: Option<AccountStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Account>> {
        admin(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let rows = ledger::accounts::list(&state(ctx).db, None, status.map(|s| s.as_str()), page)
            .await
            .gql()?;
        Ok(connection(rows, page.after.is_some(), Account))
    }

    /// ADMIN. Every transfer.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()), complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + 1")]
    async fn all_transfers(
        &self,
        ctx: &Context<'_>,
        status: Option<TransferStatus>,
        kind: Option<TransferKind>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Transfer>> {
        admin(ctx)?;
        let filter = TransferFilter {
            status: status.map(|s| s.as_str().into()),
            kind: kind.map(|k| k.as_str().into()),
        };
        super::transfers::list(ctx, None, filter, first, after).await
    }

    /// ADMIN. Who did what, newest first.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()), complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + 1")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<AuditEntry>> {
        admin(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let rows = ledger::admin::audit_log(&state(ctx).db, page).await.gql()?;
        Ok(connection(rows, page.after.is_some(), AuditEntry))
    }

    /// ADMIN. The dead-letter list: notifications whose email could not be delivered.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()), complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + 1")]
    async fn failed_notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Notification>> {
        admin(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let rows = ledger::notify::failed(&state(ctx).db, page).await.gql()?;
        Ok(connection(rows, page.after.is_some(), Notification))
    }

    /// ADMIN. One line per currency in use; `net` is always zero.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()))]
    async fn trial_balance(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<TrialBalanceLine>> {
        admin(ctx)?;
        let lines = ledger::settlement::trial_balance(&state(ctx).db)
            .await
            .gql()?;
        Ok(lines
            .into_iter()
            .map(|l| TrialBalanceLine {
                customer_total: Decimal::format(l.customer_total_minor, &l.currency),
                system_total: Decimal::format(l.system_total_minor, &l.currency),
                net: Decimal::format(l.customer_total_minor + l.system_total_minor, &l.currency),
                currency: l.currency,
            })
            .collect())
    }
}

#[derive(Default)]
pub struct AdminMutations;

#[Object]
impl AdminMutations {
    /// ADMIN. A frozen account can neither send nor receive.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()))]
    async fn freeze_account(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> async_graphql::Result<Account> {
        let v = admin(ctx)?;
        let id = parse_id(&id, "account")?;
        let s = state(ctx);
        let (account, events) = ledger::admin::freeze(&s.db, &v, id, &reason).await.gql()?;
        queue::after_commit(&s.queues, &s.events, events).await;
        Ok(Account(account))
    }

    /// ADMIN.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()))]
    async fn unfreeze_account(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Account> {
        let v = admin(ctx)?;
        let id = parse_id(&id, "account")?;
        let s = state(ctx);
        let (account, events) = ledger::admin::unfreeze(&s.db, &v, id).await.gql()?;
        queue::after_commit(&s.queues, &s.events, events).await;
        Ok(Account(account))
    }

    /// ADMIN.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()))]
    async fn change_account_kind(
        &self,
        ctx: &Context<'_>,
        id: ID,
        kind: AccountKind,
    ) -> async_graphql::Result<Account> {
        let v = admin(ctx)?;
        let id = parse_id(&id, "account")?;
        Ok(Account(
            ledger::admin::change_kind(&state(ctx).db, &v, id, kind.as_str())
                .await
                .gql()?,
        ))
    }

    /// ADMIN. A REVERSAL transfer moving the money back; once per transfer.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()))]
    async fn reverse_transfer(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> async_graphql::Result<Transfer> {
        let v = admin(ctx)?;
        let id = parse_id(&id, "transfer")?;
        let s = state(ctx);
        let initiated = super::transfers::timed_hold(
            super::transfers::TransferKind::Reversal,
            ledger::transfers::reverse(&s.db, &v, id, &reason),
        )
        .await
        .gql()?;
        Ok(super::transfers::hand_over(s, initiated).await)
    }

    /// ADMIN. Queues a dead-lettered notification's email again.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()))]
    async fn retry_notification(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Notification> {
        let v = admin(ctx)?;
        let id = parse_id(&id, "notification")?;
        let s = state(ctx);
        let n = ledger::notify::retry(&s.db, &v, id).await.gql()?;
        let event = ledger::events::LedgerEvent::Notification {
            user_id: n.user_id,
            notification_id: n.id,
        };
        queue::after_commit(&s.queues, &s.events, vec![event]).await;
        Ok(Notification(n))
    }

    /// ADMIN. The last administrator cannot be demoted.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()))]
    async fn set_user_role(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        role: Role,
    ) -> async_graphql::Result<User> {
        let v = admin(ctx)?;
        let id = parse_id(&user_id, "user")?;
        let role = if role == Role::Admin {
            ledger::Role::Admin
        } else {
            ledger::Role::Customer
        };
        Ok(User(
            ledger::admin::set_role(&state(ctx).db, &v, id, role)
                .await
                .gql()?,
        ))
    }
}
