//! Money movement: deposit, withdraw, transfer, and the Transfer type.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use entity::transfer;
use ledger::jobs::SettleTransfer;
use ledger::page::PageRequest;
use ledger::transfers::{Destination, MoneyRequest, TransferFilter};
use uuid::Uuid;

use super::access::{Access, access};
use super::accounts::Account;
use super::scalars::{DateTime, Decimal};
use super::{Conn, Gql, connection, parse_id, state, viewer};
use crate::app::AppState;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TransferKind {
    Transfer,
    Deposit,
    Withdrawal,
    BillPayment,
    Reversal,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Transfer => "TRANSFER",
            TransferKind::Deposit => "DEPOSIT",
            TransferKind::Withdrawal => "WITHDRAWAL",
            TransferKind::BillPayment => "BILL_PAYMENT",
            TransferKind::Reversal => "REVERSAL",
        }
    }
    fn from_str(s: &str) -> TransferKind {
        match s {
            "DEPOSIT" => TransferKind::Deposit,
            "WITHDRAWAL" => TransferKind::Withdrawal,
            "BILL_PAYMENT" => TransferKind::BillPayment,
            "REVERSAL" => TransferKind::Reversal,
            _ => TransferKind::Transfer,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TransferStatus {
    Pending,
    Completed,
    Failed,
}

impl TransferStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Pending => "PENDING",
            TransferStatus::Completed => "COMPLETED",
            TransferStatus::Failed => "FAILED",
        }
    }
    fn from_str(s: &str) -> TransferStatus {
        match s {
            "COMPLETED" => TransferStatus::Completed,
            "FAILED" => TransferStatus::Failed,
            _ => TransferStatus::Pending,
        }
    }
}

pub struct Transfer {
    pub model: transfer::Model,
    /// Both parties of a whole page, loaded with two statements for the page.
    parties: Option<Arc<Parties>>,
}

#[derive(Default)]
pub struct Parties {
    accounts: HashMap<Uuid, entity::account::Model>,
    holder_names: HashMap<Uuid, String>,
}

impl From<transfer::Model> for Transfer {
    fn from(model: transfer::Model) -> Self {
        Transfer {
            model,
            parties: None,
        }
    }
}

/// Loads the accounts and holders of every transfer on a page at once, so a
/// page costs the same number of statements whatever its size.
async fn prefetch_parties(
    db: &sea_orm::DatabaseConnection,
    rows: &[transfer::Model],
) -> async_graphql::Result<Arc<Parties>> {
    let mut ids: Vec<Uuid> = rows
        .iter()
        .flat_map(|t| [t.source_account_id, t.destination_account_id])
        .flatten()
        .collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Arc::new(Parties::default()));
    }
    let accounts = ledger::accounts::by_ids(db, &ids).await.gql()?;
    let mut owners: Vec<Uuid> = accounts.iter().filter_map(|a| a.owner_id).collect();
    owners.sort();
    owners.dedup();
    let holder_names = ledger::accounts::holder_names(db, &owners).await.gql()?;
    Ok(Arc::new(Parties {
        accounts: accounts.into_iter().map(|a| (a.id, a)).collect(),
        holder_names,
    }))
}

/// One side of a transfer as the viewer may see it.
pub struct Party {
    account: entity::account::Model,
    holder_name: String,
    visible: bool,
}

#[Object(directive = access::apply("OWNER_OR_ADMIN".into()))]
impl Party {
    async fn account_number(&self) -> &str {
        &self.account.number
    }
    async fn holder_name(&self) -> &str {
        &self.holder_name
    }
    /// Null unless the viewer owns that account or is an admin.
    async fn account(&self) -> Option<Account> {
        self.visible.then(|| Account(self.account.clone()))
    }
}

async fn party(
    ctx: &Context<'_>,
    parties: Option<&Parties>,
    account_id: Option<Uuid>,
) -> async_graphql::Result<Option<Party>> {
    let Some(id) = account_id else {
        return Ok(None);
    };
    if let Some(p) = parties
        && let Some(account) = p.accounts.get(&id)
    {
        let holder_name = match account.owner_id {
            Some(owner) => p.holder_names.get(&owner).cloned().unwrap_or_default(),
            None => account.name.clone().unwrap_or_else(|| "corebank".into()),
        };
        let v = viewer(ctx)?;
        let visible = v.is_admin() || account.owner_id == Some(v.user_id);
        return Ok(Some(Party {
            account: account.clone(),
            holder_name,
            visible,
        }));
    }
    let Some(account) = ctx
        .data_unchecked::<super::loaders::Accounts>()
        .load_one(id)
        .await?
    else {
        return Ok(None);
    };
    let holder_name = match account.owner_id {
        Some(owner) => ctx
            .data_unchecked::<super::loaders::Users>()
            .load_one(owner)
            .await?
            .map(|u| u.full_name)
            .unwrap_or_default(),
        None => account.name.clone().unwrap_or_else(|| "corebank".into()),
    };
    let v = viewer(ctx)?;
    let visible = v.is_admin() || account.owner_id == Some(v.user_id);
    Ok(Some(Party {
        account,
        holder_name,
        visible,
    }))
}

