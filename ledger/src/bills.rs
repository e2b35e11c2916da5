//! Utility bills: providers, linked customer numbers, bill payments.
//!
//! Providers are outside systems that are slow and fail. Every call to one
//! has a timeout, bills are served from a cache filled by worker jobs, and a
//! payment is reported to the provider by a retried job after the money has
//! settled: a provider that is down never blocks the API or a transfer.

use std::time::Duration;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entity::{account, bill_payment, utility_link, utility_provider};

use crate::accounts::ACTIVE;
use crate::db::{begin_write, is_unique_violation, now};
use crate::money::{Amount, Currency};
use crate::{LedgerError, LedgerResult, Viewer};

/// Longest a provider may take to answer before we call it unavailable.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(3);
pub const KINDS: [&str; 4] = ["ELECTRICITY", "GAS", "WATER", "INTERNET"];

/// A bill as the provider reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderBill {
    pub reference: String,
    pub amount: String,
    pub currency: String,
    pub due_date: String,
    pub status: String,
}

/// What the cache keeps per link: the last good answer and when it came.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedBills {
    pub fetched_at: chrono::DateTime<chrono::Utc>,
    pub bills: Vec<ProviderBill>,
}

#[derive(Debug)]
pub enum ProviderError {
    NotFound,
    /// Timeout, connection failure, 5xx.
    Unavailable(String),
    /// The provider answered something we cannot use (4xx other than 404, bad JSON).
    Rejected(String),
}

fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .unwrap_or_default()
    })
}

fn url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

fn segment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// `GET /customers/{n}`: the customer's name, or NotFound.
pub async fn check_customer(base: &str, customer_number: &str) -> Result<String, ProviderError> {
    let res = http()
        .get(url(
            base,
            &format!("/customers/{}", segment(customer_number)),
        ))
        .send()
        .await
        .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
    match res.status().as_u16() {
        200 => {
            #[derive(Deserialize)]
            struct Customer {
                name: String,
            }
            res.json::<Customer>()
                .await
                .map(|c| c.name)
                .map_err(|e| ProviderError::Rejected(e.to_string()))
        }
        404 => Err(ProviderError::NotFound),
        s if s >= 500 => Err(ProviderError::Unavailable(format!("status {s}"))),
        s => Err(ProviderError::Rejected(format!("status {s}"))),
    }
}

/// `GET /customers/{n}/bills`.
pub async fn fetch_bills(
    base: &str,
    customer_number: &str,
) -> Result<Vec<ProviderBill>, ProviderError> {
    let res = http()
        .get(url(
            base,
            &format!("/customers/{}/bills", segment(customer_number)),
        ))
        .send()
        .await
        .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
    match res.status().as_u16() {
        200 => res
            .json::<Vec<ProviderBill>>()
            .await
            .map_err(|e| ProviderError::Rejected(e.to_string())),
        404 => Err(ProviderError::NotFound),
        s if s >= 500 => Err(ProviderError::Unavailable(format!("status {s}"))),
        s => Err(ProviderError::Rejected(format!("status {s}"))),
    }
}

/// `POST /payments`; a repeated `paymentId` is answered 200 by the provider.
pub async fn report_payment(base: &str, p: &bill_payment::Model) -> Result<(), ProviderError> {
    let currency =
        Currency::parse(&p.currency).map_err(|e| ProviderError::Rejected(e.to_string()))?;
    let body = serde_json::json!({
        "paymentId": p.id.to_string(),
        "reference": p.reference,
        "amount": Amount::from_minor(p.amount_minor).format(currency),
        "currency": p.currency,
    });
    let res = http()
        .post(url(base, "/payments"))
        .json(&body)
        .send()
        .await
        .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
    match res.status().as_u16() {
        200 | 201 => Ok(()),
        s if s >= 500 => Err(ProviderError::Unavailable(format!("status {s}"))),
        s => Err(ProviderError::Rejected(format!("status {s}"))),
    }
}

