//! Live subscriptions over `/graphql/ws` (contract §1, §3, §4, §5): both
//! subprotocols, the graphql-ws reference client (Node), cross-process
//! delivery over Redis pub/sub, and the connection's authentication and
//! close codes.
//!
//! Events may arrive within milliseconds of a mutation, so every test
//! subscribes and gives the server a moment to register the subscription
//! before it moves money. Timeouts are generous; nothing asserts speed.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

/// How long to wait for one event.
const EVENT: Duration = Duration::from_secs(30);
/// How long a `subscribe` is given to be registered before money moves.
const REGISTER: Duration = Duration::from_millis(500);
const SETTLE: Duration = Duration::from_secs(30);

const BALANCE_CHANGED: &str = "subscription B($id: ID!) { balanceChanged(accountId: $id) { \
     accountId balance availableBalance transferId at version } }";

const TRANSFER_UPDATED: &str = "subscription T($id: ID) { transferUpdated(accountId: $id) { \
     id kind status amount currency \
     source { accountNumber account { id } } destination { accountNumber account { id } } } }";

fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}

fn version_of(update: &Value) -> i64 {
    update["version"]
        .as_i64()
        .unwrap_or_else(|| panic!("version is not an integer: {update}"))
}

/// Reads `balanceChanged` events of subscription `sub` until one for
/// `transfer_id` arrives; events of other transfers (e.g. a funding deposit
/// whose event was published just after the subscription started) are
/// skipped but must still be well-formed.
async fn next_balance_for(ws: &mut Ws, sub: &str, account_id: &str, transfer_id: &str) -> Value {
    loop {
        let data = ws.next_data(sub, EVENT).await;
        let update = data["balanceChanged"].clone();
        assert_eq!(
            update["accountId"], account_id,
            "balanceChanged for another account: {update}"
        );
        assert!(
            update["at"].as_str().is_some_and(|s| !s.is_empty()),
            "balanceChanged without `at`: {update}"
        );
        version_of(&update);
        if update["transferId"] == transfer_id {
            return update;
        }
        eprintln!("skipping a balanceChanged of another transfer: {update}");
    }
}

/// Reads `transferUpdated` events of `sub` until one for `transfer_id`.
async fn next_transfer_update(ws: &mut Ws, sub: &str, transfer_id: &str) -> Value {
    loop {
        let data = ws.next_data(sub, EVENT).await;
        let transfer = data["transferUpdated"].clone();
        if transfer["id"] == transfer_id {
            return transfer;
        }
        eprintln!("skipping a transferUpdated of another transfer: {transfer}");
    }
}

/// Alice (funded with 100.00 USD) and Bob (an empty USD account).
async fn alice_and_bob(app: &TestApp) -> (Session, AccountRef, Session, AccountRef) {
    let alice = app.register_random().await;
    let alice_account = app.funded_account(&alice, "USD", "100.00").await;
    let bob = app.register_random().await;
    let bob_account = app.open_account(&bob, "CHECKING", "USD").await;
    (alice, alice_account, bob, bob_account)
}

