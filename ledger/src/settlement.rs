//! The asynchronous half of a transfer: post it to the ledger or fail it.
//!
//! `settle` is idempotent: it locks the transfer row first and does nothing
//! unless the transfer is still `PENDING`, and the `(transfer_id, leg)`
//! unique index makes a second posting impossible even if that check were
//! bypassed. So a job delivered twice, or two workers racing on one job,
//! change nothing the second time.

use std::collections::{BTreeMap, HashMap};

use sea_orm::sea_query::{CaseStatement, Expr, LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use uuid::Uuid;

use entity::{account, ledger_entry, transfer};

use crate::accounts::{CLOSED, FROZEN, ensure_system_account};
use crate::db::{begin_write, now};
use crate::events::LedgerEvent;
use crate::money::{Amount, Currency};
use crate::notify;
use crate::transfers::{self, COMPLETED, FAILED, PENDING};
use crate::{LedgerError, LedgerResult};

/// What a settlement attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed(&'static str),
    /// Already final, or unknown: nothing to do.
    Skipped,
}

/// Decides a pending transfer given the locked accounts. Pure, so the rules
/// are tested without a database.
pub fn decide(
    t: &transfer::Model,
    source: &account::Model,
    destination: &account::Model,
) -> Result<(), &'static str> {
    for a in [source, destination] {
        if a.is_system {
            continue;
        }
        match a.status.as_str() {
            FROZEN => return Err("ACCOUNT_FROZEN"),
            CLOSED => return Err("ACCOUNT_CLOSED"),
            _ => {}
        }
        if a.currency != t.currency {
            return Err("CURRENCY_MISMATCH");
        }
    }
    // The hold guarantees this; checked again because money is at stake.
    if !source.is_system && source.balance_minor < t.amount_minor {
        return Err("INSUFFICIENT_FUNDS");
    }
    Ok(())
}

