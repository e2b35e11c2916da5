//! Settlement under concurrency, crashes and a lost queue (contract §5:
//! exactly-once in effect under at-least-once delivery; nothing stays
//! PENDING more than 60 s once workers are up again).
//!
//! These tests run `api` without `--with-worker` and separate `worker`
//! processes, drive many transfers through the public API, then check the
//! ledger in SQL (`TestApp::assert_ledger_consistent`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const FUNDING: &str = "1000.00";
const FUNDING_MINOR: i64 = 100_000;

/// An account and the session of its owner.
#[derive(Clone)]
struct Holder {
    session: Session,
    account: AccountRef,
}

/// Registers `customers` customers with `per_customer` USD accounts each,
/// funds every account with `FUNDING`, and waits for the deposits.
async fn funded_accounts(app: &TestApp, customers: usize, per_customer: usize) -> Vec<Holder> {
    let mut holders = Vec::new();
    for _ in 0..customers {
        let session = app.register_random().await;
        for _ in 0..per_customer {
            let account = app.open_account(&session, "CHECKING", "USD").await;
            holders.push(Holder {
                session: session.clone(),
                account,
            });
        }
    }
    let mut deposits = Vec::new();
    for holder in &holders {
        let deposit = app
            .deposit(&holder.session, &holder.account.id, FUNDING, &key())
            .await;
        deposits.push((
            holder.session.clone(),
            deposit["id"].as_str().unwrap().to_string(),
        ));
    }
    for (session, id) in deposits {
        let done = app
            .wait_transfer_final(&session, &id, Duration::from_secs(60))
            .await;
        assert_eq!(done["status"], "COMPLETED", "funding deposit {done}");
    }
    holders
}

#[derive(Debug, Default)]
struct Fired {
    accepted: Vec<String>,
    insufficient: usize,
}

/// Sends `total` transfers between random pairs of `holders` from `tasks`
/// concurrent client tasks, with random amounts from 1.00 to 300.00.
/// Accepted transfers and INSUFFICIENT_FUNDS are the only allowed answers.
async fn fire_transfers(
    client: ApiClient,
    holders: Arc<Vec<Holder>>,
    total: usize,
    tasks: usize,
    seed: u64,
) -> Fired {
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (client, holders, next) = (client.clone(), holders.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed.wrapping_add(task as u64 * 7919));
            let mut fired = Fired::default();
            while next.fetch_add(1, Ordering::SeqCst) < total {
                let from = rng.range(0, holders.len() as u64 - 1) as usize;
                let mut to = rng.range(0, holders.len() as u64 - 2) as usize;
                if to >= from {
                    to += 1;
                }
                let amount = fmt_minor(rng.range(100, 30_000) as i64, 2);
                let (from, to) = (&holders[from], &holders[to]);
                let resp = client
                    .transfer_raw(
                        &from.session,
                        &from.account.id,
                        &to.account.number,
                        &amount,
                        &key(),
                    )
                    .await;
                let codes = error_codes(&resp);
                if codes.is_empty() {
                    let data = expect_data(resp);
                    fired
                        .accepted
                        .push(data["transfer"]["id"].as_str().unwrap().to_string());
                } else if codes == ["INSUFFICIENT_FUNDS"] {
                    fired.insufficient += 1;
                } else {
                    panic!("transfer of {amount}: unexpected answer {resp} (seed {seed})");
                }
            }
            fired
        }));
    }
    let mut all = Fired::default();
    for handle in handles {
        let fired = handle.await.expect("client task panicked");
        all.accepted.extend(fired.accepted);
        all.insufficient += fired.insufficient;
    }
    all
}

