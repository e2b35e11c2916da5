//! Opening, listing, closing and freezing accounts (contract §3, §4, §5).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(30);

async fn settle(app: &TestApp, s: &Session, transfer: &Value) -> Value {
    let id = transfer["id"].as_str().expect("transfer id");
    app.wait_transfer_final(s, id, SETTLE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_account_returns_an_active_account_with_a_luhn_checked_twelve_digit_number() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let mut numbers = Vec::new();
    for (kind, currency, zero) in [
        ("CHECKING", "USD", "0.00"),
        ("SAVINGS", "JPY", "0"),
        ("CHECKING", "EUR", "0.00"),
        ("SAVINGS", "GBP", "0.00"),
    ] {
        let data = expect_data(app.open_account_raw(&user, kind, currency).await);
        let account = &data["openAccount"];
        let number = account["number"].as_str().expect("number");
        assert_eq!(number.len(), 12, "account number {number:?} has 12 digits");
        assert!(
            number.bytes().all(|b| b.is_ascii_digit()),
            "{number:?} is all digits"
        );
        assert!(
            luhn_valid(number),
            "{number:?} ends with a Luhn check digit"
        );
        assert_eq!(account["status"], "ACTIVE");
        assert_eq!(account["kind"], kind);
        assert_eq!(account["currency"], currency);
        assert_eq!(account["balance"], zero);
        assert_eq!(account["availableBalance"], zero);
        assert_eq!(account["owner"]["id"], user.user_id);
        numbers.push(number.to_string());

        let fetched = app.account(&user, account["id"].as_str().unwrap()).await;
        assert_eq!(fetched["number"], number);
        assert_eq!(fetched["balance"], zero);
    }
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 4, "account numbers are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_account_name_is_kept() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let data = expect_data(
        app.gql(
            user.token(),
            "mutation { openAccount(input: {kind: SAVINGS, currency: \"USD\", name: \"Rainy day\"}) { id name kind } }",
            json!({}),
        )
        .await,
    );
    assert_eq!(data["openAccount"]["name"], "Rainy day");
    assert_eq!(data["openAccount"]["kind"], "SAVINGS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_listed_newest_first_with_a_total_count() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let other = app.register_random().await;
    app.open_account(&other, "CHECKING", "USD").await;
    let mut ids = Vec::new();
    for currency in ["USD", "EUR", "GBP"] {
        ids.push(app.open_account(&user, "CHECKING", currency).await.id);
    }
    ids.reverse();

    let data = expect_data(
        app.gql(
            user.token(),
            "{ accounts(first: 10) { totalCount edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }",
            json!({}),
        )
        .await,
    );
    let connection = &data["accounts"];
    assert_eq!(
        connection["totalCount"], 3,
        "only the viewer's accounts: {connection}"
    );
    let listed: Vec<&str> = connection["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids, "newest first");
    assert_eq!(connection["pageInfo"]["hasNextPage"], false);

    // Paging by one walks the same order.
    let mut after: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let data = expect_data(
            app.gql(
                user.token(),
                "query P($after: String) { accounts(first: 1, after: $after) { totalCount edges { node { id } } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }),
            )
            .await,
        );
        let connection = &data["accounts"];
        for edge in connection["edges"].as_array().unwrap() {
            paged.push(edge["node"]["id"].as_str().unwrap().to_string());
        }
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = connection["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_string);
        assert!(paged.len() <= 3, "pagination does not end: {paged:?}");
    }
    assert_eq!(paged, ids);

    // The same list hangs off `me`.
    let data = expect_data(
        app.gql(
            user.token(),
            "{ me { accounts { totalCount } } }",
            json!({}),
        )
        .await,
    );
    assert_eq!(data["me"]["accounts"]["totalCount"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_customers_account_and_an_unknown_id_are_not_found() {
    let app = TestApp::spawn().await;
    let owner = app.register_random().await;
    let stranger = app.register_random().await;
    let account = app.open_account(&owner, "CHECKING", "USD").await;

    expect_code(&app.account_raw(&stranger, &account.id).await, "NOT_FOUND");
    let unknown = Uuid::new_v4().to_string();
    expect_code(&app.account_raw(&owner, &unknown).await, "NOT_FOUND");

    // Admins see any account.
    let admin = app.admin().await;
    assert_eq!(
        app.account(&admin, &account.id).await["number"],
        account.number
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_an_empty_account_marks_it_closed() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let account = app.open_account(&user, "CHECKING", "USD").await;
    let data = expect_data(app.close_account_raw(&user, &account.id).await);
    assert_eq!(data["closeAccount"]["status"], "CLOSED");
    assert_eq!(app.account(&user, &account.id).await["status"], "CLOSED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_an_account_that_holds_money_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let account = app.funded_account(&user, "USD", "5.00").await;
    let resp = app.close_account_raw(&user, &account.id).await;
    expect_code(&resp, "BAD_USER_INPUT");
    let after = app.account(&user, &account.id).await;
    assert_eq!(after["status"], "ACTIVE");
    assert_eq!(after["balance"], "5.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_another_customers_account_is_not_found() {
    let app = TestApp::spawn().await;
    let owner = app.register_random().await;
    let stranger = app.register_random().await;
    let account = app.open_account(&owner, "CHECKING", "USD").await;
    expect_code(
        &app.close_account_raw(&stranger, &account.id).await,
        "NOT_FOUND",
    );
    assert_eq!(app.account(&owner, &account.id).await["status"], "ACTIVE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_into_a_closed_account_fails_with_account_closed() {
    let app = TestApp::spawn().await;
    let sender = app.register_random().await;
    let owner = app.register_random().await;
    let source = app.funded_account(&sender, "USD", "50.00").await;
    let closed = app.open_account(&owner, "CHECKING", "USD").await;
    expect_data(app.close_account_raw(&owner, &closed.id).await);

    let deposit = app.deposit_raw(&owner, &closed.id, "10.00", &key()).await;
    expect_code(&deposit, "ACCOUNT_CLOSED");
    let transfer = app
        .transfer_raw(&sender, &source.id, &closed.number, "10.00", &key())
        .await;
    expect_code(&transfer, "ACCOUNT_CLOSED");

    let source_after = app.account(&sender, &source.id).await;
    assert_eq!(source_after["balance"], "50.00");
    assert_eq!(source_after["availableBalance"], "50.00");
    assert_eq!(app.account(&owner, &closed.id).await["balance"], "0.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_an_account_in_an_unknown_currency_is_rejected() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    for currency in ["XYZ", "", "DOLLARS"] {
        let resp = app.open_account_raw(&user, "CHECKING", currency).await;
        expect_code(&resp, "BAD_USER_INPUT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_account_neither_sends_nor_receives_and_the_freeze_is_audited() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.funded_account(&bob, "USD", "100.00").await;

    // Customers cannot freeze.
    let resp = app
        .gql(
            bob.token(),
            "mutation F($id: ID!) { freezeAccount(id: $id, reason: \"mine\") { status } }",
            json!({ "id": a.id }),
        )
        .await;
    expect_code(&resp, "FORBIDDEN");

    let reason = format!("suspicious activity {}", Uuid::new_v4().simple());
    let frozen = expect_data(
        app.gql(
            admin.token(),
            "mutation F($id: ID!, $r: String!) { freezeAccount(id: $id, reason: $r) { id status } }",
            json!({ "id": b.id, "r": reason }),
        )
        .await,
    );
    assert_eq!(frozen["freezeAccount"]["status"], "FROZEN");

    expect_code(
        &app.deposit_raw(&bob, &b.id, "1.00", &key()).await,
        "ACCOUNT_FROZEN",
    );
    expect_code(
        &app.transfer_raw(&alice, &a.id, &b.number, "1.00", &key())
            .await,
        "ACCOUNT_FROZEN",
    );
    expect_code(
        &app.transfer_raw(&bob, &b.id, &a.number, "1.00", &key())
            .await,
        "ACCOUNT_FROZEN",
    );
    expect_code(
        &app.withdraw_raw(&bob, &b.id, "1.00", &key()).await,
        "ACCOUNT_FROZEN",
    );
    assert_eq!(app.account(&bob, &b.id).await["availableBalance"], "100.00");

    let audit = expect_data(
        app.gql(
            admin.token(),
            "{ auditLog(first: 20) { edges { node { action targetId reason actor { id } createdAt } } } }",
            json!({}),
        )
        .await,
    );
    let entries = audit["auditLog"]["edges"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["node"]["targetId"] == b.id.as_str()
                && e["node"]["reason"] == reason.as_str()
                && e["node"]["actor"]["id"] == admin.user_id.as_str()),
        "no audit entry for the freeze with its reason: {audit}"
    );

    let unfrozen = expect_data(
        app.gql(
            admin.token(),
            "mutation U($id: ID!) { unfreezeAccount(id: $id) { status } }",
            json!({ "id": b.id }),
        )
        .await,
    );
    assert_eq!(unfrozen["unfreezeAccount"]["status"], "ACTIVE");
    let transfer = app.transfer(&alice, &a.id, &b.number, "1.00", &key()).await;
    assert_eq!(settle(&app, &alice, &transfer).await["status"], "COMPLETED");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "101.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_can_change_the_account_kind() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.register_random().await;
    let account = app.open_account(&user, "CHECKING", "USD").await;
    let data = expect_data(
        app.gql(
            admin.token(),
            "mutation K($id: ID!) { changeAccountKind(id: $id, kind: SAVINGS) { kind } }",
            json!({ "id": account.id }),
        )
        .await,
    );
    assert_eq!(data["changeAccountKind"]["kind"], "SAVINGS");
    assert_eq!(app.account(&user, &account.id).await["kind"], "SAVINGS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezing_and_unfreezing_notify_the_owner_with_the_reason() {
    let app = TestApp::spawn().await;
    let owner = app.register_random().await;
    let admin = app.admin().await;
    let account = app.open_account(&owner, "CHECKING", "USD").await;
    let freeze =
        "mutation F($id: ID!, $r: String!) { freezeAccount(id: $id, reason: $r) { status } }";
    expect_data(
        app.gql(
            admin.token(),
            freeze,
            json!({"id": account.id, "r": "fraud report 77"}),
        )
        .await,
    );
    let unfreeze = "mutation U($id: ID!) { unfreezeAccount(id: $id) { status } }";
    expect_data(
        app.gql(admin.token(), unfreeze, json!({"id": account.id}))
            .await,
    );

    let inbox = expect_data(
        app.gql(
            owner.token(),
            "{ notifications(first: 10) { edges { node { kind subject body } } } }",
            json!({}),
        )
        .await,
    );
    let nodes: Vec<&Value> = inbox["notifications"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .collect();
    let frozen = nodes
        .iter()
        .find(|n| n["kind"] == "ACCOUNT_FROZEN")
        .unwrap_or_else(|| panic!("no ACCOUNT_FROZEN in {inbox}"));
    assert!(
        frozen["body"].as_str().unwrap().contains("fraud report 77"),
        "{frozen}"
    );
    assert!(
        frozen["subject"]
            .as_str()
            .unwrap()
            .contains(&account.number),
        "{frozen}"
    );
    assert!(
        nodes.iter().any(|n| n["kind"] == "ACCOUNT_UNFROZEN"),
        "no ACCOUNT_UNFROZEN in {inbox}"
    );
    // Newest first: the unfreeze came last.
    assert_eq!(nodes[0]["kind"], "ACCOUNT_UNFROZEN", "{inbox}");
}
