//! Starting a money movement: validate, hold, record — in one transaction.
//!
//! `initiate` is the synchronous half of every deposit, withdrawal and
//! transfer. It returns the transfer `PENDING`; a worker settles it later
//! (see `settlement`). Idempotency is decided by the unique index on
//! `(initiated_by, idempotency_key)`: the transfer row is inserted before the
//! funds check, so a concurrent duplicate — even on another `api` process —
//! blocks on that index until the original commits and then returns it.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use sea_orm::sea_query::{CaseStatement, Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend,
    DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};
use uuid::Uuid;

use entity::{account, contact, transfer};

use crate::account_number::AccountNumber;
use crate::accounts::{self, available_minor, ensure_active};
use crate::batch::{BatchLimits, Coalescer};
use crate::db::{begin_write, is_unique_violation, now};
use crate::events::{BalanceChanged, LedgerEvent, TransferChanged};
use crate::idempotency::{IdempotencyKey, request_fingerprint};
use crate::money::{Amount, Currency, check_deposit_limit};
use crate::page::{Page, PageRequest};
use crate::{LedgerError, LedgerResult, Viewer};

pub const PENDING: &str = "PENDING";
pub const COMPLETED: &str = "COMPLETED";
pub const FAILED: &str = "FAILED";

pub const TRANSFER: &str = "TRANSFER";
pub const DEPOSIT: &str = "DEPOSIT";
pub const WITHDRAWAL: &str = "WITHDRAWAL";
pub const BILL_PAYMENT: &str = "BILL_PAYMENT";
pub const REVERSAL: &str = "REVERSAL";

/// Where a transfer goes: exactly one of a typed number or a saved contact.
#[derive(Clone, Debug)]
pub enum Destination {
    Number(String),
    Contact(Uuid),
}

impl Destination {
    pub fn from_options(
        number: Option<String>,
        contact: Option<Uuid>,
    ) -> LedgerResult<Destination> {
        match (number, contact) {
            (Some(n), None) => Ok(Destination::Number(n)),
            (None, Some(c)) => Ok(Destination::Contact(c)),
            _ => Err(LedgerError::bad_input(
                "give exactly one of toAccountNumber and toContactId",
            )),
        }
    }
}

/// A money request as the client sent it.
#[derive(Clone, Debug)]
pub enum MoneyRequest {
    Deposit {
        account_id: Uuid,
    },
    Withdraw {
        account_id: Uuid,
    },
    Transfer {
        from_account_id: Uuid,
        to: Destination,
        memo: Option<String>,
    },
    BillPayment {
        from_account_id: Uuid,
        bill: Box<crate::bills::BillToPay>,
    },
}

/// Policy switches that come from configuration.
#[derive(Clone, Copy, Debug)]
pub struct MoneyPolicy {
    pub email_verification_required: bool,
}

/// The outcome of `initiate`.
#[derive(Clone, Debug)]
pub struct Initiated {
    pub transfer: transfer::Model,
    /// False when an earlier request with the same key was returned.
    pub created: bool,
    /// To publish once the caller has handed the settlement job over.
    pub events: Vec<LedgerEvent>,
}

/// Everything validated before the transaction starts.
#[derive(Clone, Debug)]
struct Plan {
    kind: &'static str,
    amount: Amount,
    currency: Currency,
    source: Option<account::Model>,
    destination: Option<account::Model>,
    memo: Option<String>,
    fingerprint: String,
    bill: Option<Box<crate::bills::BillToPay>>,
}

pub async fn initiate(
    db: &DatabaseConnection,
    viewer: &Viewer,
    policy: MoneyPolicy,
    request: MoneyRequest,
    amount: &str,
    idempotency_key: &str,
) -> LedgerResult<Initiated> {
    let key = IdempotencyKey::parse(idempotency_key)?;
    let plan = plan(db, viewer, request, amount).await?;

    // A retry returns the original even if the world changed since (funds
    // spent, account frozen): look for it before any business check.
    if let Some(existing) = find_by_key(db, viewer.user_id, &key).await? {
        return replay(existing, &plan.fingerprint);
    }
    check_business_rules(viewer, policy, &plan)?;
    // A paid bill is refused before any funds check (the unique index still
    // decides a race between two payments).
    if let Some(bill) = &plan.bill
        && crate::bills::already_paid(db, bill).await?
    {
        return Err(LedgerError::bad_input(
            "this bill is already paid or being paid",
        ));
    }

    let write = HoldWrite::new(viewer.user_id, &key, plan);
    // Holds are coalesced into shared transactions on PostgreSQL when the
    // process enabled it; bill payments carry extra bookkeeping and take
    // the one-by-one path, as does SQLite (one writer at a time anyway).
    if write.plan.bill.is_none()
        && db.get_database_backend() == DbBackend::Postgres
        && let Some(holds) = HOLD_BATCHES.get()
        && let Some(answer) = holds.submit(write.clone()).await
    {
        return answer;
    }
    write_one(db, write).await
}