/// Every check of a closed system of `holders` after all settled.
async fn assert_closed_system_consistent(
    app: &TestApp,
    admin: &Session,
    holders: &[Holder],
    fired: &Fired,
) {
    let mut unique = fired.accepted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        fired.accepted.len(),
        "every accepted transfer has its own id"
    );

    let report = app.assert_ledger_consistent().await;
    let expected_total = FUNDING_MINOR * holders.len() as i64;
    assert_eq!(
        report.customer_total_minor.get("USD").copied().unwrap_or(0),
        expected_total,
        "money was created or destroyed: {report:?}"
    );
    assert!(report.completed >= holders.len(), "{report:?}");

    // No transfer was lost between the reply and the database.
    let rows = app
        .sql("SELECT COUNT(*)::bigint AS n FROM transfers WHERE upper(kind) = 'TRANSFER'")
        .await;
    let stored: i64 = rows[0].try_get("", "n").unwrap();
    assert_eq!(
        stored,
        fired.accepted.len() as i64,
        "stored TRANSFER rows vs accepted replies"
    );
    assert_eq!(app.count_transfers(admin, Some("PENDING")).await, 0);

    // The same picture through the API.
    let mut api_total = 0;
    for holder in holders {
        let account = app.account(&holder.session, &holder.account.id).await;
        let balance = minor(account["balance"].as_str().unwrap(), 2);
        assert!(balance >= 0, "negative balance: {account}");
        assert_eq!(
            account["availableBalance"], account["balance"],
            "no hold left: {account}"
        );
        api_total += balance;
    }
    assert_eq!(api_total, expected_total);
    let lines = app.trial_balance(admin).await;
    let usd = lines
        .iter()
        .find(|l| l["currency"] == "USD")
        .unwrap_or_else(|| panic!("no USD trial balance line: {lines:?}"));
    assert_eq!(usd["net"], "0.00", "{usd}");
    assert_eq!(
        usd["customerTotal"],
        fmt_minor(expected_total, 2).as_str(),
        "{usd}"
    );
}