#[Object(directive = access::apply("OWNER_OR_ADMIN".into()))]
impl Transfer {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    async fn kind(&self) -> TransferKind {
        TransferKind::from_str(&self.model.kind)
    }
    async fn status(&self) -> TransferStatus {
        TransferStatus::from_str(&self.model.status)
    }
    async fn amount(&self) -> Decimal {
        Decimal::format(self.model.amount_minor, &self.model.currency)
    }
    async fn currency(&self) -> &str {
        &self.model.currency
    }
    /// Null for DEPOSIT.
    async fn source(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Party>> {
        party(ctx, self.parties.as_deref(), self.model.source_account_id).await
    }
    /// Null for WITHDRAWAL.
    async fn destination(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Party>> {
        party(
            ctx,
            self.parties.as_deref(),
            self.model.destination_account_id,
        )
        .await
    }
    async fn memo(&self) -> Option<&str> {
        self.model.memo.as_deref()
    }
    async fn failure_reason(&self) -> Option<&str> {
        self.model.failure_reason.as_deref()
    }
    async fn idempotency_key(&self) -> Option<&str> {
        self.model.idempotency_key.as_deref()
    }
    async fn created_at(&self) -> DateTime {
        DateTime(self.model.created_at)
    }
    async fn settled_at(&self) -> Option<DateTime> {
        self.model.settled_at.map(DateTime)
    }
}

/// Lists transfers over the given accounts (None: all, for admins).
pub async fn list(
    ctx: &Context<'_>,
    account_ids: Option<Vec<Uuid>>,
    filter: TransferFilter,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<Conn<Transfer>> {
    let page = PageRequest::parse(first, after.as_deref()).gql()?;
    let db = &state(ctx).db;
    let rows = ledger::transfers::list(db, account_ids, &filter, page)
        .await
        .gql()?;
    let parties = prefetch_parties(db, &rows.items).await?;
    Ok(connection(rows, page.after.is_some(), |model| Transfer {
        model,
        parties: Some(parties.clone()),
    }))
}

#[derive(InputObject)]
pub struct DepositInput {
    account_id: ID,
    amount: Decimal,
    idempotency_key: String,
}

#[derive(InputObject)]
pub struct WithdrawInput {
    account_id: ID,
    amount: Decimal,
    idempotency_key: String,
}

#[derive(InputObject)]
pub struct TransferInput {
    from_account_id: ID,
    /// Exactly one of toAccountNumber and toContactId.
    to_account_number: Option<String>,
    to_contact_id: Option<ID>,
    amount: Decimal,
    memo: Option<String>,
    idempotency_key: String,
}

#[derive(Default)]
pub struct TransferQueries;

#[Object]
impl TransferQueries {
    /// Visible to either party's owner and to admins; NOT_FOUND otherwise.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn transfer(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Transfer> {
        let v = viewer(ctx)?;
        let id = parse_id(&id, "transfer")?;
        Ok(ledger::transfers::get_for_viewer(&state(ctx).db, &v, id)
            .await
            .gql()?
            .into())
    }

    /// The viewer's transfers in both directions, newest first.
    #[allow(clippy::too_many_arguments)]
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()), complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + 1")]
    async fn transfers(
        &self,
        ctx: &Context<'_>,
        account_id: Option<ID>,
        status: Option<TransferStatus>,
        kind: Option<TransferKind>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Transfer>> {
        let v = viewer(ctx)?;
        let db = &state(ctx).db;
        let ids = match account_id {
            Some(id) => {
                let id = parse_id(&id, "account")?;
                vec![ledger::accounts::get_for_viewer(db, &v, id).await.gql()?.id]
            }
            None => ledger::transfers::owned_account_ids(db, v.user_id)
                .await
                .gql()?,
        };
        let filter = TransferFilter {
            status: status.map(|s| s.as_str().into()),
            kind: kind.map(|k| k.as_str().into()),
        };
        list(ctx, Some(ids), filter, first, after).await
    }
}

/// Runs the synchronous money mutation (validation, then the hold and the
/// PENDING row in one transaction) and records its time by kind in
/// `corebank_hold_duration_seconds`.
pub async fn timed_hold<T, E>(
    kind: TransferKind,
    mutation: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = std::time::Instant::now();
    let result = mutation.await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    queue::metrics::observe(
        "corebank_hold_duration_seconds",
        &format!("kind=\"{}\",outcome=\"{outcome}\"", kind.as_str()),
        started.elapsed().as_secs_f64(),
    );
    result
}

/// The whole synchronous money path shared by every money mutation:
/// validate and hold (timed by kind), then hand over to settlement.
pub async fn move_money(
    s: &AppState,
    viewer: &ledger::Viewer,
    kind: TransferKind,
    request: MoneyRequest,
    amount: &str,
    idempotency_key: &str,
) -> async_graphql::Result<Transfer> {
    let initiated = timed_hold(
        kind,
        ledger::transfers::initiate(&s.db, viewer, s.money, request, amount, idempotency_key),
    )
    .await
    .gql()?;
    Ok(hand_over(s, initiated).await)
}

/// After the commit: hand the transfer to the settlement queue and publish.
/// A failed push is not an error for the client: the transfer is accepted
/// and the recovery sweep will enqueue it.
pub async fn hand_over(s: &AppState, initiated: ledger::transfers::Initiated) -> Transfer {
    if initiated.created {
        queue::metrics::count(
            "corebank_transfers_accepted_total",
            &format!("kind=\"{}\"", initiated.transfer.kind),
        );
        // Publish before the job can run, so subscribers see PENDING before
        // COMPLETED even when settlement is quicker than the publish.
        queue::after_commit(&s.queues, &s.events, initiated.events).await;
        if let Err(e) = s
            .queues
            .push_settlement(SettleTransfer {
                transfer_id: initiated.transfer.id,
            })
            .await
        {
            tracing::warn!(transfer.id = %initiated.transfer.id, error = %e, "settlement push failed; recovery sweep will retry");
        }
    }
    initiated.transfer.into()
}

#[derive(Default)]
pub struct TransferMutations;

#[Object]
impl TransferMutations {
    /// Simulated cash deposit into one of the viewer's accounts; PENDING until settled.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn deposit(
        &self,
        ctx: &Context<'_>,
        input: DepositInput,
    ) -> async_graphql::Result<Transfer> {
        let v = viewer(ctx)?;
        let s = state(ctx);
        let account_id = parse_id(&input.account_id, "account")?;
        move_money(
            s,
            &v,
            TransferKind::Deposit,
            MoneyRequest::Deposit { account_id },
            &input.amount.0,
            &input.idempotency_key,
        )
        .await
    }

    /// Simulated cash withdrawal; the amount is held at once.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn withdraw(
        &self,
        ctx: &Context<'_>,
        input: WithdrawInput,
    ) -> async_graphql::Result<Transfer> {
        let v = viewer(ctx)?;
        let s = state(ctx);
        let account_id = parse_id(&input.account_id, "account")?;
        move_money(
            s,
            &v,
            TransferKind::Withdrawal,
            MoneyRequest::Withdraw { account_id },
            &input.amount.0,
            &input.idempotency_key,
        )
        .await
    }

    /// Sends money to another account of the same currency.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn transfer(
        &self,
        ctx: &Context<'_>,
        input: TransferInput,
    ) -> async_graphql::Result<Transfer> {
        let v = viewer(ctx)?;
        let s = state(ctx);
        let from_account_id = parse_id(&input.from_account_id, "account")?;
        let contact = match &input.to_contact_id {
            Some(id) => Some(parse_id(id, "contact")?),
            None => None,
        };
        let to = Destination::from_options(input.to_account_number.clone(), contact).gql()?;
        let req = MoneyRequest::Transfer {
            from_account_id,
            to,
            memo: input.memo.clone(),
        };
        move_money(
            s,
            &v,
            TransferKind::Transfer,
            req,
            &input.amount.0,
            &input.idempotency_key,
        )
        .await
    }
}

#[derive(SimpleObject)]
#[graphql(directive = access::apply("ADMIN".into()))]
pub struct TrialBalanceLine {
    pub currency: String,
    /// Sum of all customer account balances.
    pub customer_total: Decimal,
    /// Sum of all system account balances.
    pub system_total: Decimal,
    /// customerTotal + systemTotal: always zero.
    pub net: Decimal,
}