/// The two ledger legs of a settled transfer; they always sum to zero.
pub fn postings(
    t: &transfer::Model,
    source_id: Uuid,
    destination_id: Uuid,
) -> [(&'static str, Uuid, i64); 2] {
    [
        ("DEBIT", source_id, -t.amount_minor),
        ("CREDIT", destination_id, t.amount_minor),
    ]
}

/// The result of settling one transfer of a batch.
#[derive(Clone, Debug)]
pub struct Settled {
    pub transfer_id: Uuid,
    pub outcome: Outcome,
    /// To publish after the commit, in order.
    pub events: Vec<LedgerEvent>,
}

/// Settles one transfer (a batch of one).
pub async fn settle(
    db: &DatabaseConnection,
    transfer_id: Uuid,
) -> LedgerResult<(Outcome, Vec<LedgerEvent>)> {
    let settled = settle_batch(db, &[transfer_id])
        .await?
        .pop()
        .ok_or_else(|| LedgerError::internal("batch of one settled nothing"))?;
    Ok((settled.outcome, settled.events))
}

/// Settles many pending transfers in one database transaction, with a fixed
/// number of statements whatever the batch size: round trips, not rows, are
/// what limits a ledger on PostgreSQL.
///
/// Transfers are decided one after another, in creation order, against the
/// running balances of the locked accounts, so the result is the same as
/// settling them one by one; a transfer that fails (frozen account, missing
/// funds) fails alone and its neighbours settle. A database error fails the
/// whole transaction, which changes nothing: the caller retries the
/// transfers one by one so that one poisoned transfer cannot block the rest.
///
/// Returns one `Settled` per distinct id, in the order of `ids`; transfers
/// already final, unknown, or being settled by another worker right now are
/// `Skipped` (that worker, or the recovery sweep, finishes them).
pub async fn settle_batch(db: &DatabaseConnection, ids: &[Uuid]) -> LedgerResult<Vec<Settled>> {
    let mut wanted: Vec<Uuid> = Vec::with_capacity(ids.len());
    for id in ids {
        if !wanted.contains(id) {
            wanted.push(*id);
        }
    }
    let skipped = |id: Uuid| Settled {
        transfer_id: id,
        outcome: Outcome::Skipped,
        events: vec![],
    };

    // System accounts are created outside the transaction, before any lock:
    // creating one takes a unique-index lock that must not join the order.
    let peek: Vec<(Uuid, String)> = transfer::Entity::find()
        .select_only()
        .column(transfer::Column::Id)
        .column(transfer::Column::Currency)
        .filter(transfer::Column::Id.is_in(wanted.clone()))
        .filter(transfer::Column::Status.eq(PENDING))
        .into_tuple()
        .all(db)
        .await?;
    if peek.is_empty() {
        return Ok(wanted.into_iter().map(skipped).collect());
    }
    let mut system: HashMap<String, Uuid> = HashMap::new();
    for (_, code) in &peek {
        if !system.contains_key(code) {
            let id = ensure_system_account(db, Currency::parse(code)?).await?;
            system.insert(code.clone(), id);
        }
    }

    let txn = begin_write(db).await?;
    // Lock order is fixed — transfers by id, then accounts by id — so
    // concurrent batches and single settlements never deadlock. A transfer
    // locked by another worker is skipped rather than waited for: that
    // worker holds it already, and waiting would only serialise the two.
    let pending = transfer::Entity::find()
        .filter(transfer::Column::Id.is_in(peek.iter().map(|p| p.0)))
        .filter(transfer::Column::Status.eq(PENDING))
        .order_by_asc(transfer::Column::Id)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .all(&txn)
        .await?;
    if pending.is_empty() {
        return Ok(wanted.into_iter().map(skipped).collect());
    }
    let mut account_ids: Vec<Uuid> = Vec::with_capacity(pending.len() * 2);
    for t in &pending {
        let (s, d) = parties_of(t, &system)?;
        account_ids.push(s);
        account_ids.push(d);
    }
    account_ids.sort();
    account_ids.dedup();
    let locked = account::Entity::find()
        .filter(account::Column::Id.is_in(account_ids))
        .order_by_asc(account::Column::Id)
        .lock_exclusive()
        .all(&txn)
        .await?;

    let t_now = now();
    let plan = plan_batch(pending, locked, &system, t_now)?;
    write_plan(&txn, &plan, t_now).await?;

    // Notifications and bill bookkeeping, per transfer, in the same
    // transaction: an outcome is never committed without its notice.
    let mut drafts = Vec::new();
    let mut drafts_of = Vec::with_capacity(plan.decisions.len());
    for d in &plan.decisions {
        let currency = Currency::parse(&d.transfer.currency)?;
        let these = match d.result {
            Ok(()) => settled_notices(&d.transfer, &d.source, &d.destination, currency),
            Err(reason) => vec![failed_notice(&d.transfer, reason, currency)],
        };
        drafts_of.push(these.len());
        drafts.extend(these);
    }
    let mut recorded = notify::record_many(&txn, drafts).await?.into_iter();

    let mut out: HashMap<Uuid, Settled> = HashMap::with_capacity(plan.decisions.len());
    for (d, n_drafts) in plan.decisions.iter().zip(drafts_of) {
        let t = &d.transfer;
        let mut events: Vec<LedgerEvent> = d
            .balance_snapshots
            .iter()
            .map(|a| transfers::balance_event(a, Some(t.id)))
            .collect();
        let recipients: Vec<Uuid> = match d.result {
            Ok(()) => [&d.source, &d.destination]
                .into_iter()
                .filter(|a| !a.is_system)
                .filter_map(|a| a.owner_id)
                .collect(),
            Err(_) => vec![t.initiated_by],
        };
        for user_id in recipients.into_iter().take(n_drafts) {
            if let Some(Some(notification_id)) = recorded.next() {
                events.push(LedgerEvent::Notification {
                    user_id,
                    notification_id,
                });
            }
        }
        if t.kind == transfers::BILL_PAYMENT {
            let completed = d.result.is_ok();
            let payment = crate::bills::on_settled(&txn, t.id, completed).await?;
            match payment {
                Some(p) if completed => events.push(LedgerEvent::BillPaymentSettled {
                    payment_id: p.id,
                    user_id: t.initiated_by,
                }),
                _ if !completed => events.push(LedgerEvent::BillsChanged {
                    user_id: t.initiated_by,
                }),
                _ => {}
            }
        }
        events.push(transfers::transfer_event(
            t,
            Some(&d.source),
            Some(&d.destination),
        ));
        let outcome = match d.result {
            Ok(()) => Outcome::Completed,
            Err(reason) => Outcome::Failed(reason),
        };
        out.insert(
            t.id,
            Settled {
                transfer_id: t.id,
                outcome,
                events,
            },
        );
    }
    txn.commit().await?;
    for d in &plan.decisions {
        tracing::info!(transfer.id = %d.transfer.id, transfer.status = %d.transfer.status, batch.size = plan.decisions.len(), "transfer settled");
    }
    Ok(wanted
        .into_iter()
        .map(|id| out.remove(&id).unwrap_or_else(|| skipped(id)))
        .collect())
}

/// The accounts a transfer moves money between; deposits and withdrawals
/// use the currency's system account on the cash side.
fn parties_of(t: &transfer::Model, system: &HashMap<String, Uuid>) -> LedgerResult<(Uuid, Uuid)> {
    let system_id = || {
        system
            .get(&t.currency)
            .copied()
            .ok_or_else(|| LedgerError::internal("system account of currency missing"))
    };
    let source = match t.source_account_id {
        Some(id) => id,
        None => system_id()?,
    };
    let destination = match t.destination_account_id {
        Some(id) => id,
        None => system_id()?,
    };
    Ok((source, destination))
}

/// One transfer's decision within a batch.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The row as it is to be written: final status, hold released.
    pub transfer: transfer::Model,
    pub result: Result<(), &'static str>,
    /// Both parties as they stand right after this transfer.
    pub source: account::Model,
    pub destination: account::Model,
    /// Customer accounts whose balance or hold this transfer changed, as
    /// they stand right after it: one balance event each.
    pub balance_snapshots: Vec<account::Model>,
    /// The ledger legs posted (empty when the transfer failed).
    pub postings: Vec<(&'static str, Uuid, i64)>,
}

/// What a batch will write.
#[derive(Clone, Debug)]
pub struct BatchPlan {
    pub decisions: Vec<Decision>,
    /// Final state of every account the batch changed, ordered by id.
    pub accounts: Vec<account::Model>,
}

/// Decides a batch of locked pending transfers against the locked accounts.
/// Pure: the rules of a batch are tested without a database.
///
/// Each transfer sees the balances its predecessors left, and each change
/// bumps the account's version by one, so subscribers see the same
/// sequence of balances (and versions) as if the transfers had settled one
/// per transaction.
pub fn plan_batch(
    mut pending: Vec<transfer::Model>,
    locked: Vec<account::Model>,
    system: &HashMap<String, Uuid>,
    at: chrono::DateTime<chrono::Utc>,
) -> LedgerResult<BatchPlan> {
    // UUIDv7 ids sort by creation time: first come, first served.
    pending.sort_by_key(|t| t.id);
    let mut state: HashMap<Uuid, account::Model> = locked.into_iter().map(|a| (a.id, a)).collect();
    let mut changed: Vec<Uuid> = Vec::new();
    let mut decisions = Vec::with_capacity(pending.len());
    for t in pending {
        let (source_id, destination_id) = parties_of(&t, system)?;
        if source_id == destination_id {
            return Err(LedgerError::internal("transfer to its own source"));
        }
        let get = |id: Uuid| {
            state
                .get(&id)
                .cloned()
                .ok_or_else(|| LedgerError::internal("account of transfer missing"))
        };
        let (mut source, mut destination) = (get(source_id)?, get(destination_id)?);
        let result = decide(&t, &source, &destination);
        let mut snapshots = Vec::new();
        let mut legs = Vec::new();
        match result {
            Ok(()) => {
                legs.extend(postings(&t, source.id, destination.id));
                if legs.iter().map(|l| l.2).sum::<i64>() != 0 {
                    return Err(LedgerError::internal("postings do not balance"));
                }
                bump(&mut source, -t.amount_minor, -t.hold_minor, at);
                bump(&mut destination, t.amount_minor, 0, at);
                snapshots.extend([&source, &destination].into_iter().cloned());
            }
            Err(_) if t.hold_minor > 0 => {
                bump(&mut source, 0, -t.hold_minor, at);
                snapshots.push(source.clone());
            }
            Err(_) => {}
        }
        snapshots.retain(|a| !a.is_system);
        for a in [&source, &destination] {
            if a.version != state[&a.id].version && !changed.contains(&a.id) {
                changed.push(a.id);
            }
        }
        state.insert(source.id, source.clone());
        state.insert(destination.id, destination.clone());

        let mut row = t;
        match result {
            Ok(()) => {
                row.status = COMPLETED.into();
                row.settled_at = Some(at);
            }
            Err(reason) => {
                row.status = FAILED.into();
                row.failure_reason = Some(reason.into());
            }
        }
        row.hold_minor = 0;
        decisions.push(Decision {
            transfer: row,
            result,
            source,
            destination,
            balance_snapshots: snapshots,
            postings: legs,
        });
    }
    changed.sort();
    let accounts = changed.iter().map(|id| state[id].clone()).collect();
    Ok(BatchPlan {
        decisions,
        accounts,
    })
}

/// Moves an account's balance and hold by one change, bumping its version.
fn bump(
    a: &mut account::Model,
    balance_delta: i64,
    held_delta: i64,
    at: chrono::DateTime<chrono::Utc>,
) {
    a.balance_minor += balance_delta;
    a.held_minor += held_delta;
    a.version += 1;
    a.updated_at = at;
}

/// Writes a plan with a fixed number of statements: one multi-row insert of
/// ledger entries, one update of all changed accounts, one update per
/// transfer outcome (completed, and each failure reason).
async fn write_plan(
    txn: &impl ConnectionTrait,
    plan: &BatchPlan,
    at: chrono::DateTime<chrono::Utc>,
) -> LedgerResult<()> {
    let entries: Vec<ledger_entry::ActiveModel> = plan
        .decisions
        .iter()
        .flat_map(|d| {
            d.postings
                .iter()
                .map(
                    move |&(leg, account_id, amount_minor)| ledger_entry::ActiveModel {
                        id: Set(Uuid::now_v7()),
                        transfer_id: Set(d.transfer.id),
                        leg: Set(leg.into()),
                        account_id: Set(account_id),
                        amount_minor: Set(amount_minor),
                        currency: Set(d.transfer.currency.clone()),
                        created_at: Set(at),
                    },
                )
        })
        .collect();
    if !entries.is_empty() {
        ledger_entry::Entity::insert_many(entries)
            .exec_without_returning(txn)
            .await?;
    }

    if !plan.accounts.is_empty() {
        // One UPDATE with a CASE per column sets every account to the state
        // the plan computed under its lock.
        let case = |value: &dyn Fn(&account::Model) -> i64, column: account::Column| {
            let mut case = CaseStatement::new();
            for a in &plan.accounts {
                case = case.case(account::Column::Id.eq(a.id), value(a));
            }
            let expr: Expr = case.finally(Expr::col(column)).into();
            expr
        };
        account::Entity::update_many()
            .col_expr(
                account::Column::BalanceMinor,
                case(&|a| a.balance_minor, account::Column::BalanceMinor),
            )
            .col_expr(
                account::Column::HeldMinor,
                case(&|a| a.held_minor, account::Column::HeldMinor),
            )
            .col_expr(
                account::Column::Version,
                case(&|a| a.version, account::Column::Version),
            )
            .col_expr(account::Column::UpdatedAt, Expr::value(at))
            .filter(account::Column::Id.is_in(plan.accounts.iter().map(|a| a.id)))
            .exec(txn)
            .await?;
    }

    let mut by_outcome: BTreeMap<Option<&'static str>, Vec<Uuid>> = BTreeMap::new();
    for d in &plan.decisions {
        by_outcome
            .entry(d.result.err())
            .or_default()
            .push(d.transfer.id);
    }
    for (failure, ids) in by_outcome {
        let mut update = transfer::Entity::update_many()
            .col_expr(transfer::Column::HoldMinor, Expr::value(0i64))
            .filter(transfer::Column::Id.is_in(ids));
        update = match failure {
            None => update
                .col_expr(transfer::Column::Status, Expr::value(COMPLETED))
                .col_expr(transfer::Column::SettledAt, Expr::value(Some(at))),
            Some(reason) => update
                .col_expr(transfer::Column::Status, Expr::value(FAILED))
                .col_expr(transfer::Column::FailureReason, Expr::value(reason)),
        };
        update.exec(txn).await?;
    }
    Ok(())
}

fn money(t: &transfer::Model, currency: Currency) -> String {
    format!(
        "{} {}",
        Amount::from_minor(t.amount_minor).format(currency),
        currency.code()
    )
}

/// What each customer party hears of a completed transfer.
fn settled_notices(
    t: &transfer::Model,
    src: &account::Model,
    dst: &account::Model,
    currency: Currency,
) -> Vec<notify::Draft> {
    let money = money(t, currency);
    let dedup_key = format!("transfer:{}:completed", t.id);
    let mut out = Vec::new();
    if let Some(owner) = src.owner_id.filter(|_| !src.is_system) {
        let (kind, subject) = if t.kind == transfers::WITHDRAWAL {
            (
                "WITHDRAWAL_COMPLETED",
                format!("Withdrawal of {money} completed"),
            )
        } else {
            ("TRANSFER_SENT", format!("You sent {money}"))
        };
        let body = format!(
            "{subject} from account {} to {}.\nTransfer {}.\n",
            src.number,
            if dst.is_system { "cash" } else { &dst.number },
            t.id
        );
        out.push(notify::Draft {
            user_id: owner,
            kind: kind.into(),
            subject,
            body,
            dedup_key: dedup_key.clone(),
        });
    }
    if let Some(owner) = dst.owner_id.filter(|_| !dst.is_system) {
        let (kind, subject) = if t.kind == transfers::DEPOSIT {
            ("DEPOSIT_RECEIVED", format!("Deposit of {money} received"))
        } else {
            ("TRANSFER_RECEIVED", format!("You received {money}"))
        };
        let body = format!(
            "{subject} into account {}.\nTransfer {}.\n",
            dst.number, t.id
        );
        out.push(notify::Draft {
            user_id: owner,
            kind: kind.into(),
            subject,
            body,
            dedup_key: dedup_key.clone(),
        });
    }
    out
}

/// What the initiator hears of a failed transfer.
fn failed_notice(t: &transfer::Model, reason: &str, currency: Currency) -> notify::Draft {
    let subject = format!("Transfer of {} failed", money(t, currency));
    let body = format!(
        "{subject}: {reason}. Any hold on your account was released.\nTransfer {}.\n",
        t.id
    );
    notify::Draft {
        user_id: t.initiated_by,
        kind: "TRANSFER_FAILED".into(),
        subject,
        body,
        dedup_key: format!("transfer:{}:failed", t.id),
    }
}

/// One line of the trial balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrialBalanceLine {
    pub currency: String,
    pub customer_total_minor: i64,
    pub system_total_minor: i64,
}