/// A validated money request, ready to be written.
#[derive(Clone, Debug)]
pub struct HoldWrite {
    user_id: Uuid,
    key: IdempotencyKey,
    row: transfer::Model,
    plan: Plan,
}

impl HoldWrite {
    fn new(user_id: Uuid, key: &IdempotencyKey, plan: Plan) -> HoldWrite {
        let t = now();
        let hold = if plan.source.is_some() {
            plan.amount.minor()
        } else {
            0
        };
        let row = transfer::Model {
            id: Uuid::now_v7(),
            kind: plan.kind.into(),
            status: PENDING.into(),
            amount_minor: plan.amount.minor(),
            currency: plan.currency.code().into(),
            source_account_id: plan.source.as_ref().map(|a| a.id),
            destination_account_id: plan.destination.as_ref().map(|a| a.id),
            initiated_by: user_id,
            idempotency_key: Some(key.as_str().to_owned()),
            request_fingerprint: Some(plan.fingerprint.clone()),
            memo: plan.memo.clone(),
            failure_reason: None,
            hold_minor: hold,
            reversal_of: None,
            enqueued_at: t,
            created_at: t,
            settled_at: None,
        };
        HoldWrite {
            user_id,
            key: key.clone(),
            row,
            plan,
        }
    }

    /// The original of a duplicate that lost the race on the idempotency
    /// index; that original has committed by the time the race is lost.
    async fn replay_original(&self, db: &impl ConnectionTrait) -> LedgerResult<Initiated> {
        let existing = find_by_key(db, self.user_id, &self.key)
            .await?
            .ok_or_else(|| LedgerError::internal("idempotent original vanished"))?;
        replay(existing, &self.plan.fingerprint)
    }

    fn accepted(&self, source_after: Option<&account::Model>) -> Initiated {
        let mut events: Vec<LedgerEvent> = source_after
            .map(|src| balance_event(src, Some(self.row.id)))
            .into_iter()
            .collect();
        if self.plan.bill.is_some() {
            events.push(LedgerEvent::BillsChanged {
                user_id: self.user_id,
            });
        }
        events.push(transfer_event(
            &self.row,
            self.plan.source.as_ref(),
            self.plan.destination.as_ref(),
        ));
        tracing::info!(transfer.id = %self.row.id, transfer.kind = self.plan.kind, amount_minor = self.plan.amount.minor(), "transfer accepted");
        Initiated {
            transfer: self.row.clone(),
            created: true,
            events,
        }
    }
}

/// Writes one validated request in its own transaction: the transfer row
/// first (the idempotency index decides duplicates), then the hold.
async fn write_one(db: &DatabaseConnection, w: HoldWrite) -> LedgerResult<Initiated> {
    let txn = begin_write(db).await?;
    let row: transfer::ActiveModel = w.row.clone().into();
    match transfer::Entity::insert(row)
        .exec_without_returning(&txn)
        .await
    {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            // Lost the race to a concurrent duplicate, which has committed by now.
            drop(txn);
            return w.replay_original(db).await;
        }
        Err(e) => return Err(e.into()),
    }
    let source_after = match &w.plan.source {
        Some(src) => Some(place_hold(&txn, src.id, w.plan.amount).await?),
        None => None,
    };
    if let Some(bill) = &w.plan.bill {
        crate::bills::record_payment(&txn, bill, w.row.id, w.plan.amount.minor()).await?;
    }
    txn.commit().await?;
    Ok(w.accepted(source_after.as_ref()))
}

