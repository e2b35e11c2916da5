//! The asynchronous half of a transfer: post it to the ledger or fail it.
//!
//! `settle` is idempotent: it locks the transfer row first and does nothing
//! unless the transfer is still `PENDING`, and the `(transfer_id, leg)`
//! unique index makes a second posting impossible even if that check were
//! bypassed. So a job delivered twice, or two workers racing on one job,
//! change nothing the second time.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
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

pub async fn settle(
    db: &DatabaseConnection,
    transfer_id: Uuid,
) -> LedgerResult<(Outcome, Vec<LedgerEvent>)> {
    // Make sure the system account exists before taking locks.
    let Some(peek) = transfer::Entity::find_by_id(transfer_id).one(db).await? else {
        tracing::warn!(transfer.id = %transfer_id, "settlement job for unknown transfer; dropped");
        return Ok((Outcome::Skipped, vec![]));
    };
    if peek.status != PENDING {
        return Ok((Outcome::Skipped, vec![]));
    }
    let currency = Currency::parse(&peek.currency)?;
    let system_id = ensure_system_account(db, currency).await?;

    let txn = begin_write(db).await?;
    let Some(t) = transfer::Entity::find_by_id(transfer_id)
        .lock_exclusive()
        .one(&txn)
        .await?
    else {
        return Ok((Outcome::Skipped, vec![]));
    };
    if t.status != PENDING {
        return Ok((Outcome::Skipped, vec![]));
    }
    let source_id = t.source_account_id.unwrap_or(system_id);
    let destination_id = t.destination_account_id.unwrap_or(system_id);
    // Fixed lock order (by id) so two settlements never deadlock.
    let locked = account::Entity::find()
        .filter(account::Column::Id.is_in([source_id, destination_id]))
        .order_by_asc(account::Column::Id)
        .lock_exclusive()
        .all(&txn)
        .await?;
    let find = |id: Uuid| {
        locked
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .ok_or(LedgerError::internal("account of transfer missing"))
    };
    let source = find(source_id)?;
    let destination = find(destination_id)?;
    let t_now = now();

    let mut events = Vec::new();
    // Both parties' owners hear of the outcome, whichever way it goes.
    let parties = (source.clone(), destination.clone());
    let outcome = match decide(&t, &source, &destination) {
        Ok(()) => {
            let legs = postings(&t, source.id, destination.id);
            debug_assert_eq!(legs.iter().map(|l| l.2).sum::<i64>(), 0);
            if legs.iter().map(|l| l.2).sum::<i64>() != 0 {
                return Err(LedgerError::internal("postings do not balance"));
            }
            for (leg, account_id, amount_minor) in legs {
                ledger_entry::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    transfer_id: Set(t.id),
                    leg: Set(leg.into()),
                    account_id: Set(account_id),
                    amount_minor: Set(amount_minor),
                    currency: Set(t.currency.clone()),
                    created_at: Set(t_now),
                }
                .insert(&txn)
                .await?;
            }
            let src = apply(&txn, source, -t.amount_minor, -t.hold_minor).await?;
            let dst = apply(&txn, destination, t.amount_minor, 0).await?;
            events.extend(
                [&src, &dst]
                    .into_iter()
                    .filter(|a| !a.is_system)
                    .map(|a| transfers::balance_event(a, Some(t.id))),
            );
            events.extend(notify_settled(&txn, &t, &src, &dst, currency).await?);
            if t.kind == transfers::BILL_PAYMENT
                && let Some(p) = crate::bills::on_settled(&txn, t.id, true).await?
            {
                events.push(LedgerEvent::BillPaymentSettled {
                    payment_id: p.id,
                    user_id: t.initiated_by,
                });
            }
            Outcome::Completed
        }
        Err(reason) => {
            if t.hold_minor > 0 {
                let src = apply(&txn, source, 0, -t.hold_minor).await?;
                events.push(transfers::balance_event(&src, Some(t.id)));
            }
            events.extend(notify_failed(&txn, &t, reason, currency).await?);
            if t.kind == transfers::BILL_PAYMENT {
                crate::bills::on_settled(&txn, t.id, false).await?;
                events.push(LedgerEvent::BillsChanged {
                    user_id: t.initiated_by,
                });
            }
            Outcome::Failed(reason)
        }
    };

    let mut am: transfer::ActiveModel = t.clone().into();
    match outcome {
        Outcome::Completed => {
            am.status = Set(COMPLETED.into());
            am.settled_at = Set(Some(t_now));
        }
        Outcome::Failed(reason) => {
            am.status = Set(FAILED.into());
            am.failure_reason = Set(Some(reason.into()));
        }
        Outcome::Skipped => {}
    }
    am.hold_minor = Set(0);
    let settled = am.update(&txn).await?;
    txn.commit().await?;
    events.push(transfers::transfer_event(
        &settled,
        Some(&parties.0),
        Some(&parties.1),
    ));
    tracing::info!(transfer.id = %settled.id, transfer.status = %settled.status, "transfer settled");
    Ok((outcome, events))
}

/// Moves an account's balance and hold, bumping its version.
async fn apply(
    txn: &impl ConnectionTrait,
    a: account::Model,
    balance_delta: i64,
    held_delta: i64,
) -> LedgerResult<account::Model> {
    let balance = a.balance_minor + balance_delta;
    let held = a.held_minor + held_delta;
    let version = a.version + 1;
    let mut am: account::ActiveModel = a.into();
    am.balance_minor = Set(balance);
    am.held_minor = Set(held);
    am.version = Set(version);
    am.updated_at = Set(now());
    Ok(am.update(txn).await?)
}

async fn notify_settled(
    txn: &impl ConnectionTrait,
    t: &transfer::Model,
    src: &account::Model,
    dst: &account::Model,
    currency: Currency,
) -> LedgerResult<Vec<LedgerEvent>> {
    let mut out = Vec::new();
    let money = format!(
        "{} {}",
        Amount::from_minor(t.amount_minor).format(currency),
        currency.code()
    );
    let key = format!("transfer:{}:completed", t.id);
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
        out.extend(
            notify::record(txn, owner, kind, &subject, &body, &key)
                .await?
                .map(|id| LedgerEvent::Notification {
                    user_id: owner,
                    notification_id: id,
                }),
        );
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
        out.extend(
            notify::record(txn, owner, kind, &subject, &body, &key)
                .await?
                .map(|id| LedgerEvent::Notification {
                    user_id: owner,
                    notification_id: id,
                }),
        );
    }
    Ok(out)
}

async fn notify_failed(
    txn: &impl ConnectionTrait,
    t: &transfer::Model,
    reason: &str,
    currency: Currency,
) -> LedgerResult<Vec<LedgerEvent>> {
    let money = format!(
        "{} {}",
        Amount::from_minor(t.amount_minor).format(currency),
        currency.code()
    );
    let subject = format!("Transfer of {money} failed");
    let body = format!(
        "{subject}: {reason}. Any hold on your account was released.\nTransfer {}.\n",
        t.id
    );
    let id = notify::record(
        txn,
        t.initiated_by,
        "TRANSFER_FAILED",
        &subject,
        &body,
        &format!("transfer:{}:failed", t.id),
    )
    .await?;
    Ok(id
        .map(|id| LedgerEvent::Notification {
            user_id: t.initiated_by,
            notification_id: id,
        })
        .into_iter()
        .collect())
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
}
