//! Money: the Decimal scalar, deposits, withdrawals, transfers, visibility,
//! listing, idempotency and the trial balance (contract §2, §4, §5, §6).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(30);

fn id_of(transfer: &Value) -> String {
    transfer["id"]
        .as_str()
        .unwrap_or_else(|| panic!("transfer without id: {transfer}"))
        .to_string()
}

async fn settle(app: &TestApp, s: &Session, transfer: &Value) -> Value {
    app.wait_transfer_final(s, &id_of(transfer), SETTLE).await
}

async fn transfers_total(app: &TestApp, s: &Session) -> i64 {
    let data = expect_data(
        app.gql(
            s.token(),
            "{ transfers(first: 1) { totalCount } }",
            json!({}),
        )
        .await,
    );
    data["transfers"]["totalCount"]
        .as_i64()
        .expect("totalCount")
}

/// A valid-Luhn 12-digit number that no account of `taken` uses.
fn unused_number(taken: &[&str]) -> String {
    loop {
        let payload: String = Uuid::new_v4()
            .as_u128()
            .to_string()
            .chars()
            .rev()
            .take(11)
            .collect();
        let number = with_luhn_digit(&payload);
        if !taken.contains(&number.as_str()) {
            return number;
        }
    }
}

/// The same number with its check digit changed, so Luhn fails.
fn mistyped(number: &str) -> String {
    let (body, last) = number.split_at(number.len() - 1);
    let digit = (last.parse::<u8>().unwrap() + 1) % 10;
    format!("{body}{digit}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_amounts_are_rejected_with_bad_user_input() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let other = app.register_random().await;
    let account = app.open_account(&user, "CHECKING", "USD").await;
    let target = app.open_account(&other, "CHECKING", "USD").await;

    let bad: Vec<Value> = vec![
        json!("0"),
        json!("0.00"),
        json!("-1"),
        json!("1.001"),
        json!("1e5"),
        json!("abc"),
        json!(""),
        json!(100),
        json!("10000000000000"),
        json!("1000000000000.01"),
    ];
    for amount in &bad {
        let resp = app.deposit_raw(&user, &account.id, amount, &key()).await;
        assert!(
            error_codes(&resp).iter().any(|c| c == "BAD_USER_INPUT"),
            "deposit of {amount} must be BAD_USER_INPUT, got {resp}"
        );
    }
    for amount in [json!("0"), json!("-5.00"), json!("1.001"), json!(5)] {
        let resp = app
            .transfer_raw(&user, &account.id, &target.number, &amount, &key())
            .await;
        assert!(
            error_codes(&resp).iter().any(|c| c == "BAD_USER_INPUT"),
            "transfer of {amount} must be BAD_USER_INPUT, got {resp}"
        );
        let resp = app.withdraw_raw(&user, &account.id, &amount, &key()).await;
        assert!(
            error_codes(&resp).iter().any(|c| c == "BAD_USER_INPUT"),
            "withdrawal of {amount} must be BAD_USER_INPUT, got {resp}"
        );
    }
    let after = app.account(&user, &account.id).await;
    assert_eq!(after["balance"], "0.00");
    assert_eq!(after["availableBalance"], "0.00");
    assert_eq!(
        transfers_total(&app, &user).await,
        0,
        "nothing was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_are_output_with_exactly_the_currency_minor_digits() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;

    let usd = app.open_account(&user, "CHECKING", "USD").await;
    for (input, output) in [("200.5", "200.50"), ("7", "7.00"), ("0.01", "0.01")] {
        let deposit = app.deposit(&user, &usd.id, input, &key()).await;
        assert_eq!(deposit["amount"], output, "input {input}");
        assert_eq!(deposit["currency"], "USD");
        assert_eq!(settle(&app, &user, &deposit).await["status"], "COMPLETED");
    }
    assert_eq!(app.account(&user, &usd.id).await["balance"], "207.51");

    let jpy = app.open_account(&user, "CHECKING", "JPY").await;
    expect_code(
        &app.deposit_raw(&user, &jpy.id, "1.5", &key()).await,
        "BAD_USER_INPUT",
    );
    let deposit = app.deposit(&user, &jpy.id, "1500", &key()).await;
    assert_eq!(deposit["amount"], "1500");
    assert_eq!(settle(&app, &user, &deposit).await["status"], "COMPLETED");
    let account = app.account(&user, &jpy.id).await;
    assert_eq!(account["balance"], "1500");
    assert_eq!(account["availableBalance"], "1500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_above_one_million_is_limit_exceeded() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let account = app.open_account(&user, "CHECKING", "USD").await;
    expect_code(
        &app.deposit_raw(&user, &account.id, "1000000.01", &key())
            .await,
        "LIMIT_EXCEEDED",
    );
    let deposit = app.deposit(&user, &account.id, "1000000", &key()).await;
    assert_eq!(deposit["amount"], "1000000.00");
    assert_eq!(settle(&app, &user, &deposit).await["status"], "COMPLETED");
    assert_eq!(
        app.account(&user, &account.id).await["balance"],
        "1000000.00"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_is_pending_then_completed_and_credits_the_balance() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let account = app.open_account(&user, "CHECKING", "USD").await;
    let k = key();
    let deposit = app.deposit(&user, &account.id, "500", &k).await;
    assert_eq!(
        deposit["status"], "PENDING",
        "money mutations reply PENDING: {deposit}"
    );
    assert_eq!(deposit["kind"], "DEPOSIT");
    assert_eq!(deposit["amount"], "500.00");
    assert_eq!(deposit["idempotencyKey"], k.as_str());
    assert!(deposit["source"].is_null(), "a deposit has no source party");
    assert_eq!(
        deposit["destination"]["accountNumber"],
        account.number.as_str()
    );
    assert_eq!(deposit["destination"]["account"]["id"], account.id.as_str());

    let done = settle(&app, &user, &deposit).await;
    assert_eq!(done["status"], "COMPLETED");
    assert!(
        done["settledAt"].as_str().is_some(),
        "settledAt is set: {done}"
    );
    let after = app.account(&user, &account.id).await;
    assert_eq!(after["balance"], "500.00");
    assert_eq!(after["availableBalance"], "500.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_debits_the_balance_and_cannot_overdraw() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let account = app.funded_account(&user, "USD", "100.00").await;
    expect_code(
        &app.withdraw_raw(&user, &account.id, "100.01", &key()).await,
        "INSUFFICIENT_FUNDS",
    );
    let withdrawal = app.withdraw(&user, &account.id, "30", &key()).await;
    assert_eq!(withdrawal["status"], "PENDING");
    assert_eq!(withdrawal["kind"], "WITHDRAWAL");
    assert!(
        withdrawal["destination"].is_null(),
        "a withdrawal has no destination party"
    );
    assert_eq!(withdrawal["source"]["account"]["id"], account.id.as_str());
    assert_eq!(
        settle(&app, &user, &withdrawal).await["status"],
        "COMPLETED"
    );
    let after = app.account(&user, &account.id).await;
    assert_eq!(after["balance"], "70.00");
    assert_eq!(after["availableBalance"], "70.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_holds_funds_at_once_and_settles_both_balances() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "1000.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    let transfer = app.transfer(&alice, &a.id, &b.number, "250", &key()).await;
    assert_eq!(transfer["status"], "PENDING", "{transfer}");
    assert_eq!(transfer["kind"], "TRANSFER");
    assert_eq!(transfer["amount"], "250.00");

    // Right after the reply the hold is visible: availableBalance is the
    // post-transfer value, and balance is either untouched (still pending)
    // or already settled.
    let during = app.account(&alice, &a.id).await;
    assert_eq!(during["availableBalance"], "750.00", "{during}");
    assert!(
        during["balance"] == "1000.00" || during["balance"] == "750.00",
        "balance is booked-only: {during}"
    );

    let done = settle(&app, &alice, &transfer).await;
    assert_eq!(done["status"], "COMPLETED");
    assert!(done["failureReason"].is_null());
    let after = app.account(&alice, &a.id).await;
    assert_eq!(after["balance"], "750.00");
    assert_eq!(after["availableBalance"], "750.00");
    let received = app.account(&bob, &b.id).await;
    assert_eq!(received["balance"], "250.00");
    assert_eq!(received["availableBalance"], "250.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_above_the_available_balance_is_insufficient_funds_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    expect_code(
        &app.transfer_raw(&alice, &a.id, &b.number, "100.01", &key())
            .await,
        "INSUFFICIENT_FUNDS",
    );
    let unchanged = app.account(&alice, &a.id).await;
    assert_eq!(unchanged["balance"], "100.00");
    assert_eq!(unchanged["availableBalance"], "100.00");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "0.00");

    // The check is against availableBalance: a first transfer of 60 leaves
    // 40 available whether or not it has settled yet.
    let first = app.transfer(&alice, &a.id, &b.number, "60", &key()).await;
    expect_code(
        &app.transfer_raw(&alice, &a.id, &b.number, "60", &key())
            .await,
        "INSUFFICIENT_FUNDS",
    );
    assert_eq!(settle(&app, &alice, &first).await["status"], "COMPLETED");
    let after = app.account(&alice, &a.id).await;
    assert_eq!(after["balance"], "40.00");
    assert_eq!(after["availableBalance"], "40.00");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "60.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_the_source_account_itself_is_bad_user_input() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "10.00").await;
    expect_code(
        &app.transfer_raw(&alice, &a.id, &a.number, "1.00", &key())
            .await,
        "BAD_USER_INPUT",
    );
    assert_eq!(
        app.account(&alice, &a.id).await["availableBalance"],
        "10.00"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_needs_exactly_one_of_account_number_and_contact() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "10.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;
    let contact = app.add_contact(&alice, "Bob", &b.number).await;

    let both = app
        .gql(
            alice.token(),
            "mutation T($from: ID!, $to: String!, $c: ID!, $key: String!) { \
               transfer(input: {fromAccountId: $from, toAccountNumber: $to, toContactId: $c, \
                                amount: \"1.00\", idempotencyKey: $key}) { id } }",
            json!({ "from": a.id, "to": b.number, "c": contact, "key": key() }),
        )
        .await;
    expect_code(&both, "BAD_USER_INPUT");
    let neither = app
        .gql(
            alice.token(),
            "mutation T($from: ID!, $key: String!) { \
               transfer(input: {fromAccountId: $from, amount: \"1.00\", idempotencyKey: $key}) { id } }",
            json!({ "from": a.id, "key": key() }),
        )
        .await;
    expect_code(&neither, "BAD_USER_INPUT");
    assert_eq!(
        app.account(&alice, &a.id).await["availableBalance"],
        "10.00"
    );

    // A contact alone is a valid destination.
    let via_contact = expect_data(
        app.transfer_to_contact_raw(&alice, &a.id, &contact, "1.00", &key())
            .await,
    )["transfer"]
        .clone();
    assert_eq!(
        via_contact["destination"]["accountNumber"],
        b.number.as_str()
    );
    assert_eq!(
        settle(&app, &alice, &via_contact).await["status"],
        "COMPLETED"
    );
    assert_eq!(app.account(&bob, &b.id).await["balance"], "1.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_account_number_is_bad_user_input_and_an_unknown_one_is_not_found() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "10.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    for number in [
        mistyped(&b.number),
        b.number[..11].to_string(),
        format!("{}0", b.number),
        "12345678901a".to_string(),
        String::new(),
    ] {
        let resp = app
            .transfer_raw(&alice, &a.id, &number, "1.00", &key())
            .await;
        expect_code(&resp, "BAD_USER_INPUT");
    }
    let unknown = unused_number(&[&a.number, &b.number]);
    expect_code(
        &app.transfer_raw(&alice, &a.id, &unknown, "1.00", &key())
            .await,
        "NOT_FOUND",
    );
    assert_eq!(
        app.account(&alice, &a.id).await["availableBalance"],
        "10.00"
    );
    assert_eq!(app.account(&bob, &b.id).await["balance"], "0.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_between_currencies_is_currency_mismatch() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "10.00").await;
    let eur = app.open_account(&bob, "CHECKING", "EUR").await;
    expect_code(
        &app.transfer_raw(&alice, &a.id, &eur.number, "1.00", &key())
            .await,
        "CURRENCY_MISMATCH",
    );
    assert_eq!(
        app.account(&alice, &a.id).await["availableBalance"],
        "10.00"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_money_of_another_customers_account_is_not_found() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let mallory = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "10.00").await;
    let m = app.open_account(&mallory, "CHECKING", "USD").await;

    expect_code(
        &app.transfer_raw(&mallory, &a.id, &m.number, "1.00", &key())
            .await,
        "NOT_FOUND",
    );
    expect_code(
        &app.withdraw_raw(&mallory, &a.id, "1.00", &key()).await,
        "NOT_FOUND",
    );
    // Deposits are the owner's cash channel; a stranger is not told the
    // account exists (FORBIDDEN would also keep the money out).
    expect_one_of(
        &app.deposit_raw(&mallory, &a.id, "1.00", &key()).await,
        &["NOT_FOUND", "FORBIDDEN"],
    );
    let after = app.account(&alice, &a.id).await;
    assert_eq!(after["balance"], "10.00");
    assert_eq!(after["availableBalance"], "10.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_visible_to_both_parties_and_hidden_from_others() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app
        .register(&email("alice"), PASSWORD, "Alice Sender")
        .await;
    let bob = app.register(&email("bob"), PASSWORD, "Bob Receiver").await;
    let eve = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "50.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    let transfer = app
        .transfer(&alice, &a.id, &b.number, "20.00", &key())
        .await;
    let id = id_of(&transfer);
    settle(&app, &alice, &transfer).await;

    expect_code(&app.transfer_by_id_raw(&eve, &id).await, "NOT_FOUND");
    expect_code(
        &app.transfer_by_id_raw(&eve, &Uuid::new_v4().to_string())
            .await,
        "NOT_FOUND",
    );

    let seen_by_sender = app.transfer_by_id(&alice, &id).await;
    let seen_by_recipient = app.transfer_by_id(&bob, &id).await;
    let seen_by_admin = app.transfer_by_id(&admin, &id).await;
    for view in [&seen_by_sender, &seen_by_recipient, &seen_by_admin] {
        assert_eq!(view["id"], id.as_str());
        assert_eq!(view["amount"], "20.00");
        assert_eq!(view["source"]["accountNumber"], a.number.as_str());
        assert_eq!(view["source"]["holderName"], "Alice Sender");
        assert_eq!(view["destination"]["accountNumber"], b.number.as_str());
        assert_eq!(view["destination"]["holderName"], "Bob Receiver");
    }
    // `account` is only resolved for the viewer's own side (admins: both).
    assert_eq!(seen_by_sender["source"]["account"]["id"], a.id.as_str());
    assert!(
        seen_by_sender["destination"]["account"].is_null(),
        "{seen_by_sender}"
    );
    assert!(
        seen_by_recipient["source"]["account"].is_null(),
        "{seen_by_recipient}"
    );
    assert_eq!(
        seen_by_recipient["destination"]["account"]["id"],
        b.id.as_str()
    );
    assert_eq!(seen_by_admin["source"]["account"]["id"], a.id.as_str());
    assert_eq!(seen_by_admin["destination"]["account"]["id"], b.id.as_str());
}

fn email(name: &str) -> String {
    format!("{name}-{}@example.test", Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_are_listed_in_both_directions_newest_first_and_paginated() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.funded_account(&bob, "USD", "100.00").await;

    let funding = expect_data(
        app.gql(
            alice.token(),
            "{ transfers(first: 5) { edges { node { id kind } } } }",
            json!({}),
        )
        .await,
    );
    let mut expected: Vec<String> = vec![
        funding["transfers"]["edges"][0]["node"]["id"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    for (i, amount) in ["1.00", "2.00", "3.00", "4.00", "5.00"].iter().enumerate() {
        let t = if i % 2 == 0 {
            app.transfer(&alice, &a.id, &b.number, amount, &key()).await
        } else {
            app.transfer(&bob, &b.id, &a.number, amount, &key()).await
        };
        settle(&app, &alice, &t).await;
        expected.push(id_of(&t));
    }
    expected.reverse();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let data = expect_data(
            app.gql(
                alice.token(),
                "query P($after: String) { transfers(first: 2, after: $after) { totalCount \
                   edges { cursor node { id kind amount } } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }),
            )
            .await,
        );
        let connection = &data["transfers"];
        assert_eq!(connection["totalCount"], 6, "{connection}");
        let edges = connection["edges"].as_array().unwrap();
        assert!(edges.len() <= 2, "first: 2 returns at most 2 edges");
        seen.extend(
            edges
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap().to_string()),
        );
        pages += 1;
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = Some(
            connection["pageInfo"]["endCursor"]
                .as_str()
                .expect("endCursor when hasNextPage")
                .to_string(),
        );
        assert!(pages < 10, "pagination never ends");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen, expected,
        "both directions, newest first, no gaps or repeats"
    );

    let only_transfers = expect_data(
        app.gql(
            alice.token(),
            "{ transfers(kind: TRANSFER) { totalCount } }",
            json!({}),
        )
        .await,
    );
    assert_eq!(only_transfers["transfers"]["totalCount"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trial_balance_nets_to_zero_and_totals_the_customer_balances() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "500.00").await;
    let b = app.funded_account(&bob, "USD", "250.00").await;
    let e = app.funded_account(&bob, "EUR", "10.00").await;
    let t = app
        .transfer(&alice, &a.id, &b.number, "100.00", &key())
        .await;
    settle(&app, &alice, &t).await;
    let w = app.withdraw(&bob, &b.id, "50.00", &key()).await;
    settle(&app, &bob, &w).await;

    let mut usd_total = 0;
    usd_total += minor(
        app.account(&alice, &a.id).await["balance"]
            .as_str()
            .unwrap(),
        2,
    );
    usd_total += minor(
        app.account(&bob, &b.id).await["balance"].as_str().unwrap(),
        2,
    );
    assert_eq!(usd_total, 70000);
    let eur_total = minor(
        app.account(&bob, &e.id).await["balance"].as_str().unwrap(),
        2,
    );

    let lines = app.trial_balance(&admin).await;
    for (currency, total) in [("USD", usd_total), ("EUR", eur_total)] {
        let line = lines
            .iter()
            .find(|l| l["currency"] == currency)
            .unwrap_or_else(|| panic!("no trial balance line for {currency}: {lines:?}"));
        assert_eq!(line["net"], "0.00", "{line}");
        assert_eq!(
            line["customerTotal"],
            fmt_minor(total, 2).as_str(),
            "{line}"
        );
        assert_eq!(line["systemTotal"], fmt_minor(-total, 2).as_str(), "{line}");
    }
    for line in &lines {
        let net = line["net"].as_str().unwrap();
        assert!(
            net.trim_start_matches('-')
                .chars()
                .all(|c| c == '0' || c == '.'),
            "net {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeating_a_money_mutation_with_the_same_key_returns_the_original_once() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.open_account(&alice, "CHECKING", "USD").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    let deposit_key = key();
    let first = app.deposit(&alice, &a.id, "100.00", &deposit_key).await;
    let second = app.deposit(&alice, &a.id, "100.00", &deposit_key).await;
    assert_eq!(id_of(&first), id_of(&second));
    settle(&app, &alice, &first).await;
    let third = app.deposit(&alice, &a.id, "100", &deposit_key).await;
    assert_eq!(
        id_of(&first),
        id_of(&third),
        "100 and 100.00 are the same input"
    );
    assert_eq!(app.account(&alice, &a.id).await["balance"], "100.00");

    let transfer_key = key();
    let t1 = app
        .transfer(&alice, &a.id, &b.number, "10.00", &transfer_key)
        .await;
    let t2 = app
        .transfer(&alice, &a.id, &b.number, "10.00", &transfer_key)
        .await;
    assert_eq!(id_of(&t1), id_of(&t2));
    settle(&app, &alice, &t1).await;
    let t3 = app
        .transfer(&alice, &a.id, &b.number, "10.00", &transfer_key)
        .await;
    assert_eq!(id_of(&t1), id_of(&t3));
    assert_eq!(
        t3["status"], "COMPLETED",
        "a replay returns the original's current state"
    );

    let after = app.account(&alice, &a.id).await;
    assert_eq!(after["balance"], "90.00");
    assert_eq!(after["availableBalance"], "90.00");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "10.00");
    assert_eq!(transfers_total(&app, &alice).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_identical_transfers_have_exactly_one_effect() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    let k = key();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = app.client();
        let (alice, from, to, k) = (alice.clone(), a.id.clone(), b.number.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            client.transfer_raw(&alice, &from, &to, "10.00", &k).await
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        let resp = task.await.expect("client task");
        ids.insert(id_of(&expect_data(resp)["transfer"]));
    }
    assert_eq!(
        ids.len(),
        1,
        "all 20 replies carry the same transfer: {ids:?}"
    );
    let id = ids.into_iter().next().unwrap();
    assert_eq!(
        app.wait_transfer_final(&alice, &id, SETTLE).await["status"],
        "COMPLETED"
    );
    let after = app.account(&alice, &a.id).await;
    assert_eq!(after["balance"], "90.00");
    assert_eq!(after["availableBalance"], "90.00");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "10.00");
    let only_transfers = expect_data(
        app.gql(
            alice.token(),
            "{ transfers(kind: TRANSFER) { totalCount } }",
            json!({}),
        )
        .await,
    );
    assert_eq!(only_transfers["transfers"]["totalCount"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_key_with_another_input_is_idempotency_conflict() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;
    let k = key();
    let original = app.transfer(&alice, &a.id, &b.number, "10.00", &k).await;
    expect_code(
        &app.transfer_raw(&alice, &a.id, &b.number, "11.00", &k)
            .await,
        "IDEMPOTENCY_CONFLICT",
    );
    let dk = key();
    app.deposit(&alice, &a.id, "5.00", &dk).await;
    expect_code(
        &app.deposit_raw(&alice, &a.id, "6.00", &dk).await,
        "IDEMPOTENCY_CONFLICT",
    );
    settle(&app, &alice, &original).await;
    assert_eq!(app.account(&bob, &b.id).await["balance"], "10.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_belong_to_their_user() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.open_account(&alice, "CHECKING", "USD").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;
    let k = key();
    let da = app.deposit(&alice, &a.id, "5.00", &k).await;
    let db = app.deposit(&bob, &b.id, "7.00", &k).await;
    assert_ne!(id_of(&da), id_of(&db), "another user's key is not a replay");
    settle(&app, &alice, &da).await;
    settle(&app, &bob, &db).await;
    assert_eq!(app.account(&alice, &a.id).await["balance"], "5.00");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "7.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reversal_moves_the_money_back_and_is_audited() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;
    let t = app
        .transfer(&alice, &a.id, &b.number, "40.00", &key())
        .await;
    settle(&app, &alice, &t).await;

    let reason = format!("fraud claim {}", Uuid::new_v4().simple());
    let reversal = expect_data(
        app.gql(
            admin.token(),
            &format!("mutation R($id: ID!, $r: String!) {{ reverseTransfer(id: $id, reason: $r) {{ {TRANSFER_FIELDS} }} }}"),
            json!({ "id": id_of(&t), "r": reason }),
        )
        .await,
    )["reverseTransfer"]
        .clone();
    assert_eq!(reversal["kind"], "REVERSAL");
    assert_eq!(reversal["amount"], "40.00");
    assert_eq!(settle(&app, &admin, &reversal).await["status"], "COMPLETED");
    assert_eq!(app.account(&alice, &a.id).await["balance"], "100.00");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "0.00");

    let audit = expect_data(
        app.gql(
            admin.token(),
            "{ auditLog(first: 20) { edges { node { action reason targetId } } } }",
            json!({}),
        )
        .await,
    );
    assert!(
        audit["auditLog"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["node"]["reason"] == reason.as_str()),
        "the reversal is audited with its reason: {audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_frozen_account_fails_and_releases_hold() {
    let mut app = TestApp::builder().workers(1).spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    // With the only worker gone the transfer stays pending while the
    // destination gets frozen.
    app.workers[0].kill9().await;
    let t = app
        .transfer(&alice, &a.id, &b.number, "40.00", &key())
        .await;
    assert_eq!(t["status"], "PENDING");
    assert_eq!(
        app.account(&alice, &a.id).await["availableBalance"],
        "60.00"
    );
    expect_data(
        app.gql(
            admin.token(),
            "mutation F($id: ID!) { freezeAccount(id: $id, reason: \"court order\") { status } }",
            json!({ "id": b.id }),
        )
        .await,
    );

    let _worker = app.spawn_worker().await;
    let done = app
        .wait_transfer_final(&alice, &id_of(&t), Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        done["failureReason"]
            .as_str()
            .is_some_and(|r| r.contains("ACCOUNT_FROZEN")),
        "failureReason names ACCOUNT_FROZEN: {done}"
    );
    let after = app.account(&alice, &a.id).await;
    assert_eq!(after["balance"], "100.00");
    assert_eq!(after["availableBalance"], "100.00", "the hold is released");
    assert_eq!(app.account(&admin, &b.id).await["balance"], "0.00");
    app.assert_ledger_consistent().await;
}

/// Reads `corebank_db_statements_total` around one `transfers` query.
async fn statements_for(app: &TestApp, s: &Session, first: i64) -> f64 {
    let query = "query L($n: Int) { transfers(first: $n) { totalCount edges { node { id amount \
                   source { accountNumber holderName account { id number } } \
                   destination { accountNumber holderName account { id number } } } } } }";
    let before = metric_value(&app.metrics().await, "corebank_db_statements_total")
        .expect("/metrics exposes corebank_db_statements_total");
    let data = expect_data(app.gql(s.token(), query, json!({ "n": first })).await);
    let after = metric_value(&app.metrics().await, "corebank_db_statements_total")
        .expect("/metrics exposes corebank_db_statements_total");
    let edges = data["transfers"]["edges"].as_array().unwrap();
    assert_eq!(edges.len() as i64, first, "page size");
    for edge in edges {
        let node = &edge["node"];
        if node["source"].is_object() {
            assert!(node["source"]["holderName"].as_str().is_some(), "{node}");
        }
        assert!(
            node["destination"]["holderName"].as_str().is_some(),
            "{node}"
        );
    }
    after - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_transfers_takes_the_same_number_of_statements_for_any_page_size() {
    // A separate worker process keeps settlement statements out of the api
    // process's counter.
    let app = TestApp::builder().workers(1).spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "1000.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    let client = app.client();
    let results: Vec<Value> = futures::stream::iter(0..100)
        .map(|_| {
            let (client, alice, a, b) = (client.clone(), alice.clone(), a.clone(), b.clone());
            async move {
                client
                    .transfer_raw(&alice, &a.id, &b.number, "1.00", &key())
                    .await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for resp in results {
        expect_data(resp);
    }
    app.wait_no_pending(&admin, Duration::from_secs(60)).await;

    // Background work could add statements to one sample but never remove
    // any, so the least of three samples is the cost of the query itself.
    let mut big = f64::MAX;
    let mut small = f64::MAX;
    for _ in 0..3 {
        big = big.min(statements_for(&app, &alice, 100).await);
        small = small.min(statements_for(&app, &alice, 10).await);
    }
    assert!(small > 0.0, "the counter counts the query's statements");
    assert_eq!(
        big, small,
        "transfers(first: 100) ran {big} statements, transfers(first: 10) ran {small}: \
         parties are loaded per row (N+1) instead of batched"
    );
}