/// Per currency: customer balances, system balances; their sum is zero
/// whenever every settlement posted balanced entries.
pub async fn trial_balance(db: &impl ConnectionTrait) -> LedgerResult<Vec<TrialBalanceLine>> {
    let rows: Vec<(String, bool, i64)> = account::Entity::find()
        .select_only()
        .column(account::Column::Currency)
        .column(account::Column::IsSystem)
        .column(account::Column::BalanceMinor)
        .into_tuple()
        .all(db)
        .await?;
    let mut lines: std::collections::BTreeMap<String, TrialBalanceLine> = Default::default();
    for (currency, is_system, balance) in rows {
        let line = lines.entry(currency.clone()).or_insert(TrialBalanceLine {
            currency,
            customer_total_minor: 0,
            system_total_minor: 0,
        });
        if is_system {
            line.system_total_minor += balance;
        } else {
            line.customer_total_minor += balance;
        }
    }
    Ok(lines.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn acc(status: &str, balance: i64, system: bool) -> account::Model {
        account::Model {
            id: Uuid::new_v4(),
            number: "000000000000".into(),
            owner_id: if system { None } else { Some(Uuid::new_v4()) },
            is_system: system,
            name: None,
            kind: "CHECKING".into(),
            currency: "USD".into(),
            status: status.into(),
            balance_minor: balance,
            held_minor: 0,
            version: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn tr(amount: i64) -> transfer::Model {
        transfer::Model {
            id: Uuid::new_v4(),
            kind: "TRANSFER".into(),
            status: PENDING.into(),
            amount_minor: amount,
            currency: "USD".into(),
            source_account_id: None,
            destination_account_id: None,
            initiated_by: Uuid::new_v4(),
            idempotency_key: None,
            request_fingerprint: None,
            memo: None,
            failure_reason: None,
            hold_minor: amount,
            reversal_of: None,
            enqueued_at: Utc::now(),
            created_at: Utc::now(),
            settled_at: None,
        }
    }

    #[test]
    fn transfer_to_a_frozen_account_fails_with_account_frozen() {
        assert_eq!(
            decide(
                &tr(100),
                &acc("ACTIVE", 500, false),
                &acc("FROZEN", 0, false)
            ),
            Err("ACCOUNT_FROZEN")
        );
    }

    #[test]
    fn transfer_from_a_frozen_account_fails_with_account_frozen() {
        assert_eq!(
            decide(
                &tr(100),
                &acc("FROZEN", 500, false),
                &acc("ACTIVE", 0, false)
            ),
            Err("ACCOUNT_FROZEN")
        );
    }

    #[test]
    fn system_accounts_may_go_negative_customers_may_not() {
        assert_eq!(
            decide(&tr(100), &acc("ACTIVE", 0, true), &acc("ACTIVE", 0, false)),
            Ok(())
        );
        assert_eq!(
            decide(
                &tr(100),
                &acc("ACTIVE", 50, false),
                &acc("ACTIVE", 0, false)
            ),
            Err("INSUFFICIENT_FUNDS")
        );
    }

    #[test]
    fn postings_always_sum_to_zero() {
        for amount in [1, 7, 1_000_000, i64::MAX / 4] {
            let p = postings(&tr(amount), Uuid::new_v4(), Uuid::new_v4());
            assert_eq!(p.iter().map(|l| l.2).sum::<i64>(), 0);
            assert!(p[0].2 < 0 && p[1].2 > 0);
        }
    }

    fn system_of(currency: &str) -> (account::Model, HashMap<String, Uuid>) {
        let cash = acc("ACTIVE", 0, true);
        let mut system = HashMap::new();
        system.insert(currency.to_owned(), cash.id);
        (cash, system)
    }

    fn between(from: &account::Model, to: &account::Model, amount: i64) -> transfer::Model {
        let mut t = tr(amount);
        // UUIDv7: later transfers sort after earlier ones, like real ones.
        t.id = Uuid::now_v7();
        t.source_account_id = Some(from.id);
        t.destination_account_id = Some(to.id);
        t
    }

    fn with_hold(mut a: account::Model, held: i64) -> account::Model {
        a.held_minor = held;
        a
    }

    #[test]
    fn a_failing_transfer_in_a_batch_does_not_fail_its_neighbours() {
        let (cash, system) = system_of("USD");
        let alice = with_hold(acc("ACTIVE", 500, false), 300);
        let bob = acc("ACTIVE", 0, false);
        let frozen = acc("FROZEN", 0, false);
        let first = between(&alice, &bob, 100);
        let to_frozen = between(&alice, &frozen, 100);
        let third = between(&alice, &bob, 100);
        let plan = plan_batch(
            vec![third.clone(), to_frozen.clone(), first.clone()],
            vec![alice.clone(), bob.clone(), frozen.clone(), cash],
            &system,
            Utc::now(),
        )
        .unwrap();
        let ids: Vec<Uuid> = plan.decisions.iter().map(|d| d.transfer.id).collect();
        assert_eq!(
            ids,
            vec![first.id, to_frozen.id, third.id],
            "settled in creation order"
        );
        let results: Vec<_> = plan.decisions.iter().map(|d| d.result).collect();
        assert_eq!(results, vec![Ok(()), Err("ACCOUNT_FROZEN"), Ok(())]);
        assert_eq!(plan.decisions[1].transfer.status, FAILED);
        assert!(plan.decisions[1].postings.is_empty());
        let final_alice = plan.accounts.iter().find(|a| a.id == alice.id).unwrap();
        assert_eq!(final_alice.balance_minor, 300, "two of three moved");
        assert_eq!(final_alice.held_minor, 0, "every hold released");
        assert_eq!(
            final_alice.version,
            alice.version + 3,
            "one version per change"
        );
        let final_bob = plan.accounts.iter().find(|a| a.id == bob.id).unwrap();
        assert_eq!(final_bob.balance_minor, 200);
        assert!(
            !plan.accounts.iter().any(|a| a.id == frozen.id),
            "an untouched account is not rewritten"
        );
        assert!(plan.decisions.iter().all(|d| d.transfer.hold_minor == 0));
    }

    #[test]
    fn a_batch_checks_funds_against_the_running_balance() {
        let (cash, system) = system_of("USD");
        // 150 booked: two transfers of 100 cannot both settle. (Holds make
        // this impossible in practice; settlement checks again anyway.)
        let alice = with_hold(acc("ACTIVE", 150, false), 200);
        let bob = acc("ACTIVE", 0, false);
        let a = between(&alice, &bob, 100);
        let b = between(&alice, &bob, 100);
        let plan = plan_batch(
            vec![a, b],
            vec![alice.clone(), bob, cash],
            &system,
            Utc::now(),
        )
        .unwrap();
        let results: Vec<_> = plan.decisions.iter().map(|d| d.result).collect();
        assert_eq!(results, vec![Ok(()), Err("INSUFFICIENT_FUNDS")]);
        let final_alice = plan.accounts.iter().find(|a| a.id == alice.id).unwrap();
        assert_eq!((final_alice.balance_minor, final_alice.held_minor), (50, 0));
    }

    #[test]
    fn balance_snapshots_replay_each_change_with_increasing_versions() {
        let (cash, system) = system_of("USD");
        let hot = acc("ACTIVE", 0, false);
        let senders: Vec<account::Model> = (0..5)
            .map(|_| with_hold(acc("ACTIVE", 1_000, false), 10))
            .collect();
        let pending: Vec<transfer::Model> = senders.iter().map(|s| between(s, &hot, 10)).collect();
        let mut locked = senders.clone();
        locked.push(hot.clone());
        locked.push(cash);
        let plan = plan_batch(pending, locked, &system, Utc::now()).unwrap();
        let hot_seen: Vec<(i64, i64)> = plan
            .decisions
            .iter()
            .flat_map(|d| d.balance_snapshots.iter())
            .filter(|a| a.id == hot.id)
            .map(|a| (a.version, a.balance_minor))
            .collect();
        assert_eq!(hot_seen, vec![(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]);
        let total: i64 = plan
            .decisions
            .iter()
            .flat_map(|d| d.postings.iter())
            .map(|p| p.2)
            .sum();
        assert_eq!(total, 0, "postings of a batch sum to zero");
    }

    #[test]
    fn deposits_and_withdrawals_post_against_the_system_account() {
        let (cash, system) = system_of("USD");
        let alice = acc("ACTIVE", 0, false);
        let mut deposit = tr(700);
        deposit.id = Uuid::now_v7();
        deposit.kind = "DEPOSIT".into();
        deposit.hold_minor = 0;
        deposit.destination_account_id = Some(alice.id);
        let mut withdrawal = tr(200);
        withdrawal.id = Uuid::now_v7();
        withdrawal.kind = "WITHDRAWAL".into();
        withdrawal.source_account_id = Some(alice.id);
        // The withdrawal's hold was placed before the deposit settled.
        let alice = with_hold(alice, 200);
        let plan = plan_batch(
            vec![deposit, withdrawal],
            vec![alice.clone(), cash.clone()],
            &system,
            Utc::now(),
        )
        .unwrap();
        // Withdrawal was created after the deposit, so it sees its money.
        assert!(plan.decisions.iter().all(|d| d.result.is_ok()));
        let balance = |id: Uuid| {
            plan.accounts
                .iter()
                .find(|a| a.id == id)
                .unwrap()
                .balance_minor
        };
        assert_eq!(balance(alice.id), 500);
        assert_eq!(balance(cash.id), -500);
        assert!(
            plan.decisions
                .iter()
                .flat_map(|d| d.balance_snapshots.iter())
                .all(|a| !a.is_system),
            "no balance event for the system account"
        );
    }
}