static HOLD_BATCHES: OnceLock<Coalescer<HoldWrite, LedgerResult<Initiated>>> = OnceLock::new();

/// Coalesces this process's money mutations into shared transactions (see
/// `write_batch`). Called once at start by the `api`; without it every
/// mutation has its own transaction.
pub fn enable_hold_batching(db: DatabaseConnection, limits: BatchLimits) {
    let _ = HOLD_BATCHES.set(Coalescer::start(limits, move |writes: Vec<HoldWrite>| {
        let db = db.clone();
        async move {
            match write_batch(&db, &writes).await {
                Ok(answers) => answers,
                Err(e) => {
                    // The batch changed nothing; each request is written
                    // alone so that whatever failed the batch fails alone.
                    tracing::warn!(error = %e, batch.size = writes.len(), "hold batch failed; writing its requests one by one");
                    let mut answers = Vec::with_capacity(writes.len());
                    for w in writes {
                        answers.push(write_one(&db, w).await);
                    }
                    answers
                }
            }
        }
    }));
}

/// Writes many validated requests in one transaction with a fixed number
/// of statements: one multi-row insert of the transfer rows (duplicates of
/// a concurrent original wait on the idempotency index, then insert
/// nothing), one locking read of the source accounts in id order, funds
/// checked against the running available balance, one delete of the rows
/// refused, one update of the holds. Each request gets its own answer: a
/// refused one fails alone, exactly as it would have on its own.
pub async fn write_batch(
    db: &DatabaseConnection,
    writes: &[HoldWrite],
) -> LedgerResult<Vec<LedgerResult<Initiated>>> {
    let mut answers: Vec<Option<LedgerResult<Initiated>>> = writes.iter().map(|_| None).collect();
    // Rows go in (user, key) order so that two batches holding crossing
    // duplicates wait on each other in one direction only.
    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by(|&a, &b| {
        (writes[a].user_id, writes[a].key.as_str())
            .cmp(&(writes[b].user_id, writes[b].key.as_str()))
    });
    let txn = begin_write(db).await?;
    let rows = order.iter().map(|&i| {
        let row: transfer::ActiveModel = writes[i].row.clone().into();
        row
    });
    let inserted: HashSet<Uuid> = match transfer::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([
                transfer::Column::InitiatedBy,
                transfer::Column::IdempotencyKey,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_with_returning_keys(&txn)
        .await
    {
        Ok(ids) => ids.into_iter().collect(),
        Err(DbErr::RecordNotInserted) => HashSet::new(),
        Err(e) => return Err(e.into()),
    };

    let mut source_ids: Vec<Uuid> = writes
        .iter()
        .filter(|w| inserted.contains(&w.row.id))
        .filter_map(|w| w.plan.source.as_ref().map(|a| a.id))
        .collect();
    source_ids.sort();
    source_ids.dedup();
    let mut sources: HashMap<Uuid, account::Model> = if source_ids.is_empty() {
        HashMap::new()
    } else {
        account::Entity::find()
            .filter(account::Column::Id.is_in(source_ids))
            .order_by_asc(account::Column::Id)
            .lock_exclusive()
            .all(&txn)
            .await?
            .into_iter()
            .map(|a| (a.id, a))
            .collect()
    };

    // First come, first served: requests are decided in creation order.
    let mut by_creation: Vec<usize> = (0..writes.len()).collect();
    by_creation.sort_by_key(|&i| writes[i].row.id);
    let mut refused: Vec<Uuid> = Vec::new();
    let mut held: Vec<Uuid> = Vec::new();
    let t = now();
    for i in by_creation {
        let w = &writes[i];
        if !inserted.contains(&w.row.id) {
            continue; // a duplicate: answered from its original after commit
        }
        let Some(src) = &w.plan.source else {
            answers[i] = Some(Ok(w.accepted(None)));
            continue;
        };
        let account = sources
            .get_mut(&src.id)
            .ok_or(LedgerError::NotFound("account"))?;
        match decide_hold(account, w.plan.amount) {
            Ok(()) => {
                account.held_minor += w.plan.amount.minor();
                account.version += 1;
                account.updated_at = t;
                if !held.contains(&account.id) {
                    held.push(account.id);
                }
                answers[i] = Some(Ok(w.accepted(Some(account))));
            }
            Err(e) => {
                refused.push(w.row.id);
                answers[i] = Some(Err(e));
            }
        }
    }
    if !refused.is_empty() {
        transfer::Entity::delete_many()
            .filter(transfer::Column::Id.is_in(refused))
            .exec(&txn)
            .await?;
    }
    if !held.is_empty() {
        let case = |value: &dyn Fn(&account::Model) -> i64| {
            let mut case = CaseStatement::new();
            for id in &held {
                case = case.case(account::Column::Id.eq(*id), value(&sources[id]));
            }
            case
        };
        let held_case: Expr = case(&|a| a.held_minor).into();
        let version_case: Expr = case(&|a| a.version).into();
        account::Entity::update_many()
            .col_expr(account::Column::HeldMinor, held_case)
            .col_expr(account::Column::Version, version_case)
            .col_expr(account::Column::UpdatedAt, Expr::value(t))
            .filter(account::Column::Id.is_in(held.clone()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;

    let mut out = Vec::with_capacity(writes.len());
    for (w, answer) in writes.iter().zip(answers) {
        out.push(match answer {
            Some(a) => a,
            // A duplicate of a request in this very batch. If that original
            // was refused, nothing of it remains and this one is a fresh
            // attempt, exactly as when a duplicate waits out a rollback.
            None => match find_by_key(db, w.user_id, &w.key).await? {
                Some(existing) => replay(existing, &w.plan.fingerprint),
                None => write_one(db, w.clone()).await,
            },
        });
    }
    Ok(out)
}

/// Whether the locked source can take a hold of `amount`.
fn decide_hold(src: &account::Model, amount: Amount) -> LedgerResult<()> {
    ensure_active(src)?;
    if available_minor(src) < amount.minor() {
        return Err(LedgerError::InsufficientFunds);
    }
    Ok(())
}

/// Locks the source, checks available funds and puts the amount on hold.
async fn place_hold(
    txn: &impl ConnectionTrait,
    account_id: Uuid,
    amount: Amount,
) -> LedgerResult<account::Model> {
    let src = account::Entity::find_by_id(account_id)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(LedgerError::NotFound("account"))?;
    decide_hold(&src, amount)?;
    let held = src.held_minor + amount.minor();
    let version = src.version + 1;
    let mut am: account::ActiveModel = src.into();
    am.held_minor = Set(held);
    am.version = Set(version);
    am.updated_at = Set(now());
    Ok(am.update(txn).await?)
}

fn replay(existing: transfer::Model, fingerprint: &str) -> LedgerResult<Initiated> {
    if existing.request_fingerprint.as_deref() != Some(fingerprint) {
        return Err(LedgerError::IdempotencyConflict);
    }
    Ok(Initiated {
        transfer: existing,
        created: false,
        events: Vec::new(),
    })
}

async fn find_by_key(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    key: &IdempotencyKey,
) -> LedgerResult<Option<transfer::Model>> {
    Ok(transfer::Entity::find()
        .filter(transfer::Column::InitiatedBy.eq(user_id))
        .filter(transfer::Column::IdempotencyKey.eq(key.as_str()))
        .one(db)
        .await?)
}

/// Parses and resolves the request; nothing here depends on balances.
async fn plan(
    db: &DatabaseConnection,
    viewer: &Viewer,
    request: MoneyRequest,
    amount: &str,
) -> LedgerResult<Plan> {
    match request {
        MoneyRequest::Deposit { account_id } => {
            let acc = accounts::get_for_viewer(db, viewer, account_id).await?;
            let currency = Currency::parse(&acc.currency)?;
            let amount = Amount::parse(amount, currency)?;
            let fingerprint =
                request_fingerprint(&[DEPOSIT, &acc.id.to_string(), &amount.minor().to_string()]);
            Ok(Plan {
                kind: DEPOSIT,
                amount,
                currency,
                source: None,
                destination: Some(acc),
                memo: None,
                fingerprint,
                bill: None,
            })
        }
        MoneyRequest::Withdraw { account_id } => {
            let acc = accounts::get_for_viewer(db, viewer, account_id).await?;
            let currency = Currency::parse(&acc.currency)?;
            let amount = Amount::parse(amount, currency)?;
            let fingerprint = request_fingerprint(&[
                WITHDRAWAL,
                &acc.id.to_string(),
                &amount.minor().to_string(),
            ]);
            Ok(Plan {
                kind: WITHDRAWAL,
                amount,
                currency,
                source: Some(acc),
                destination: None,
                memo: None,
                fingerprint,
                bill: None,
            })
        }
        MoneyRequest::Transfer {
            from_account_id,
            to,
            memo,
        } => {
            let src = owned_source(db, viewer, from_account_id).await?;
            let currency = Currency::parse(&src.currency)?;
            let amount = Amount::parse(amount, currency)?;
            let memo = match memo.map(|m| m.trim().to_owned()) {
                Some(m) if m.chars().count() > 140 => {
                    return Err(LedgerError::bad_input("memo is at most 140 characters"));
                }
                Some(m) if m.is_empty() => None,
                m => m,
            };
            let number = match to {
                Destination::Number(n) => AccountNumber::parse(&n)?,
                Destination::Contact(id) => {
                    let c = contact::Entity::find_by_id(id)
                        .filter(contact::Column::OwnerId.eq(viewer.user_id))
                        .one(db)
                        .await?
                        .ok_or(LedgerError::NotFound("contact"))?;
                    AccountNumber::parse(&c.account_number)?
                }
            };
            let dst = accounts::find_by_number(db, &number).await?;
            if dst.id == src.id {
                return Err(LedgerError::bad_input(
                    "source and destination must be different accounts",
                ));
            }
            let fingerprint = request_fingerprint(&[
                TRANSFER,
                &src.id.to_string(),
                &dst.id.to_string(),
                &amount.minor().to_string(),
                memo.as_deref().unwrap_or(""),
            ]);
            Ok(Plan {
                kind: TRANSFER,
                amount,
                currency,
                source: Some(src),
                destination: Some(dst),
                memo,
                fingerprint,
                bill: None,
            })
        }
        MoneyRequest::BillPayment {
            from_account_id,
            bill,
        } => {
            let src = owned_source(db, viewer, from_account_id).await?;
            let currency = Currency::parse(&src.currency)?;
            if !bill.bill.currency.eq_ignore_ascii_case(currency.code())
                || bill.provider.currency != currency.code()
            {
                return Err(LedgerError::CurrencyMismatch);
            }
            let amount = Amount::parse(&bill.bill.amount, currency)?;
            let dst = account::Entity::find_by_id(bill.provider.settlement_account_id)
                .one(db)
                .await?
                .ok_or_else(|| LedgerError::internal("provider settlement account missing"))?;
            let memo = Some(format!(
                "{} bill {}",
                bill.provider.name, bill.bill.reference
            ));
            let fingerprint = request_fingerprint(&[
                BILL_PAYMENT,
                &src.id.to_string(),
                &bill.provider.id.to_string(),
                &bill.bill.reference,
                &amount.minor().to_string(),
            ]);
            Ok(Plan {
                kind: BILL_PAYMENT,
                amount,
                currency,
                source: Some(src),
                destination: Some(dst),
                memo,
                fingerprint,
                bill: Some(bill),
            })
        }
    }
}

/// Transfers and bill payments leave only from the viewer's own account,
/// admins included: an admin acting on a customer's money uses deposit,
/// withdraw or reverseTransfer, which are the audited paths.
async fn owned_source(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: Uuid,
) -> LedgerResult<account::Model> {
    let a = accounts::get_for_viewer(db, viewer, id).await?;
    if a.owner_id != Some(viewer.user_id) {
        return Err(LedgerError::NotFound("account"));
    }
    Ok(a)
}

/// The rules a new request must pass (balances are checked under lock later).
fn check_business_rules(viewer: &Viewer, policy: MoneyPolicy, plan: &Plan) -> LedgerResult<()> {
    if plan.kind == DEPOSIT {
        check_deposit_limit(plan.amount, plan.currency)?;
    }
    if plan.source.is_some()
        && policy.email_verification_required
        && !viewer.email_verified
        && !viewer.is_admin()
    {
        return Err(LedgerError::EmailNotVerified);
    }
    if let Some(src) = &plan.source {
        ensure_active(src)?;
    }
    if let Some(bill) = &plan.bill
        && bill.bill.status.eq_ignore_ascii_case("PAID")
    {
        return Err(LedgerError::bad_input(
            "the provider reports this bill as already paid",
        ));
    }
    if let Some(dst) = &plan.destination {
        ensure_active(dst)?;
        if dst.currency != plan.currency.code() {
            return Err(LedgerError::CurrencyMismatch);
        }
    }
    Ok(())
}

pub fn balance_event(a: &account::Model, transfer_id: Option<Uuid>) -> LedgerEvent {
    LedgerEvent::Balance(BalanceChanged {
        account_id: a.id,
        owner_id: a.owner_id,
        currency: a.currency.clone(),
        balance_minor: a.balance_minor,
        available_minor: available_minor(a),
        transfer_id,
        version: a.version,
        at: a.updated_at,
    })
}

pub fn transfer_event(
    t: &transfer::Model,
    src: Option<&account::Model>,
    dst: Option<&account::Model>,
) -> LedgerEvent {
    let mut party_user_ids: Vec<Uuid> = [src, dst]
        .into_iter()
        .flatten()
        .filter_map(|a| a.owner_id)
        .collect();
    party_user_ids.push(t.initiated_by);
    party_user_ids.sort();
    party_user_ids.dedup();
    LedgerEvent::Transfer(TransferChanged {
        transfer_id: t.id,
        status: t.status.clone(),
        kind: t.kind.clone(),
        row: Some(Box::new(t.clone())),
        party_user_ids,
        account_ids: [t.source_account_id, t.destination_account_id]
            .into_iter()
            .flatten()
            .collect(),
    })
}

/// Whether the viewer may see this transfer: admins, the initiator, or an
/// owner of either side.
pub async fn get_for_viewer(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: Uuid,
) -> LedgerResult<transfer::Model> {
    let t = transfer::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(LedgerError::NotFound("transfer"))?;
    if viewer.is_admin() || t.initiated_by == viewer.user_id {
        return Ok(t);
    }
    let ids: Vec<Uuid> = [t.source_account_id, t.destination_account_id]
        .into_iter()
        .flatten()
        .collect();
    let owned = account::Entity::find()
        .filter(account::Column::Id.is_in(ids))
        .filter(account::Column::OwnerId.eq(viewer.user_id))
        .count(db)
        .await?;
    if owned > 0 {
        Ok(t)
    } else {
        Err(LedgerError::NotFound("transfer"))
    }
}

/// Filters of the transfer lists.
#[derive(Clone, Debug, Default)]
pub struct TransferFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
}

/// Transfers touching the given accounts (None: every transfer, for admins).
pub async fn list(
    db: &impl ConnectionTrait,
    account_ids: Option<Vec<Uuid>>,
    filter: &TransferFilter,
    page: PageRequest,
) -> LedgerResult<Page<transfer::Model>> {
    let mut q = transfer::Entity::find();
    let ordering = if account_ids.is_some() {
        crate::page::Ordering::AfterFilter
    } else {
        crate::page::Ordering::ByIndex
    };
    if let Some(ids) = account_ids {
        q = q.filter(
            Condition::any()
                .add(transfer::Column::SourceAccountId.is_in(ids.clone()))
                .add(transfer::Column::DestinationAccountId.is_in(ids)),
        );
    }
    if let Some(s) = &filter.status {
        q = q.filter(transfer::Column::Status.eq(s.as_str()));
    }
    if let Some(k) = &filter.kind {
        q = q.filter(transfer::Column::Kind.eq(k.as_str()));
    }
    crate::page::fetch_ordered(
        db,
        q,
        transfer::Column::CreatedAt,
        transfer::Column::Id,
        page,
        ordering,
    )
    .await
}

/// The ids of the viewer's own accounts, for "the viewer's transfers".
pub async fn owned_account_ids(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> LedgerResult<Vec<Uuid>> {
    Ok(account::Entity::find()
        .filter(account::Column::OwnerId.eq(user_id))
        .select_only()
        .column(account::Column::Id)
        .into_tuple::<Uuid>()
        .all(db)
        .await?)
}

/// Transfers still PENDING whose job was last handed over before `before`;
/// marks them as handed over again so concurrent sweeps don't double up.
pub async fn claim_stale_pending(
    db: &DatabaseConnection,
    before: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> LedgerResult<Vec<Uuid>> {
    let txn = db.begin().await?;
    let ids: Vec<Uuid> = transfer::Entity::find()
        .filter(transfer::Column::Status.eq(PENDING))
        .filter(transfer::Column::EnqueuedAt.lt(before))
        .select_only()
        .column(transfer::Column::Id)
        .order_by_asc(transfer::Column::EnqueuedAt)
        .limit(limit)
        .into_tuple::<Uuid>()
        .all(&txn)
        .await?;
    if !ids.is_empty() {
        transfer::Entity::update_many()
            .col_expr(
                transfer::Column::EnqueuedAt,
                sea_orm::sea_query::Expr::value(now()),
            )
            .filter(transfer::Column::Id.is_in(ids.clone()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(ids)
}

/// Starts a REVERSAL that moves a completed transfer's money back, through
/// the normal hold-then-settle path. A transfer is reversed at most once
/// (unique index on `reversal_of`); the original recipient's available
/// balance must cover it.
pub async fn reverse(
    db: &DatabaseConnection,
    admin: &Viewer,
    original_id: Uuid,
    reason: &str,
) -> LedgerResult<Initiated> {
    admin.require_admin()?;
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(LedgerError::bad_input("reason must be 1 to 500 characters"));
    }
    let original = transfer::Entity::find_by_id(original_id)
        .one(db)
        .await?
        .ok_or(LedgerError::NotFound("transfer"))?;
    if original.status != COMPLETED {
        return Err(LedgerError::bad_input(
            "only a completed transfer can be reversed",
        ));
    }
    if original.kind == REVERSAL {
        return Err(LedgerError::bad_input("a reversal cannot be reversed"));
    }
    let already = transfer::Entity::find()
        .filter(transfer::Column::ReversalOf.eq(original.id))
        .one(db)
        .await?;
    if let Some(existing) = already {
        if existing.status == FAILED {
            return Err(LedgerError::bad_input(
                "the earlier reversal of this transfer failed; contact engineering",
            ));
        }
        return Err(LedgerError::bad_input(
            "this transfer has already been reversed",
        ));
    }
    // Money flows back: the original destination pays, the source receives.
    let (source, destination) = (original.destination_account_id, original.source_account_id);
    let txn = begin_write(db).await?;
    let t = now();
    let row = transfer::ActiveModel {
        id: Set(Uuid::now_v7()),
        kind: Set(REVERSAL.into()),
        status: Set(PENDING.into()),
        amount_minor: Set(original.amount_minor),
        currency: Set(original.currency.clone()),
        source_account_id: Set(source),
        destination_account_id: Set(destination),
        initiated_by: Set(admin.user_id),
        idempotency_key: Set(Some(format!("reversal:{}", original.id))),
        request_fingerprint: Set(Some(request_fingerprint(&[
            REVERSAL,
            &original.id.to_string(),
        ]))),
        memo: Set(Some(format!("Reversal of {}: {reason}", original.id))),
        failure_reason: Set(None),
        hold_minor: Set(if source.is_some() {
            original.amount_minor
        } else {
            0
        }),
        reversal_of: Set(Some(original.id)),
        enqueued_at: Set(t),
        created_at: Set(t),
        settled_at: Set(None),
    };
    let inserted = match row.insert(&txn).await {
        Ok(m) => m,
        Err(e) if is_unique_violation(&e) => {
            return Err(LedgerError::bad_input(
                "this transfer has already been reversed",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let mut events = Vec::new();
    let mut src_model = None;
    if let Some(src) = source {
        let src = place_hold(&txn, src, Amount::from_minor(original.amount_minor)).await?;
        events.push(balance_event(&src, Some(inserted.id)));
        src_model = Some(src);
    }
    crate::admin::audit(
        &txn,
        admin,
        "REVERSE_TRANSFER",
        Some(original.id),
        Some(reason),
    )
    .await?;
    txn.commit().await?;
    events.push(transfer_event(&inserted, src_model.as_ref(), None));
    tracing::info!(transfer.id = %inserted.id, reversal_of = %original.id, "reversal accepted");
    Ok(Initiated {
        transfer: inserted,
        created: true,
        events,
    })
}
