//! Live views over the event bus: balances, transfers, notifications.
//!
//! Events are published only after the commit that made them true. Each
//! subscription checks ownership once at the start and then receives the
//! events of its one topic (an account, or the viewer) from the process's
//! event router; rows the events do not carry are read from the database,
//! so a client always sees committed state.

use async_graphql::{Context, ID, SimpleObject, Subscription};
use futures::{Stream, StreamExt};
use ledger::events::LedgerEvent;
use queue::Topic;

use super::access::{Access, access};
use super::notifications::Notification;
use super::scalars::{DateTime, Decimal};
use super::transfers::Transfer;
use super::{Gql, parse_id, state, viewer};
use crate::metrics::track_subscription;

#[derive(SimpleObject, Clone)]
#[graphql(directive = access::apply("OWNER_OR_ADMIN".into()))]
pub struct BalanceUpdate {
    account_id: ID,
    balance: Decimal,
    available_balance: Decimal,
    transfer_id: Option<ID>,
    at: DateTime,
    /// Per account, strictly increasing with every change.
    version: i32,
}

#[derive(async_graphql::MergedSubscription, Default)]
pub struct SubscriptionRoot(CoreSubscription, super::bills::BillSubscription);

#[derive(Default)]
pub struct CoreSubscription;

#[Subscription]
impl CoreSubscription {
    /// Owner or admin; one event per change of balance or availableBalance.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn balance_changed(
        &self,
        ctx: &Context<'_>,
        account_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = BalanceUpdate>> {
        let v = viewer(ctx)?;
        let s = state(ctx);
        let id = parse_id(&account_id, "account")?;
        ledger::accounts::get_for_viewer(&s.db, &v, id)
            .await
            .gql()?;
        let stream =
            s.events
                .subscribe_topic(Topic::Account(id))
                .filter_map(move |ev| async move {
                    match ev {
                        LedgerEvent::Balance(b) if b.account_id == id => Some(BalanceUpdate {
                            account_id: ID(b.account_id.to_string()),
                            balance: Decimal::format(b.balance_minor, &b.currency),
                            available_balance: Decimal::format(b.available_minor, &b.currency),
                            transfer_id: b.transfer_id.map(|t| ID(t.to_string())),
                            at: DateTime(b.at),
                            version: b.version.min(i32::MAX as i64) as i32,
                        }),
                        _ => None,
                    }
                });
        Ok(track_subscription("balanceChanged", stream))
    }

    /// The viewer's transfers (one account, or all of them) as they change.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn transfer_updated(
        &self,
        ctx: &Context<'_>,
        account_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = Transfer>> {
        let v = viewer(ctx)?;
        let s = state(ctx).clone();
        let account = match account_id {
            Some(id) => {
                let id = parse_id(&id, "account")?;
                Some(
                    ledger::accounts::get_for_viewer(&s.db, &v, id)
                        .await
                        .gql()?
                        .id,
                )
            }
            None => None,
        };
        let topic = match account {
            Some(a) => Topic::Account(a),
            None => Topic::User(v.user_id),
        };
        let stream = s.events.subscribe_topic(topic).filter_map(move |ev| {
            let s = s.clone();
            let v = v.clone();
            async move {
                let LedgerEvent::Transfer(t) = ev else {
                    return None;
                };
                let mine = t.party_user_ids.contains(&v.user_id);
                let matches = match account {
                    Some(a) => t.account_ids.contains(&a),
                    None => mine,
                };
                if !matches {
                    return None;
                }
                // Visibility is settled above: the viewer is a party, or the
                // account filter was checked as theirs (or an admin's) at
                // subscribe time. Events carry the committed row; older
                // producers' events do not, so read it then.
                if let Some(row) = t.row {
                    return Some(Transfer::from(*row));
                }
                let mut row = ledger::transfers::get_for_viewer(&s.db, &v, t.transfer_id)
                    .await
                    .ok()?;
                if row.status != t.status && t.status == ledger::transfers::PENDING {
                    // Settled before this subscriber read it: still announce
                    // PENDING first; the settlement event follows.
                    row.status = t.status.clone();
                    row.settled_at = None;
                    row.failure_reason = None;
                }
                Some(Transfer::from(row))
            }
        });
        Ok(track_subscription("transferUpdated", stream))
    }

    /// New notifications of the viewer.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn notification_received(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Notification>> {
        let v = viewer(ctx)?;
        let s = state(ctx).clone();
        let stream = s
            .events
            .subscribe_topic(Topic::User(v.user_id))
            .filter_map(move |ev| {
                let s = s.clone();
                async move {
                    let LedgerEvent::Notification {
                        user_id,
                        notification_id,
                    } = ev
                    else {
                        return None;
                    };
                    if user_id != v.user_id {
                        return None;
                    }
                    use sea_orm::EntityTrait;
                    entity::notification::Entity::find_by_id(notification_id)
                        .one(&s.db)
                        .await
                        .ok()
                        .flatten()
                        .map(Notification)
                }
            });
        Ok(track_subscription("notificationReceived", stream))
    }
}