/// Waits until at least `n` more transfers than `baseline` are COMPLETED,
/// or `timeout` passes (then carries on: the crash happens either way).
async fn wait_completed_beyond(
    app: &TestApp,
    admin: &Session,
    baseline: i64,
    n: i64,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if app.count_transfers(admin, Some("COMPLETED")).await >= baseline + n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_transfers_across_two_workers_keep_the_ledger_balanced() {
    let app = TestApp::builder().workers(2).spawn().await;
    let admin = app.admin().await;
    let holders = Arc::new(funded_accounts(&app, 5, 4).await);
    let (_, seed) = Rng::seeded_randomly();
    eprintln!("random transfers seed: {seed}");

    let fired = fire_transfers(app.client(), holders.clone(), 1000, 16, seed).await;
    eprintln!(
        "accepted {} transfers, {} INSUFFICIENT_FUNDS",
        fired.accepted.len(),
        fired.insufficient
    );
    assert!(
        !fired.accepted.is_empty(),
        "some transfers must be accepted"
    );
    app.wait_no_pending(&admin, Duration::from_secs(120)).await;
    assert_closed_system_consistent(&app, &admin, &holders, &fired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_settlement_loses_and_doubles_nothing() {
    let mut app = TestApp::builder().workers(1).spawn().await;
    let admin = app.admin().await;
    let holders = Arc::new(funded_accounts(&app, 4, 2).await);
    let baseline = app.count_transfers(&admin, Some("COMPLETED")).await;
    let (_, seed) = Rng::seeded_randomly();
    eprintln!("random transfers seed: {seed}");

    let firing = tokio::spawn(fire_transfers(app.client(), holders.clone(), 200, 8, seed));
    wait_completed_beyond(&app, &admin, baseline, 5, Duration::from_secs(20)).await;
    app.workers[0].kill9().await;
    let fired = firing.await.expect("firing task");
    assert!(!fired.accepted.is_empty());

    let _replacement = app.spawn_worker().await;
    app.wait_no_pending(&admin, Duration::from_secs(60)).await;
    assert_closed_system_consistent(&app, &admin, &holders, &fired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_transfers_settle_exactly_once_after_the_queue_is_wiped() {
    let mut app = TestApp::builder().workers(1).spawn().await;
    let admin = app.admin().await;
    let holders = Arc::new(funded_accounts(&app, 4, 2).await);

    // No worker: everything accepted now stays PENDING with its job queued.
    app.workers[0].kill9().await;
    let (_, seed) = Rng::seeded_randomly();
    eprintln!("random transfers seed: {seed}");
    let fired = fire_transfers(app.client(), holders.clone(), 100, 8, seed).await;
    assert!(!fired.accepted.is_empty());
    assert_eq!(
        app.count_transfers(&admin, Some("PENDING")).await,
        fired.accepted.len() as i64,
        "with no worker every accepted transfer is still PENDING"
    );

    let deleted = app.wipe_redis_queue().await;
    assert!(
        deleted > 0,
        "no Redis key starts with REDIS_PREFIX={} although jobs are queued",
        app.prefix
    );

    let _replacement = app.spawn_worker().await;
    app.wait_no_pending(&admin, Duration::from_secs(60)).await;
    assert_closed_system_consistent(&app, &admin, &holders, &fired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_stopped_with_sigterm_exits_zero_and_hands_back_its_jobs() {
    let mut app = TestApp::builder().workers(1).spawn().await;
    let admin = app.admin().await;
    let holders = Arc::new(funded_accounts(&app, 4, 2).await);
    let baseline = app.count_transfers(&admin, Some("COMPLETED")).await;
    let (_, seed) = Rng::seeded_randomly();
    eprintln!("random transfers seed: {seed}");

    let firing = tokio::spawn(fire_transfers(app.client(), holders.clone(), 200, 8, seed));
    wait_completed_beyond(&app, &admin, baseline, 5, Duration::from_secs(20)).await;
    let status = app.workers[0].terminate(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "worker exited with {status} after SIGTERM"
    );
    let fired = firing.await.expect("firing task");

    let _replacement = app.spawn_worker().await;
    app.wait_no_pending(&admin, Duration::from_secs(60)).await;
    assert_closed_system_consistent(&app, &admin, &holders, &fired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_settle_a_single_transfer_once() {
    // The simplest duplicate-delivery shape: several workers racing on the
    // same queue; every settled transfer has exactly two ledger entries.
    let app = TestApp::builder().workers(3).spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;
    for _ in 0..10 {
        app.transfer(&alice, &a.id, &b.number, "1.00", &key()).await;
    }
    app.wait_no_pending(&admin, Duration::from_secs(60)).await;
    app.assert_ledger_consistent().await;
    assert_eq!(app.account(&bob, &b.id).await["balance"], "10.00");
    let data = expect_data(
        app.gql(
            alice.token(),
            "{ transfers(status: COMPLETED, kind: TRANSFER) { totalCount } }",
            json!({}),
        )
        .await,
    );
    assert_eq!(data["transfers"]["totalCount"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_with_a_transfer_to_a_frozen_account_settles_its_neighbours() {
    // Transfers pile up while no worker runs, so the next worker finds them
    // all at once and settles them in batches; one destination is frozen
    // meanwhile. Its transfers fail alone, with their holds released; every
    // other transfer in the same batches completes.
    let mut app = TestApp::builder().workers(1).spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let carol = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "500.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;
    let c = app.open_account(&carol, "CHECKING", "USD").await;
    app.workers[0].kill9().await;

    let mut to_carol = Vec::new();
    for i in 0..60 {
        let (dest, is_carol) = if i % 3 == 0 { (&c, true) } else { (&b, false) };
        let t = app
            .transfer(&alice, &a.id, &dest.number, "1.00", &key())
            .await;
        if is_carol {
            to_carol.push(t["id"].as_str().unwrap().to_string());
        }
    }
    let frozen = expect_data(
        app.gql(
            admin.token(),
            "mutation F($id: ID!) { freezeAccount(id: $id, reason: \"batch test\") { status } }",
            json!({"id": c.id}),
        )
        .await,
    );
    assert_eq!(frozen["freezeAccount"]["status"], "FROZEN");

    let replacement = app.spawn_worker().await;
    app.wait_no_pending(&admin, Duration::from_secs(60)).await;
    app.assert_ledger_consistent().await;

    for id in &to_carol {
        let t = app.transfer_by_id(&alice, id).await;
        assert_eq!(t["status"], "FAILED", "transfer to the frozen account: {t}");
        assert_eq!(t["failureReason"], "ACCOUNT_FROZEN");
    }
    let b_now = app.account(&bob, &b.id).await;
    assert_eq!(
        b_now["balance"], "40.00",
        "the 40 transfers to bob all settled"
    );
    let a_now = app.account(&alice, &a.id).await;
    assert_eq!(a_now["balance"], "460.00");
    assert_eq!(
        a_now["availableBalance"], "460.00",
        "every hold released, the failed ones' too"
    );

    // The replacement settled them in batches, not one per transaction.
    let log = strip_ansi(&std::fs::read_to_string(&replacement.log).unwrap_or_default());
    let largest_batch = log
        .split("batch.size=")
        .skip(1)
        .filter_map(|rest| {
            rest.chars()
                .take_while(|ch| ch.is_ascii_digit())
                .collect::<String>()
                .parse::<usize>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(
        largest_batch > 1,
        "expected batched settlement in {}, largest batch {largest_batch}",
        replacement.log.display()
    );
}

/// Log lines may carry terminal colour codes between a field and its value.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}