pub async fn create_provider(
    db: &DatabaseConnection,
    admin: &Viewer,
    name: &str,
    kind: &str,
    currency: &str,
    api_base_url: &str,
) -> LedgerResult<utility_provider::Model> {
    admin.require_admin()?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(LedgerError::bad_input(
            "provider name must be 1 to 100 characters",
        ));
    }
    if !KINDS.contains(&kind) {
        return Err(LedgerError::bad_input("unknown utility kind"));
    }
    let currency = Currency::parse(currency)?;
    let base = api_base_url.trim();
    if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() > 500 {
        return Err(LedgerError::bad_input("apiBaseUrl must be an http(s) URL"));
    }
    let txn = db.begin().await?;
    let t = now();
    let id = Uuid::now_v7();
    let settlement = account::ActiveModel {
        id: Set(Uuid::now_v7()),
        number: Set(format!("PROVIDER-{}", id.simple())),
        owner_id: Set(None),
        is_system: Set(true),
        name: Set(Some(format!("{name} settlement"))),
        kind: Set("SYSTEM".into()),
        currency: Set(currency.code().into()),
        status: Set(ACTIVE.into()),
        balance_minor: Set(0),
        held_minor: Set(0),
        version: Set(0),
        created_at: Set(t),
        updated_at: Set(t),
    }
    .insert(&txn)
    .await?;
    let p = utility_provider::ActiveModel {
        id: Set(id),
        name: Set(name.into()),
        kind: Set(kind.into()),
        currency: Set(currency.code().into()),
        api_base_url: Set(base.trim_end_matches('/').into()),
        settlement_account_id: Set(settlement.id),
        created_at: Set(t),
    }
    .insert(&txn)
    .await?;
    crate::admin::audit(
        &txn,
        admin,
        "CREATE_UTILITY_PROVIDER",
        Some(p.id),
        Some(name),
    )
    .await?;
    txn.commit().await?;
    Ok(p)
}

pub async fn providers(db: &impl ConnectionTrait) -> LedgerResult<Vec<utility_provider::Model>> {
    Ok(utility_provider::Entity::find()
        .order_by_asc(utility_provider::Column::Name)
        .all(db)
        .await?)
}

