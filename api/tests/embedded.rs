//! Embedded mode (contract §1): SQLite, no Redis, no JWT_SECRET, workers
//! in-process. The same money semantics must hold.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(30);

fn id_of(transfer: &Value) -> String {
    transfer["id"].as_str().expect("transfer id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_registers_deposits_transfers_and_balances() {
    let app = TestApp::builder().sqlite().spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.open_account(&alice, "CHECKING", "USD").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    let deposit = app.deposit(&alice, &a.id, "500.00", &key()).await;
    assert_eq!(deposit["status"], "PENDING");
    let deposit = app
        .wait_transfer_final(&alice, &id_of(&deposit), SETTLE)
        .await;
    assert_eq!(deposit["status"], "COMPLETED");

    let k = key();
    let transfer = app.transfer(&alice, &a.id, &b.number, "125.50", &k).await;
    assert_eq!(transfer["status"], "PENDING");
    assert_eq!(
        app.account(&alice, &a.id).await["availableBalance"],
        "374.50"
    );
    let done = app
        .wait_transfer_final(&alice, &id_of(&transfer), SETTLE)
        .await;
    assert_eq!(done["status"], "COMPLETED");

    // An idempotent replay returns the same transfer and moves nothing.
    let replay = app.transfer(&alice, &a.id, &b.number, "125.50", &k).await;
    assert_eq!(id_of(&replay), id_of(&transfer));

    expect_code(
        &app.transfer_raw(&alice, &a.id, &b.number, "374.51", &key())
            .await,
        "INSUFFICIENT_FUNDS",
    );

    let a_after = app.account(&alice, &a.id).await;
    assert_eq!(a_after["balance"], "374.50");
    assert_eq!(a_after["availableBalance"], "374.50");
    let b_after = app.account(&bob, &b.id).await;
    assert_eq!(b_after["balance"], "125.50");

    let lines = app.trial_balance(&admin).await;
    let usd = lines
        .iter()
        .find(|l| l["currency"] == "USD")
        .unwrap_or_else(|| panic!("no USD trial balance line: {lines:?}"));
    assert_eq!(usd["net"], "0.00");
    assert_eq!(usd["customerTotal"], "500.00");
    assert_eq!(usd["systemTotal"], "-500.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_issues_hs256_tokens_without_a_configured_secret() {
    let app = TestApp::builder().sqlite().spawn().await;
    let user = app.register_random().await;
    let (header, _) = jwt_parts(&user.access_token);
    assert_eq!(header["alg"], "HS256");
    let me = expect_data(app.me_raw(user.token()).await);
    assert_eq!(me["me"]["id"], user.user_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_transfers_from_one_account_on_sqlite_never_overdraw() {
    let app = TestApp::builder().sqlite().spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, alice, from, to) =
            (app.client(), alice.clone(), a.id.clone(), b.number.clone());
        tasks.push(tokio::spawn(async move {
            client
                .transfer_raw(&alice, &from, &to, "30.00", &key())
                .await
        }));
    }
    let mut accepted = Vec::new();
    for task in tasks {
        let resp = task.await.expect("client task");
        let codes = error_codes(&resp);
        if codes.is_empty() {
            accepted.push(id_of(&expect_data(resp)["transfer"]));
        } else {
            assert_eq!(codes, ["INSUFFICIENT_FUNDS"], "unexpected answer {resp}");
        }
    }
    assert!(
        (1..=3).contains(&accepted.len()),
        "100.00 covers at most three transfers of 30.00, {} were accepted",
        accepted.len()
    );
    let mut completed = 0;
    for id in &accepted {
        let done = app.wait_transfer_final(&alice, id, SETTLE).await;
        match done["status"].as_str() {
            Some("COMPLETED") => completed += 1,
            Some("FAILED") => {}
            other => panic!("unexpected final status {other:?}: {done}"),
        }
    }
    let a_after = app.account(&alice, &a.id).await;
    let balance = minor(a_after["balance"].as_str().unwrap(), 2);
    assert!(balance >= 0, "negative balance {a_after}");
    assert_eq!(balance, 10_000 - 3_000 * completed);
    assert_eq!(a_after["availableBalance"], a_after["balance"]);
    assert_eq!(
        minor(
            app.account(&bob, &b.id).await["balance"].as_str().unwrap(),
            2
        ),
        3_000 * completed
    );
}
