//! Utility bills: providers, linked customer numbers, cached bills, bill pay.

use std::collections::HashMap;

use async_graphql::{Context, Enum, ID, InputObject, Object, Subscription};
use entity::{utility_link, utility_provider};
use futures::{Stream, StreamExt};
use ledger::events::LedgerEvent;
use ledger::jobs::RefreshBills;
use ledger::transfers::MoneyRequest;
use uuid::Uuid;

use super::access::{Access, access};
use super::scalars::{Date, DateTime, Decimal};
use super::transfers::Transfer;
use super::{Gql, parse_id, state, viewer};
use crate::app::AppState;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum UtilityKind {
    Electricity,
    Gas,
    Water,
    Internet,
}

impl UtilityKind {
    fn as_str(self) -> &'static str {
        match self {
            UtilityKind::Electricity => "ELECTRICITY",
            UtilityKind::Gas => "GAS",
            UtilityKind::Water => "WATER",
            UtilityKind::Internet => "INTERNET",
        }
    }
    fn from_str(s: &str) -> UtilityKind {
        match s {
            "GAS" => UtilityKind::Gas,
            "WATER" => UtilityKind::Water,
            "INTERNET" => UtilityKind::Internet,
            _ => UtilityKind::Electricity,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum BillStatus {
    Unpaid,
    Processing,
    Paid,
}

impl BillStatus {
    fn from_str(s: &str) -> BillStatus {
        match s {
            "PAID" => BillStatus::Paid,
            "PROCESSING" => BillStatus::Processing,
            _ => BillStatus::Unpaid,
        }
    }
}

pub struct UtilityProvider(utility_provider::Model);

#[Object(directive = access::apply("CUSTOMER".into()))]
impl UtilityProvider {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn kind(&self) -> UtilityKind {
        UtilityKind::from_str(&self.0.kind)
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
}

pub struct UtilityLink {
    link: utility_link::Model,
    provider: utility_provider::Model,
}

#[Object(directive = access::apply("OWNER_OR_ADMIN".into()))]
impl UtilityLink {
    async fn id(&self) -> ID {
        ID(self.link.id.to_string())
    }
    async fn provider(&self) -> UtilityProvider {
        UtilityProvider(self.provider.clone())
    }
    async fn customer_number(&self) -> &str {
        &self.link.customer_number
    }
    async fn nickname(&self) -> Option<&str> {
        self.link.nickname.as_deref()
    }
    async fn created_at(&self) -> DateTime {
        DateTime(self.link.created_at)
    }
}

#[derive(Clone)]
pub struct Bill {
    link: utility_link::Model,
    provider: utility_provider::Model,
    bill: ledger::bills::ProviderBill,
    status: &'static str,
    fetched_at: chrono::DateTime<chrono::Utc>,
}

#[Object(directive = access::apply("OWNER_OR_ADMIN".into()))]
impl Bill {
    async fn id(&self) -> ID {
        ID(ledger::bills::bill_id(self.link.id, &self.bill.reference))
    }
    async fn link(&self) -> UtilityLink {
        UtilityLink {
            link: self.link.clone(),
            provider: self.provider.clone(),
        }
    }
    async fn reference(&self) -> &str {
        &self.bill.reference
    }
    /// Formatted with the currency's minor digits.
    async fn amount(&self) -> Decimal {
        match ledger::money::Currency::parse(&self.bill.currency)
            .and_then(|c| ledger::money::Amount::parse(&self.bill.amount, c).map(|a| a.format(c)))
        {
            Ok(s) => Decimal(s),
            Err(_) => Decimal(self.bill.amount.clone()),
        }
    }
    async fn currency(&self) -> &str {
        &self.bill.currency
    }
    async fn due_date(&self) -> async_graphql::Result<Date> {
        chrono::NaiveDate::parse_from_str(&self.bill.due_date, "%Y-%m-%d")
            .map(Date)
            .map_err(|_| {
                super::errors::to_gql(ledger::LedgerError::internal(
                    "provider sent a bad due date",
                ))
            })
    }
    async fn status(&self) -> BillStatus {
        BillStatus::from_str(self.status)
    }
    /// When this bill was last fetched from the provider (the cache's age).
    async fn fetched_at(&self) -> DateTime {
        DateTime(self.fetched_at)
    }
}

/// The user's bills from the cache, with local payment state applied.
pub async fn bills_of(
    s: &AppState,
    user_id: Uuid,
    status: Option<BillStatus>,
) -> async_graphql::Result<Vec<Bill>> {
    let links = ledger::bills::links(&s.db, user_id).await.gql()?;
    let providers: HashMap<Uuid, utility_provider::Model> = ledger::bills::providers(&s.db)
        .await
        .gql()?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let provider_ids: Vec<Uuid> = links.iter().map(|l| l.provider_id).collect();
    let payments = ledger::bills::payments_for(&s.db, &provider_ids)
        .await
        .gql()?;
    let mut out = Vec::new();
    for link in links {
        let Some(provider) = providers.get(&link.provider_id) else {
            continue;
        };
        let Some(cached) = s.bills.get(link.id).await else {
            continue;
        };
        for bill in cached.bills {
            let payment = payments
                .iter()
                .find(|p| p.provider_id == provider.id && p.reference == bill.reference);
            let st = ledger::bills::bill_status(&bill.status, payment);
            if status.is_some_and(|want| BillStatus::from_str(st) != want) {
                continue;
            }
            out.push(Bill {
                link: link.clone(),
                provider: provider.clone(),
                bill,
                status: st,
                fetched_at: cached.fetched_at,
            });
        }
    }
    out.sort_by(|a, b| {
        a.bill
            .due_date
            .cmp(&b.bill.due_date)
            .then(a.bill.reference.cmp(&b.bill.reference))
    });
    Ok(out)
}

#[derive(InputObject)]
pub struct CreateUtilityProviderInput {
    name: String,
    kind: UtilityKind,
    currency: String,
    api_base_url: String,
}

#[derive(InputObject)]
pub struct LinkUtilityAccountInput {
    provider_id: ID,
    customer_number: String,
    nickname: Option<String>,
}

#[derive(InputObject)]
pub struct PayBillInput {
    bill_id: ID,
    from_account_id: ID,
    idempotency_key: String,
}

#[derive(Default)]
pub struct BillQueries;

#[Object]
impl BillQueries {
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn utility_providers(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<UtilityProvider>> {
        Ok(ledger::bills::providers(&state(ctx).db)
            .await
            .gql()?
            .into_iter()
            .map(UtilityProvider)
            .collect())
    }

    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn utility_links(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<UtilityLink>> {
        let v = viewer(ctx)?;
        let s = state(ctx);
        let providers: HashMap<Uuid, utility_provider::Model> = ledger::bills::providers(&s.db)
            .await
            .gql()?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        Ok(ledger::bills::links(&s.db, v.user_id)
            .await
            .gql()?
            .into_iter()
            .filter_map(|link| {
                providers
                    .get(&link.provider_id)
                    .cloned()
                    .map(|provider| UtilityLink { link, provider })
            })
            .collect())
    }

    /// Across all the viewer's links, served from the cache.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn bills(
        &self,
        ctx: &Context<'_>,
        status: Option<BillStatus>,
    ) -> async_graphql::Result<Vec<Bill>> {
        let v = viewer(ctx)?;
        bills_of(state(ctx), v.user_id, status).await
    }
}

#[derive(Default)]
pub struct BillMutations;

#[Object]
impl BillMutations {
    /// ADMIN. Registers a provider and its settlement account.
    #[graphql(guard = "Access::Admin", directive = access::apply("ADMIN".into()))]
    async fn create_utility_provider(
        &self,
        ctx: &Context<'_>,
        input: CreateUtilityProviderInput,
    ) -> async_graphql::Result<UtilityProvider> {
        let v = viewer(ctx)?;
        let p = ledger::bills::create_provider(
            &state(ctx).db,
            &v,
            &input.name,
            input.kind.as_str(),
            &input.currency,
            &input.api_base_url,
        )
        .await
        .gql()?;
        Ok(UtilityProvider(p))
    }

    /// Checks the customer number with the provider, links it, and fetches its bills.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn link_utility_account(
        &self,
        ctx: &Context<'_>,
        input: LinkUtilityAccountInput,
    ) -> async_graphql::Result<UtilityLink> {
        let v = viewer(ctx)?;
        let s = state(ctx);
        let provider_id = parse_id(&input.provider_id, "provider")?;
        let link = ledger::bills::link(
            &s.db,
            &v,
            provider_id,
            &input.customer_number,
            input.nickname.as_deref(),
        )
        .await
        .gql()?;
        if let Err(e) = s
            .queues
            .push_refresh(RefreshBills { link_id: link.id })
            .await
        {
            tracing::warn!(error = %e, "bill refresh push failed; the periodic refresh will fetch them");
        }
        let provider = ledger::bills::provider(&s.db, link.provider_id)
            .await
            .gql()?;
        Ok(UtilityLink { link, provider })
    }

    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn unlink_utility_account(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<bool> {
        let v = viewer(ctx)?;
        let id = parse_id(&id, "utility link")?;
        ledger::bills::unlink(&state(ctx).db, &v, id).await.gql()
    }

    /// Queues a refresh of every linked account; `billsUpdated` fires when done.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn refresh_bills(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let v = viewer(ctx)?;
        let s = state(ctx);
        for link in ledger::bills::links(&s.db, v.user_id).await.gql()? {
            s.queues
                .push_refresh(RefreshBills { link_id: link.id })
                .await
                .map_err(|e| super::errors::to_gql(ledger::LedgerError::internal(e)))?;
        }
        Ok(true)
    }

    /// A BILL_PAYMENT transfer to the provider; the bill is PROCESSING until
    /// the provider accepts the report, PAID after.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn pay_bill(
        &self,
        ctx: &Context<'_>,
        input: PayBillInput,
    ) -> async_graphql::Result<Transfer> {
        let v = viewer(ctx)?;
        let s = state(ctx);
        let from_account_id = parse_id(&input.from_account_id, "account")?;
        let (link_id, _) = ledger::bills::parse_bill_id(input.bill_id.as_str()).gql()?;
        let cached = s.bills.get(link_id).await;
        let bill = ledger::bills::resolve_bill(&s.db, &v, input.bill_id.as_str(), |_| cached)
            .await
            .gql()?;
        let amount = bill.bill.amount.clone();
        let req = MoneyRequest::BillPayment {
            from_account_id,
            bill: Box::new(bill),
        };
        super::transfers::move_money(
            s,
            &v,
            super::transfers::TransferKind::BillPayment,
            req,
            &amount,
            &input.idempotency_key,
        )
        .await
    }
}

#[derive(Default)]
pub struct BillSubscription;

#[Subscription]
impl BillSubscription {
    /// The viewer's bills, each time a refresh finishes or a payment moves.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn bills_updated(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Vec<Bill>>> {
        let v = viewer(ctx)?;
        let s = state(ctx).clone();
        let stream = s.events.subscribe_topic(queue::Topic::User(v.user_id));
        let stream = stream.filter_map(move |ev| {
            let s = s.clone();
            let user = v.user_id;
            async move {
                match ev {
                    LedgerEvent::BillsChanged { user_id } if user_id == user => {
                        bills_of(&s, user, None).await.ok()
                    }
                    _ => None,
                }
            }
        });
        Ok(crate::metrics::track_subscription("billsUpdated", stream))
    }
}