/// Checks the events of Alice's 40.00 transfer to Bob, as seen on sockets
/// `alice_ws` (subscriptions "bal" and "tr") and `bob_ws` ("bal").
async fn assert_transfer_events(
    alice_ws: &mut Ws,
    alice_account: &AccountRef,
    bob_ws: &mut Ws,
    bob_account: &AccountRef,
    transfer_id: &str,
) {
    // Alice: the hold at acceptance, then the settlement.
    let hold = next_balance_for(alice_ws, "bal", &alice_account.id, transfer_id).await;
    assert_eq!(hold["balance"], "100.00", "hold event: {hold}");
    assert_eq!(hold["availableBalance"], "60.00", "hold event: {hold}");
    let settled = next_balance_for(alice_ws, "bal", &alice_account.id, transfer_id).await;
    assert_eq!(settled["balance"], "60.00", "settlement event: {settled}");
    assert_eq!(
        settled["availableBalance"], "60.00",
        "settlement event: {settled}"
    );
    assert!(
        version_of(&settled) > version_of(&hold),
        "versions must strictly increase: hold {hold}, then settlement {settled}"
    );

    // Bob: the credit at settlement.
    let credit = next_balance_for(bob_ws, "bal", &bob_account.id, transfer_id).await;
    assert_eq!(credit["balance"], "40.00", "recipient event: {credit}");
    assert_eq!(
        credit["availableBalance"], "40.00",
        "recipient event: {credit}"
    );

    // transferUpdated on Alice's account: PENDING, then COMPLETED.
    let pending = next_transfer_update(alice_ws, "tr", transfer_id).await;
    assert_eq!(
        pending["status"], "PENDING",
        "first transferUpdated: {pending}"
    );
    assert_eq!(pending["kind"], "TRANSFER", "{pending}");
    assert_eq!(pending["amount"], "40.00", "{pending}");
    assert_eq!(
        pending["source"]["account"]["id"],
        alice_account.id.as_str(),
        "{pending}"
    );
    let completed = next_transfer_update(alice_ws, "tr", transfer_id).await;
    assert_eq!(
        completed["status"], "COMPLETED",
        "second transferUpdated: {completed}"
    );
    assert_eq!(
        completed["destination"]["accountNumber"],
        bob_account.number.as_str(),
        "{completed}"
    );
}