pub async fn provider(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> LedgerResult<utility_provider::Model> {
    utility_provider::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(LedgerError::NotFound("provider"))
}

/// Links a customer number after the provider confirmed it.
pub async fn link(
    db: &DatabaseConnection,
    viewer: &Viewer,
    provider_id: Uuid,
    customer_number: &str,
    nickname: Option<&str>,
) -> LedgerResult<utility_link::Model> {
    let number = customer_number.trim();
    if number.is_empty() || number.len() > 64 || segment(number) != number {
        return Err(LedgerError::bad_input(
            "customerNumber must be 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    let nickname = nickname
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if nickname.as_ref().is_some_and(|n| n.chars().count() > 100) {
        return Err(LedgerError::bad_input("nickname is at most 100 characters"));
    }
    let p = provider(db, provider_id).await?;
    // Answer a duplicate without bothering (or waiting for) the provider.
    let existing = utility_link::Entity::find()
        .filter(utility_link::Column::UserId.eq(viewer.user_id))
        .filter(utility_link::Column::ProviderId.eq(p.id))
        .filter(utility_link::Column::CustomerNumber.eq(number))
        .one(db)
        .await?;
    if existing.is_some() {
        return Err(LedgerError::bad_input(
            "this customer number is already linked",
        ));
    }
    match check_customer(&p.api_base_url, number).await {
        Ok(_) => {}
        Err(ProviderError::NotFound) => return Err(LedgerError::NotFound("provider customer")),
        Err(ProviderError::Unavailable(e) | ProviderError::Rejected(e)) => {
            tracing::warn!(provider.id = %p.id, error = %e, "provider check failed");
            return Err(LedgerError::ProviderUnavailable);
        }
    }
    let res = utility_link::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(viewer.user_id),
        provider_id: Set(p.id),
        customer_number: Set(number.into()),
        nickname: Set(nickname),
        created_at: Set(now()),
    }
    .insert(db)
    .await;
    match res {
        Ok(l) => Ok(l),
        Err(e) if is_unique_violation(&e) => Err(LedgerError::bad_input(
            "this customer number is already linked",
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn unlink(db: &impl ConnectionTrait, viewer: &Viewer, id: Uuid) -> LedgerResult<bool> {
    let res = utility_link::Entity::delete_many()
        .filter(utility_link::Column::Id.eq(id))
        .filter(utility_link::Column::UserId.eq(viewer.user_id))
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Err(LedgerError::NotFound("utility link"));
    }
    Ok(true)
}

pub async fn links(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> LedgerResult<Vec<utility_link::Model>> {
    Ok(utility_link::Entity::find()
        .filter(utility_link::Column::UserId.eq(user_id))
        .order_by_asc(utility_link::Column::CreatedAt)
        .all(db)
        .await?)
}

pub async fn all_links(db: &impl ConnectionTrait) -> LedgerResult<Vec<utility_link::Model>> {
    Ok(utility_link::Entity::find().all(db).await?)
}

pub async fn link_by_id(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> LedgerResult<Option<utility_link::Model>> {
    Ok(utility_link::Entity::find_by_id(id).one(db).await?)
}

/// The opaque id of a bill: its link and the provider's reference.
pub fn bill_id(link_id: Uuid, reference: &str) -> String {
    format!("{}.{}", link_id.simple(), hex::encode(reference))
}

pub fn parse_bill_id(id: &str) -> LedgerResult<(Uuid, String)> {
    let nf = || LedgerError::NotFound("bill");
    let (link, reference) = id.split_once('.').ok_or_else(nf)?;
    let link = Uuid::parse_str(link).map_err(|_| nf())?;
    let reference =
        String::from_utf8(hex::decode(reference).map_err(|_| nf())?).map_err(|_| nf())?;
    Ok((link, reference))
}

/// Local payment state of bills, by (provider, reference).
pub async fn payments_for(
    db: &impl ConnectionTrait,
    provider_ids: &[Uuid],
) -> LedgerResult<Vec<bill_payment::Model>> {
    Ok(bill_payment::Entity::find()
        .filter(bill_payment::Column::ProviderId.is_in(provider_ids.to_vec()))
        .all(db)
        .await?)
}

/// UNPAID, PROCESSING (paid here, not yet reported) or PAID.
pub fn bill_status(provider_status: &str, payment: Option<&bill_payment::Model>) -> &'static str {
    match payment {
        Some(p) if p.reported_at.is_some() => "PAID",
        Some(_) => "PROCESSING",
        None if provider_status.eq_ignore_ascii_case("PAID") => "PAID",
        None => "UNPAID",
    }
}

/// A payment request for a bill, checked against the cached bill.
#[derive(Clone, Debug)]
pub struct BillToPay {
    pub link: utility_link::Model,
    pub provider: utility_provider::Model,
    pub bill: ProviderBill,
}

pub async fn resolve_bill(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    bill_id: &str,
    cached: impl FnOnce(Uuid) -> Option<CachedBills>,
) -> LedgerResult<BillToPay> {
    let (link_id, reference) = parse_bill_id(bill_id)?;
    let link = utility_link::Entity::find_by_id(link_id)
        .filter(utility_link::Column::UserId.eq(viewer.user_id))
        .one(db)
        .await?
        .ok_or(LedgerError::NotFound("bill"))?;
    let provider = provider(db, link.provider_id).await?;
    let bill = cached(link.id)
        .and_then(|c| c.bills.into_iter().find(|b| b.reference == reference))
        .ok_or(LedgerError::NotFound("bill"))?;
    Ok(BillToPay {
        link,
        provider,
        bill,
    })
}

/// Whether this bill already has a payment (settled, in flight or reported).
pub async fn already_paid(db: &impl ConnectionTrait, b: &BillToPay) -> LedgerResult<bool> {
    Ok(bill_payment::Entity::find()
        .filter(bill_payment::Column::ProviderId.eq(b.provider.id))
        .filter(bill_payment::Column::Reference.eq(b.bill.reference.as_str()))
        .one(db)
        .await?
        .is_some())
}

/// Records the payment row inside the transfer's transaction; the unique
/// index on (provider, reference) refuses a second payment of one bill.
pub async fn record_payment(
    txn: &impl ConnectionTrait,
    b: &BillToPay,
    transfer_id: Uuid,
    amount_minor: i64,
) -> LedgerResult<()> {
    let res = bill_payment::ActiveModel {
        id: Set(Uuid::now_v7()),
        provider_id: Set(b.provider.id),
        link_id: Set(b.link.id),
        reference: Set(b.bill.reference.clone()),
        transfer_id: Set(transfer_id),
        amount_minor: Set(amount_minor),
        currency: Set(b.bill.currency.clone()),
        reported_at: Set(None),
        report_attempts: Set(0),
        next_report_at: Set(None),
        last_error: Set(None),
        created_at: Set(now()),
    }
    .insert(txn)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(LedgerError::bad_input(
            "this bill is already paid or being paid",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Called by settlement, in its transaction: a settled payment becomes due
/// for reporting; a failed one frees the bill to be paid again.
pub async fn on_settled(
    txn: &impl ConnectionTrait,
    transfer_id: Uuid,
    completed: bool,
) -> LedgerResult<Option<bill_payment::Model>> {
    let Some(p) = bill_payment::Entity::find()
        .filter(bill_payment::Column::TransferId.eq(transfer_id))
        .one(txn)
        .await?
    else {
        return Ok(None);
    };
    if completed {
        let mut am: bill_payment::ActiveModel = p.into();
        am.next_report_at = Set(Some(now() + chrono::Duration::seconds(15)));
        Ok(Some(am.update(txn).await?))
    } else {
        bill_payment::Entity::delete_by_id(p.id).exec(txn).await?;
        Ok(None)
    }
}

pub async fn payment(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> LedgerResult<Option<bill_payment::Model>> {
    Ok(bill_payment::Entity::find_by_id(id).one(db).await?)
}

pub async fn mark_reported(db: &impl ConnectionTrait, id: Uuid) -> LedgerResult<()> {
    bill_payment::Entity::update_many()
        .col_expr(bill_payment::Column::ReportedAt, Expr::value(now()))
        .col_expr(
            bill_payment::Column::NextReportAt,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .filter(bill_payment::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Schedules the next report attempt: 2 s doubling to 5 min, forever —
/// the money has moved, so the provider must eventually hear of it.
pub async fn report_failed(
    db: &impl ConnectionTrait,
    p: &bill_payment::Model,
    error: &str,
) -> LedgerResult<()> {
    let attempts = p.report_attempts + 1;
    let delay = (2i64 << (attempts.clamp(1, 12) - 1)).min(300);
    bill_payment::Entity::update_many()
        .col_expr(bill_payment::Column::ReportAttempts, Expr::value(attempts))
        .col_expr(
            bill_payment::Column::NextReportAt,
            Expr::value(now() + chrono::Duration::seconds(delay)),
        )
        .col_expr(
            bill_payment::Column::LastError,
            Expr::value(error.chars().take(300).collect::<String>()),
        )
        .filter(bill_payment::Column::Id.eq(p.id))
        .exec(db)
        .await?;
    Ok(())
}

/// Settled payments whose report is due; leased for a minute.
pub async fn claim_due_reports(db: &DatabaseConnection, limit: u64) -> LedgerResult<Vec<Uuid>> {
    let txn = begin_write(db).await?;
    let t = now();
    let ids: Vec<Uuid> = bill_payment::Entity::find()
        .filter(bill_payment::Column::ReportedAt.is_null())
        .filter(bill_payment::Column::NextReportAt.lte(t))
        .select_only()
        .column(bill_payment::Column::Id)
        .limit(limit)
        .into_tuple::<Uuid>()
        .all(&txn)
        .await?;
    if !ids.is_empty() {
        bill_payment::Entity::update_many()
            .col_expr(
                bill_payment::Column::NextReportAt,
                Expr::value(t + chrono::Duration::seconds(60)),
            )
            .filter(bill_payment::Column::Id.is_in(ids.clone()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bill_ids_round_trip_and_garbage_is_not_found() {
        let link = Uuid::new_v4();
        let id = bill_id(link, "ELEC-2026/11 #3");
        assert_eq!(
            parse_bill_id(&id).unwrap(),
            (link, "ELEC-2026/11 #3".to_string())
        );
        assert_eq!(parse_bill_id("nope").unwrap_err().code(), "NOT_FOUND");
    }

    #[test]
    fn a_paid_here_bill_is_processing_until_reported() {
        let mut p = bill_payment::Model {
            id: Uuid::new_v4(),
            provider_id: Uuid::new_v4(),
            link_id: Uuid::new_v4(),
            reference: "R".into(),
            transfer_id: Uuid::new_v4(),
            amount_minor: 1,
            currency: "USD".into(),
            reported_at: None,
            report_attempts: 0,
            next_report_at: None,
            last_error: None,
            created_at: chrono::Utc::now(),
        };
        assert_eq!(bill_status("UNPAID", None), "UNPAID");
        assert_eq!(bill_status("PAID", None), "PAID");
        assert_eq!(bill_status("UNPAID", Some(&p)), "PROCESSING");
        p.reported_at = Some(chrono::Utc::now());
        assert_eq!(bill_status("UNPAID", Some(&p)), "PAID");
    }
}