// ---------------------------------------------------------------------------
// Events over graphql-transport-ws
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_streams_the_hold_and_the_settlement_to_both_parties_over_graphql_transport_ws()
{
    let app = TestApp::spawn().await;
    let (alice, alice_account, bob, bob_account) = alice_and_bob(&app).await;

    let mut alice_ws = Ws::connect(&app.addr, &alice.access_token).await;
    alice_ws
        .subscribe("bal", BALANCE_CHANGED, json!({ "id": alice_account.id }))
        .await;
    alice_ws
        .subscribe("tr", TRANSFER_UPDATED, json!({ "id": alice_account.id }))
        .await;
    let mut bob_ws = Ws::connect(&app.addr, &bob.access_token).await;
    bob_ws
        .subscribe("bal", BALANCE_CHANGED, json!({ "id": bob_account.id }))
        .await;
    tokio::time::sleep(REGISTER).await;

    let transfer = app
        .transfer(
            &alice,
            &alice_account.id,
            &bob_account.number,
            "40.00",
            &key(),
        )
        .await;
    let transfer_id = id_of(&transfer);

    assert_transfer_events(
        &mut alice_ws,
        &alice_account,
        &mut bob_ws,
        &bob_account,
        &transfer_id,
    )
    .await;

    // The events agree with what the queries say afterwards.
    let done = app.wait_transfer_final(&alice, &transfer_id, SETTLE).await;
    assert_eq!(done["status"], "COMPLETED");
    let account = app.account(&alice, &alice_account.id).await;
    assert_eq!(account["balance"], "60.00");
    assert_eq!(account["availableBalance"], "60.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_updated_without_an_account_follows_the_viewers_transfers_on_both_sides() {
    let app = TestApp::spawn().await;
    let (alice, alice_account, bob, bob_account) = alice_and_bob(&app).await;

    let mut alice_ws = Ws::connect(&app.addr, &alice.access_token).await;
    alice_ws
        .subscribe("all", TRANSFER_UPDATED, json!({ "id": null }))
        .await;
    let mut bob_ws = Ws::connect(&app.addr, &bob.access_token).await;
    bob_ws.subscribe("all", TRANSFER_UPDATED, json!({})).await;
    tokio::time::sleep(REGISTER).await;

    let transfer = app
        .transfer(
            &alice,
            &alice_account.id,
            &bob_account.number,
            "40.00",
            &key(),
        )
        .await;
    let transfer_id = id_of(&transfer);
    for (who, ws) in [
        ("Alice (sender)", &mut alice_ws),
        ("Bob (recipient)", &mut bob_ws),
    ] {
        let pending = next_transfer_update(ws, "all", &transfer_id).await;
        assert_eq!(
            pending["status"], "PENDING",
            "{who}: first transferUpdated: {pending}"
        );
        let completed = next_transfer_update(ws, "all", &transfer_id).await;
        assert_eq!(
            completed["status"], "COMPLETED",
            "{who}: second transferUpdated: {completed}"
        );
    }

    // A deposit (only a destination side) reaches Bob the same way.
    let deposit = app.deposit(&bob, &bob_account.id, "5.00", &key()).await;
    let deposit_id = id_of(&deposit);
    let pending = next_transfer_update(&mut bob_ws, "all", &deposit_id).await;
    assert_eq!(pending["status"], "PENDING", "deposit: {pending}");
    assert_eq!(pending["kind"], "DEPOSIT", "deposit: {pending}");
    assert!(
        pending["source"].is_null(),
        "a deposit has no source: {pending}"
    );
    let completed = next_transfer_update(&mut bob_ws, "all", &deposit_id).await;
    assert_eq!(completed["status"], "COMPLETED", "deposit: {completed}");

    // Bob's deposit is not Alice's business.
    app.wait_transfer_final(&bob, &deposit_id, SETTLE).await;
    alice_ws.drain_for(Duration::from_secs(1)).await;
    for message in alice_ws.received() {
        assert!(
            !message.to_string().contains(&deposit_id),
            "Bob's deposit reached Alice: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_graphql_transport_ws_clients_and_a_ponging_client_stays_connected() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let account = app.open_account(&alice, "CHECKING", "USD").await;

    let mut ws = Ws::connect(&app.addr, &alice.access_token).await;
    ws.subscribe("bal", BALANCE_CHANGED, json!({ "id": account.id }))
        .await;
    let started = Instant::now();
    // Every 15 s by the spec; 40 s leaves room for a loaded machine.
    ws.expect_server_ping(Duration::from_secs(40)).await;
    eprintln!("first server ping after {:?}", started.elapsed());
    assert!(
        ws.close_status().is_none(),
        "socket closed: {:?}",
        ws.close_status()
    );

    // After the ping/pong the subscription still delivers.
    let deposit = app.deposit(&alice, &account.id, "12.34", &key()).await;
    let update = next_balance_for(&mut ws, "bal", &account.id, &id_of(&deposit)).await;
    assert_eq!(update["balance"], "12.34", "{update}");
    assert_eq!(update["availableBalance"], "12.34", "{update}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_deposit_streams_a_notification_to_its_owner() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let account = app.open_account(&alice, "CHECKING", "USD").await;

    let mut ws = Ws::connect(&app.addr, &alice.access_token).await;
    ws.subscribe(
        "n",
        "subscription { notificationReceived { id kind subject body emailStatus createdAt } }",
        json!({}),
    )
    .await;
    tokio::time::sleep(REGISTER).await;
    let deposit = app.deposit(&alice, &account.id, "3.00", &key()).await;
    app.wait_transfer_final(&alice, &id_of(&deposit), SETTLE)
        .await;

    let data = ws.next_data("n", EVENT).await;
    let notification = &data["notificationReceived"];
    for field in ["id", "kind", "subject", "body", "emailStatus", "createdAt"] {
        assert!(
            notification[field].as_str().is_some_and(|s| !s.is_empty()),
            "notification without {field}: {notification}"
        );
    }
    // It is one of Alice's notifications as the query lists them.
    let deadline = Instant::now() + SETTLE;
    loop {
        let listed = app.notifications(&alice).await;
        if listed.iter().any(|n| n["id"] == notification["id"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "notification {notification} is not in Alice's notifications: {listed:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// The legacy graphql-ws (subscriptions-transport-ws) protocol
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_graphql_ws_protocol_streams_a_deposit() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let account = app.open_account(&alice, "CHECKING", "USD").await;

    let mut ws = Ws::connect_legacy(&app.addr, &alice.access_token).await;
    ws.subscribe("1", BALANCE_CHANGED, json!({ "id": account.id }))
        .await;
    tokio::time::sleep(REGISTER).await;

    let deposit = app.deposit(&alice, &account.id, "25.00", &key()).await;
    let update = next_balance_for(&mut ws, "1", &account.id, &id_of(&deposit)).await;
    assert_eq!(update["balance"], "25.00", "{update}");
    assert_eq!(update["availableBalance"], "25.00", "{update}");
    assert!(version_of(&update) >= 1, "{update}");

    // `stop` ends the operation; the socket stays usable for another start.
    ws.unsubscribe("1").await;
    ws.subscribe("2", BALANCE_CHANGED, json!({ "id": account.id }))
        .await;
    tokio::time::sleep(REGISTER).await;
    let second = app.deposit(&alice, &account.id, "5.00", &key()).await;
    let update2 = next_balance_for(&mut ws, "2", &account.id, &id_of(&second)).await;
    assert_eq!(update2["balance"], "30.00", "{update2}");
    assert!(
        version_of(&update2) > version_of(&update),
        "versions must strictly increase: {update} then {update2}"
    );
}

// ---------------------------------------------------------------------------
// The graphql-ws reference client (Node)
// ---------------------------------------------------------------------------

fn ws_client_dir() -> PathBuf {
    repo_root().join("tests").join("ws-client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graphql_ws_reference_client_receives_a_deposit_and_a_withdrawal() {
    let dir = ws_client_dir();
    let script = dir.join("subscribe.mjs");
    assert!(script.exists(), "{} is missing", script.display());
    assert!(
        dir.join("node_modules").join("graphql-ws").exists(),
        "{}/node_modules is not installed: run `(cd tests/ws-client && npm ci)` \
         (scripts/test.sh does it)",
        dir.display()
    );

    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let account = app.open_account(&alice, "CHECKING", "USD").await;

    // Deposit 50.00 (one event: settled), withdraw 20.00 (two: hold, settled).
    let expected_events = 3;
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(ws_url(&app.addr))
        .arg(&alice.access_token)
        .arg(&account.id)
        .arg(expected_events.to_string())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `node` (Node.js 20+ must be installed; this test never skips): {e}")
        });
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stderr_task = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut text = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut lines = BufReader::new(stdout).lines();

    // Wait for `{"ready":true}` (connection_ack received).
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    match ready {
        Ok(Ok(Some(line)))
            if serde_json::from_str::<Value>(&line).ok() == Some(json!({"ready": true})) => {}
        other => {
            let _ = child.start_kill();
            let status = child.wait().await;
            let err = stderr_task.await.unwrap_or_default();
            panic!(
                "the Node client did not report ready: {other:?}; exit {status:?}; stderr:\n{err}"
            );
        }
    }
    tokio::time::sleep(REGISTER).await;

    let deposit = app.deposit(&alice, &account.id, "50.00", &key()).await;
    let deposit = app
        .wait_transfer_final(&alice, &id_of(&deposit), SETTLE)
        .await;
    assert_eq!(deposit["status"], "COMPLETED");
    let withdrawal = app.withdraw(&alice, &account.id, "20.00", &key()).await;
    let withdrawal = app
        .wait_transfer_final(&alice, &id_of(&withdrawal), SETTLE)
        .await;
    assert_eq!(withdrawal["status"], "COMPLETED");

    let mut events = Vec::new();
    let collect = async {
        while let Some(line) = lines.next_line().await.expect("read node stdout") {
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("the Node client printed a non-JSON line ({e}): {line}")
            });
            events.push(value);
        }
    };
    let collected = tokio::time::timeout(Duration::from_secs(45), collect).await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let err = stderr_task.await.unwrap_or_default();
    assert!(
        collected.is_ok(),
        "the Node client did not finish within 45 s; events so far: {events:?}; stderr:\n{err}"
    );
    let status = status
        .unwrap_or_else(|_| panic!("the Node client did not exit; stderr:\n{err}"))
        .expect("wait for node");
    assert!(
        status.success(),
        "the Node client exited with {status}; events: {events:#?}; stderr:\n{err}"
    );

    assert_eq!(
        events.len(),
        expected_events,
        "expected {expected_events} events, got {events:#?}"
    );
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            assert_eq!(e["accountId"], account.id.as_str(), "{e}");
            (
                e["transferId"].as_str().unwrap_or(""),
                e["balance"].as_str().unwrap_or(""),
                e["availableBalance"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let deposit_id = id_of(&deposit);
    let withdrawal_id = id_of(&withdrawal);
    assert_eq!(
        seen,
        vec![
            (deposit_id.as_str(), "50.00", "50.00"),
            (withdrawal_id.as_str(), "50.00", "30.00"),
            (withdrawal_id.as_str(), "30.00", "30.00"),
        ],
        "events: {events:#?}"
    );
    for pair in events.windows(2) {
        assert!(
            version_of(&pair[1]) > version_of(&pair[0]),
            "versions must strictly increase: {} then {}",
            pair[0],
            pair[1]
        );
    }
}

// ---------------------------------------------------------------------------
// Cross-process delivery (Redis pub/sub)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_a_second_api_process_sees_a_transfer_made_on_the_first_and_settled_by_a_worker()
 {
    // api #1 runs no workers; one separate worker settles; api #2 serves the
    // subscriptions. Every event crosses a process boundary.
    let app = TestApp::builder().workers(1).spawn().await;
    let second = app.spawn_second_api().await;
    let (alice, alice_account, bob, bob_account) = alice_and_bob(&app).await;

    let mut alice_ws = Ws::connect(&second, &alice.access_token).await;
    alice_ws
        .subscribe("bal", BALANCE_CHANGED, json!({ "id": alice_account.id }))
        .await;
    alice_ws
        .subscribe("tr", TRANSFER_UPDATED, json!({ "id": alice_account.id }))
        .await;
    let mut bob_ws = Ws::connect(&second, &bob.access_token).await;
    bob_ws
        .subscribe("bal", BALANCE_CHANGED, json!({ "id": bob_account.id }))
        .await;
    tokio::time::sleep(REGISTER).await;

    // The mutation goes to api #1.
    let transfer = app
        .transfer(
            &alice,
            &alice_account.id,
            &bob_account.number,
            "40.00",
            &key(),
        )
        .await;
    let transfer_id = id_of(&transfer);

    assert_transfer_events(
        &mut alice_ws,
        &alice_account,
        &mut bob_ws,
        &bob_account,
        &transfer_id,
    )
    .await;

    // And api #2 answers queries on the same state.
    let account = app.client_at(&second).account(&bob, &bob_account.id).await;
    assert_eq!(account["balance"], "40.00");
}

// ---------------------------------------------------------------------------
// Authentication and close codes (graphql-transport-ws)
// ---------------------------------------------------------------------------

const CLOSE_TIMEOUT: Duration = Duration::from_secs(20);

async fn assert_init_refused(addr: &str, payload: Option<Value>, what: &str) {
    let mut ws = Ws::open(addr, WsProtocol::TransportWs).await;
    ws.init(payload).await;
    let (code, reason) = ws.expect_close(CLOSE_TIMEOUT).await;
    assert_eq!(
        code,
        4403,
        "{what}: expected close 4403, got {code} {reason:?}\ntranscript:\n{}",
        ws.transcript()
    );
    assert!(
        !ws.transcript().contains("connection_ack"),
        "{what}: the server acknowledged the connection before closing:\n{}",
        ws.transcript()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_init_without_authorization_is_closed_with_4403() {
    let app = TestApp::spawn().await;
    assert_init_refused(&app.addr, None, "no payload").await;
    assert_init_refused(&app.addr, Some(json!({})), "empty payload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_init_with_a_garbage_token_is_closed_with_4403() {
    let app = TestApp::spawn().await;
    assert_init_refused(
        &app.addr,
        Some(json!({ "Authorization": "Bearer not-a-jwt" })),
        "garbage token",
    )
    .await;
    // Right claims, wrong key.
    let alice = app.register_random().await;
    let forged = mint_access_token(
        "another-secret-of-at-least-32-bytes-xxxxxxxx",
        &alice.user_id,
        "CUSTOMER",
        0,
        unix_now() + 600,
    );
    assert_init_refused(
        &app.addr,
        Some(json!({ "Authorization": format!("Bearer {forged}") })),
        "token signed with another key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_init_with_an_expired_token_is_closed_with_4403() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let expired = app.mint_customer_token(&alice, unix_now() - 60);
    assert_init_refused(
        &app.addr,
        Some(json!({ "Authorization": format!("Bearer {expired}") })),
        "expired token",
    )
    .await;

    // Control: the same minting with a future `exp` is accepted, so the
    // refusal above is about the expiry.
    let valid = app.mint_customer_token(&alice, unix_now() + 600);
    let ws = Ws::connect(&app.addr, &valid).await;
    ws.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_before_connection_ack_is_closed_with_4401() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let account = app.open_account(&alice, "CHECKING", "USD").await;

    let mut ws = Ws::open(&app.addr, WsProtocol::TransportWs).await;
    ws.subscribe("1", BALANCE_CHANGED, json!({ "id": account.id }))
        .await;
    let (code, reason) = ws.expect_close(CLOSE_TIMEOUT).await;
    assert_eq!(
        code,
        4401,
        "expected close 4401, got {code} {reason:?}\ntranscript:\n{}",
        ws.transcript()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_init_is_closed_with_4429() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;

    let mut ws = Ws::connect(&app.addr, &alice.access_token).await;
    ws.init(Some(
        json!({ "Authorization": format!("Bearer {}", alice.access_token) }),
    ))
    .await;
    let (code, reason) = ws.expect_close(CLOSE_TIMEOUT).await;
    assert_eq!(
        code,
        4429,
        "expected close 4429, got {code} {reason:?}\ntranscript:\n{}",
        ws.transcript()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_without_connection_init_is_closed_with_4408() {
    let app = TestApp::spawn().await;
    let started = Instant::now();
    let mut ws = Ws::open(&app.addr, WsProtocol::TransportWs).await;
    // The spec says 10 s; allow for a loaded machine.
    let (code, reason) = ws.expect_close(Duration::from_secs(25)).await;
    let elapsed = started.elapsed();
    assert_eq!(
        code,
        4408,
        "expected close 4408, got {code} {reason:?} after {elapsed:?}\ntranscript:\n{}",
        ws.transcript()
    );
    // Lower bound only (not a speed assertion): the timeout must not fire
    // right away.
    assert!(
        elapsed >= Duration::from_secs(5),
        "closed with 4408 after only {elapsed:?}; the init timeout is 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_to_another_customers_account_is_not_found_and_the_socket_stays_usable() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let alice_account = app.open_account(&alice, "CHECKING", "USD").await;
    let bob = app.register_random().await;
    let bob_account = app.open_account(&bob, "CHECKING", "USD").await;

    let mut ws = Ws::connect(&app.addr, &alice.access_token).await;
    let cases = [
        ("bob-balance", BALANCE_CHANGED, bob_account.id.clone()),
        ("bob-transfers", TRANSFER_UPDATED, bob_account.id.clone()),
        ("nobody", BALANCE_CHANGED, Uuid::new_v4().to_string()),
    ];
    for (id, query, account_id) in &cases {
        ws.subscribe(id, query, json!({ "id": account_id })).await;
        let message = ws.next_for(id, EVENT).await;
        assert_eq!(
            message["type"],
            "error",
            "{id}: expected an error message, got {message}\ntranscript:\n{}",
            ws.transcript()
        );
        let errors = ws_error_list(&message);
        assert!(
            !errors.is_empty()
                && errors
                    .iter()
                    .all(|e| e.pointer("/extensions/code") == Some(&json!("NOT_FOUND"))),
            "{id}: expected NOT_FOUND errors, got {message}"
        );
        assert!(
            ws.close_status().is_none(),
            "{id}: the socket was closed: {:?}",
            ws.close_status()
        );
    }

    // The same socket still serves a valid subscription.
    ws.subscribe("mine", BALANCE_CHANGED, json!({ "id": alice_account.id }))
        .await;
    tokio::time::sleep(REGISTER).await;
    let deposit = app.deposit(&alice, &alice_account.id, "7.00", &key()).await;
    let update = next_balance_for(&mut ws, "mine", &alice_account.id, &id_of(&deposit)).await;
    assert_eq!(update["balance"], "7.00", "{update}");

    // And Bob's money moving did not leak to Alice's socket.
    let bob_deposit = app.deposit(&bob, &bob_account.id, "9.00", &key()).await;
    app.wait_transfer_final(&bob, &id_of(&bob_deposit), SETTLE)
        .await;
    let alice_second = app.deposit(&alice, &alice_account.id, "1.00", &key()).await;
    let update = next_balance_for(&mut ws, "mine", &alice_account.id, &id_of(&alice_second)).await;
    assert_eq!(update["balance"], "8.00", "{update}");
    for message in ws.received() {
        if message["type"] != "next" {
            continue;
        }
        assert!(
            !cases.iter().any(|(id, _, _)| message["id"] == *id),
            "a refused subscription delivered data: {message}"
        );
        assert!(
            !message.to_string().contains(&bob_account.id),
            "Bob's account reached Alice's socket: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_closed_with_4403_when_its_access_token_expires() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let account = app.open_account(&alice, "CHECKING", "USD").await;

    let exp = unix_now() + 3;
    let token = app.mint_customer_token(&alice, exp);
    let mut ws = Ws::connect(&app.addr, &token).await;
    ws.subscribe("bal", BALANCE_CHANGED, json!({ "id": account.id }))
        .await;

    let started = Instant::now();
    let (code, reason) = ws.expect_close(Duration::from_secs(15)).await;
    let closed_at = unix_now();
    assert_eq!(
        code,
        4403,
        "expected close 4403 on token expiry, got {code} {reason:?} after {:?}\ntranscript:\n{}",
        started.elapsed(),
        ws.transcript()
    );
    assert!(
        reason.to_lowercase().contains("expire"),
        "the close reason should say the token expired: {reason:?}"
    );
    // Not before the token expired (whole seconds, 1 s of slack).
    assert!(
        closed_at >= exp - 1,
        "closed at {closed_at}, before the token's exp {exp}"
    );
}

/// User plus system CPU time of a process so far, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (1-based).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / if hz > 0 { hz as f64 } else { 100.0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_subscriptions_use_no_cpu_after_their_handshake() {
    // Regression: once the handshake was done, the token-expiry channel of
    // every socket closed and its select loop spun on it, a CPU core for a
    // handful of idle sockets. Idle sockets must cost (almost) nothing.
    let app = TestApp::builder().workers(0).spawn().await;
    let alice = app.register_random().await;
    let account = app.open_account(&alice, "CHECKING", "USD").await;
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let mut ws = Ws::connect(&app.addr, &alice.access_token).await;
        ws.subscribe("bal", BALANCE_CHANGED, json!({ "id": account.id }))
            .await;
        sockets.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = app.api_pid();
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(pid) - before;
    // A spinning socket keeps a core busy (3 s of CPU in 3 s); an idle api
    // with 20 quiet sockets uses a few milliseconds. The bound is far from
    // both so that a loaded machine cannot flip the verdict.
    assert!(
        used < 1.0,
        "the api used {used:.2} s of CPU in 3 s with 20 idle subscriptions"
    );
    drop(sockets);
}
