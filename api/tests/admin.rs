//! Running the bank (contract §4, §5): admin operations and their audit
//! trail, roles, reversals, the admin listings, and saved payees.
//!
//! Already covered elsewhere and not repeated here: freezing blocks both
//! directions (accounts.rs), a pending transfer toward an account frozen
//! before settlement fails with ACCOUNT_FROZEN and releases its hold
//! (money.rs), a basic transfer reversal (money.rs), changeAccountKind
//! (accounts.rs).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(30);

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

async fn settle(app: &TestApp, s: &Session, transfer: &Value) -> Value {
    app.wait_transfer_final(s, &id_of(transfer), SETTLE).await
}

async fn audit_count(app: &TestApp, admin: &Session) -> i64 {
    expect_data(
        app.gql(
            admin.token(),
            "{ auditLog(first: 1) { totalCount } }",
            json!({}),
        )
        .await,
    )["auditLog"]["totalCount"]
        .as_i64()
        .expect("audit totalCount")
}

/// The newest audit entries, newest first.
async fn audit_entries(app: &TestApp, admin: &Session, n: usize) -> Vec<Value> {
    let data = expect_data(
        app.gql(
            admin.token(),
            "query($n: Int) { auditLog(first: $n) { totalCount edges { node { \
               id action targetId reason createdAt actor { id email role } } } } }",
            json!({ "n": n }),
        )
        .await,
    );
    data["auditLog"]["edges"]
        .as_array()
        .expect("audit edges")
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

async fn reverse_raw(app: &TestApp, admin: &Session, id: &str, reason: &str) -> Value {
    app.gql(
        admin.token(),
        &format!(
            "mutation R($id: ID!, $r: String!) {{ reverseTransfer(id: $id, reason: $r) {{ {TRANSFER_FIELDS} }} }}"
        ),
        json!({ "id": id, "r": reason }),
    )
    .await
}

async fn set_role_raw(app: &TestApp, admin: &Session, user_id: &str, role: &str) -> Value {
    app.gql(
        admin.token(),
        "mutation S($u: ID!, $r: Role!) { setUserRole(userId: $u, role: $r) { id role } }",
        json!({ "u": user_id, "r": role }),
    )
    .await
}

async fn transfers_of_kind(app: &TestApp, admin: &Session, kind: &str) -> Vec<Value> {
    let data = expect_data(
        app.gql(
            admin.token(),
            &format!(
                "query($k: TransferKind) {{ allTransfers(kind: $k, first: 100) {{ totalCount \
                   edges {{ node {{ {TRANSFER_FIELDS} }} }} }} }}"
            ),
            json!({ "k": kind }),
        )
        .await,
    );
    data["allTransfers"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

// ---------------------------------------------------------------------------
// Customers and admin operations
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_are_forbidden_every_admin_operation_even_on_their_own_objects() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let carol = app.register_random().await;
    let dave = app.register_random().await;
    let c = app.funded_account(&carol, "USD", "100.00").await;
    let d = app.open_account(&dave, "CHECKING", "USD").await;
    let t = app
        .transfer(&carol, &c.id, &d.number, "25.00", &key())
        .await;
    settle(&app, &carol, &t).await;
    let deadline = std::time::Instant::now() + SETTLE;
    let notification = loop {
        if let Some(n) = app.notifications(&carol).await.first() {
            break id_of(n);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Carol got no notification"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let audit_before = audit_count(&app, &admin).await;

    let unknown = Uuid::new_v4().to_string();
    let operations: Vec<(&str, Value)> = vec![
        (
            "mutation($id: ID!) { freezeAccount(id: $id, reason: \"mine\") { status } }",
            json!({ "id": c.id }),
        ),
        (
            "mutation($id: ID!) { unfreezeAccount(id: $id) { status } }",
            json!({ "id": c.id }),
        ),
        (
            "mutation($id: ID!) { changeAccountKind(id: $id, kind: SAVINGS) { kind } }",
            json!({ "id": c.id }),
        ),
        (
            "mutation($id: ID!) { reverseTransfer(id: $id, reason: \"changed my mind\") { id } }",
            json!({ "id": id_of(&t) }),
        ),
        (
            "mutation($id: ID!) { retryNotification(id: $id) { id } }",
            json!({ "id": notification }),
        ),
        (
            "mutation($id: ID!) { setUserRole(userId: $id, role: ADMIN) { role } }",
            json!({ "id": carol.user_id }),
        ),
        // The guard comes before the lookup: an unknown id is FORBIDDEN too.
        (
            "mutation($id: ID!) { freezeAccount(id: $id, reason: \"x\") { status } }",
            json!({ "id": unknown }),
        ),
        (
            "mutation($id: ID!) { reverseTransfer(id: $id, reason: \"x\") { id } }",
            json!({ "id": unknown }),
        ),
        (
            "mutation($id: ID!) { setUserRole(userId: $id, role: CUSTOMER) { role } }",
            json!({ "id": admin.user_id }),
        ),
        (
            "{ users(first: 5) { totalCount edges { node { email } } } }",
            json!({}),
        ),
        (
            "{ allAccounts(first: 5) { totalCount edges { node { id balance } } } }",
            json!({}),
        ),
        (
            "{ allTransfers(first: 5) { totalCount edges { node { id } } } }",
            json!({}),
        ),
        (
            "{ auditLog(first: 5) { totalCount edges { node { action } } } }",
            json!({}),
        ),
        (
            "{ failedNotifications(first: 5) { totalCount edges { node { id } } } }",
            json!({}),
        ),
        (
            "{ trialBalance { currency customerTotal systemTotal net } }",
            json!({}),
        ),
    ];
    for (doc, vars) in &operations {
        let resp = app.gql(carol.token(), doc, vars.clone()).await;
        assert_eq!(error_codes(&resp), ["FORBIDDEN"], "{doc}: {resp}");
        assert!(resp["data"].is_null(), "{doc}: {resp}");
    }

    assert_eq!(
        audit_count(&app, &admin).await,
        audit_before,
        "a refused operation was audited"
    );
    let account = app.account(&carol, &c.id).await;
    assert_eq!(account["status"], "ACTIVE");
    assert_eq!(account["kind"], "CHECKING");
    assert_eq!(account["balance"], "75.00");
    assert_eq!(account["availableBalance"], "75.00");
    assert!(transfers_of_kind(&app, &admin, "REVERSAL").await.is_empty());
    assert_eq!(
        expect_data(app.me_raw(carol.token()).await)["me"]["role"],
        "CUSTOMER"
    );
    assert_eq!(
        expect_data(app.me_raw(admin.token()).await)["me"]["role"],
        "ADMIN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_operation_leaves_an_audit_entry_with_actor_target_and_reason() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;
    let t = app
        .transfer(&alice, &a.id, &b.number, "30.00", &key())
        .await;
    settle(&app, &alice, &t).await;

    // A second admin, so that the actor is not always the same person.
    expect_data(set_role_raw(&app, &admin, &bob.user_id, "ADMIN").await);
    let bob_admin = app.login(&bob.email, PASSWORD).await;

    let freeze_reason = format!("fraud review {}", Uuid::new_v4().simple());
    let reverse_reason = format!("customer dispute {}", Uuid::new_v4().simple());
    struct Op {
        actor: Session,
        doc: String,
        vars: Value,
        action: &'static str,
        target: String,
        reason: Option<String>,
    }
    let ops = vec![
        Op {
            actor: admin.clone(),
            doc:
                "mutation($id: ID!, $r: String!) { freezeAccount(id: $id, reason: $r) { status } }"
                    .into(),
            vars: json!({ "id": a.id, "r": freeze_reason }),
            action: "FREEZE_ACCOUNT",
            target: a.id.clone(),
            reason: Some(freeze_reason.clone()),
        },
        Op {
            actor: bob_admin.clone(),
            doc: "mutation($id: ID!) { unfreezeAccount(id: $id) { status } }".into(),
            vars: json!({ "id": a.id }),
            action: "UNFREEZE_ACCOUNT",
            target: a.id.clone(),
            reason: None,
        },
        Op {
            actor: admin.clone(),
            doc: "mutation($id: ID!) { changeAccountKind(id: $id, kind: SAVINGS) { kind } }".into(),
            vars: json!({ "id": b.id }),
            action: "CHANGE_ACCOUNT_KIND",
            target: b.id.clone(),
            reason: None,
        },
        Op {
            actor: bob_admin.clone(),
            doc: "mutation($id: ID!, $r: String!) { reverseTransfer(id: $id, reason: $r) { id } }"
                .into(),
            vars: json!({ "id": id_of(&t), "r": reverse_reason }),
            action: "REVERSE_TRANSFER",
            target: id_of(&t),
            reason: Some(reverse_reason.clone()),
        },
        Op {
            actor: admin.clone(),
            doc: "mutation($id: ID!) { setUserRole(userId: $id, role: ADMIN) { role } }".into(),
            vars: json!({ "id": alice.user_id }),
            action: "SET_USER_ROLE",
            target: alice.user_id.clone(),
            reason: None,
        },
    ];
    let mut count = audit_count(&app, &admin).await;
    let mut seen = Vec::new();
    for op in &ops {
        expect_data(app.gql(op.actor.token(), &op.doc, op.vars.clone()).await);
        let after = audit_count(&app, &admin).await;
        assert_eq!(
            after,
            count + 1,
            "{}: exactly one new audit entry",
            op.action
        );
        count = after;
        let entry = audit_entries(&app, &admin, 1).await.remove(0);
        assert_eq!(entry["action"], op.action, "{entry}");
        assert_eq!(
            entry["targetId"],
            op.target.as_str(),
            "{}: {entry}",
            op.action
        );
        assert_eq!(
            entry["actor"]["id"],
            op.actor.user_id.as_str(),
            "{}: {entry}",
            op.action
        );
        assert_eq!(
            entry["actor"]["email"],
            op.actor.email.as_str(),
            "{}: {entry}",
            op.action
        );
        if let Some(reason) = &op.reason {
            assert_eq!(entry["reason"], reason.as_str(), "{}: {entry}", op.action);
        }
        let at = entry["createdAt"].as_str().expect("createdAt");
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok(),
            "createdAt {at} is not RFC 3339"
        );
        seen.push(id_of(&entry));
    }
    // The log lists them newest first.
    let listed: Vec<String> = audit_entries(&app, &admin, ops.len())
        .await
        .iter()
        .map(id_of)
        .collect();
    seen.reverse();
    assert_eq!(listed, seen, "auditLog is newest first");

    // Refused admin operations leave no entry.
    let closed = app.open_account(&bob_admin, "CHECKING", "USD").await;
    expect_data(app.close_account_raw(&bob_admin, &closed.id).await);
    let count = audit_count(&app, &admin).await;
    let refused: Vec<(&str, Value, &str)> = vec![
        (
            "mutation($id: ID!) { freezeAccount(id: $id, reason: \"closed\") { status } }",
            json!({ "id": closed.id }),
            "ACCOUNT_CLOSED",
        ),
        (
            "mutation($id: ID!) { freezeAccount(id: $id, reason: \"   \") { status } }",
            json!({ "id": a.id }),
            "BAD_USER_INPUT",
        ),
        (
            "mutation($id: ID!) { freezeAccount(id: $id, reason: \"nobody\") { status } }",
            json!({ "id": Uuid::new_v4().to_string() }),
            "NOT_FOUND",
        ),
        (
            "mutation($id: ID!) { reverseTransfer(id: $id, reason: \"again\") { id } }",
            json!({ "id": id_of(&t) }),
            "BAD_USER_INPUT",
        ),
        (
            "mutation($id: ID!) { setUserRole(userId: $id, role: ADMIN) { role } }",
            json!({ "id": Uuid::new_v4().to_string() }),
            "NOT_FOUND",
        ),
    ];
    for (doc, vars, code) in refused {
        let resp = app.gql(admin.token(), doc, vars).await;
        assert_eq!(error_codes(&resp), [code], "{doc}: {resp}");
    }
    assert_eq!(
        audit_count(&app, &admin).await,
        count,
        "a refused admin operation was audited"
    );
}

// ---------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------

async fn role_of(app: &TestApp, s: &Session) -> Value {
    expect_data(app.me_raw(s.token()).await)["me"]["role"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_user_role_promotes_and_demotes_and_the_old_token_dies() {
    let app = TestApp::spawn().await;
    let root = app.admin().await;
    let bob = app.register_random().await;

    // Promote: Bob's token issued as a customer stops working.
    let data = expect_data(set_role_raw(&app, &root, &bob.user_id, "ADMIN").await);
    assert_eq!(data["setUserRole"]["role"], "ADMIN");
    expect_code(&app.me_raw(bob.token()).await, "UNAUTHENTICATED");
    let bob = app.login(&bob.email, PASSWORD).await;
    assert_eq!(role_of(&app, &bob).await, "ADMIN");
    expect_data(
        app.gql(
            bob.token(),
            "{ allAccounts(first: 1) { totalCount } }",
            json!({}),
        )
        .await,
    );

    // Bob demotes the bootstrap admin: the old admin token dies, and a new
    // one is a customer's.
    expect_data(set_role_raw(&app, &bob, &root.user_id, "CUSTOMER").await);
    expect_code(&app.me_raw(root.token()).await, "UNAUTHENTICATED");
    let root = app.admin().await;
    assert_eq!(role_of(&app, &root).await, "CUSTOMER");
    expect_code(
        &app.gql(
            root.token(),
            "{ allAccounts(first: 1) { totalCount } }",
            json!({}),
        )
        .await,
        "FORBIDDEN",
    );

    // Bob is the last admin: he cannot demote himself, and the refusal
    // changes nothing (his token still works, he is still ADMIN).
    let audit = audit_count(&app, &bob).await;
    expect_code(
        &set_role_raw(&app, &bob, &bob.user_id, "CUSTOMER").await,
        "BAD_USER_INPUT",
    );
    assert_eq!(role_of(&app, &bob).await, "ADMIN");
    assert_eq!(audit_count(&app, &bob).await, audit);

    // With a second admin again, Bob may step down.
    expect_data(set_role_raw(&app, &bob, &root.user_id, "ADMIN").await);
    let root = app.admin().await;
    assert_eq!(role_of(&app, &root).await, "ADMIN");
    expect_data(set_role_raw(&app, &bob, &bob.user_id, "CUSTOMER").await);
    expect_code(&app.me_raw(bob.token()).await, "UNAUTHENTICATED");
    let bob = app.login(&bob.email, PASSWORD).await;
    assert_eq!(role_of(&app, &bob).await, "CUSTOMER");

    // And the bootstrap admin, now alone, cannot step down.
    expect_code(
        &set_role_raw(&app, &root, &root.user_id, "CUSTOMER").await,
        "BAD_USER_INPUT",
    );
    assert_eq!(role_of(&app, &root).await, "ADMIN");

    // Unknown or malformed user ids.
    expect_code(
        &set_role_raw(&app, &root, &Uuid::new_v4().to_string(), "ADMIN").await,
        "NOT_FOUND",
    );
    expect_code(
        &set_role_raw(&app, &root, "not-an-id", "ADMIN").await,
        "NOT_FOUND",
    );
}

async fn admin_count(app: &TestApp) -> i64 {
    let rows = app
        .sql("SELECT COUNT(*)::bigint AS n FROM users WHERE upper(role) = 'ADMIN'")
        .await;
    rows[0].try_get::<i64>("", "n").expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_demoting_each_other_at_once_leave_an_admin() {
    let app = TestApp::spawn().await;
    let mut current = app.admin().await;
    for round in 0..10 {
        let newcomer = app.register_random().await;
        expect_data(set_role_raw(&app, &current, &newcomer.user_id, "ADMIN").await);
        let newcomer = app.login(&newcomer.email, PASSWORD).await;
        assert_eq!(admin_count(&app).await, 2);

        let (x, y) = tokio::join!(
            set_role_raw(&app, &current, &newcomer.user_id, "CUSTOMER"),
            set_role_raw(&app, &newcomer, &current.user_id, "CUSTOMER"),
        );
        let admins = admin_count(&app).await;
        assert!(
            admins >= 1,
            "round {round}: two admins demoted each other at once and the bank has no admin left \
             ({:?} / {:?})",
            error_codes(&x),
            error_codes(&y)
        );
        // Carry on with whoever is still an admin.
        let current_is_admin = role_of_by_login(&app, &current).await;
        current = if current_is_admin.1 == "ADMIN" {
            current_is_admin.0
        } else {
            let again = app.login(&newcomer.email, PASSWORD).await;
            assert_eq!(role_of(&app, &again).await, "ADMIN");
            again
        };
    }
}

/// Logs `s` in again and returns the fresh session and its role.
async fn role_of_by_login(app: &TestApp, s: &Session) -> (Session, String) {
    let password = if s.email == ADMIN_EMAIL {
        ADMIN_PASSWORD
    } else {
        PASSWORD
    };
    let fresh = app.login(&s.email, password).await;
    let role = role_of(app, &fresh)
        .await
        .as_str()
        .unwrap_or("")
        .to_string();
    (fresh, role)
}

// ---------------------------------------------------------------------------
// Reversals
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_and_a_withdrawal_can_be_reversed() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let a = app.open_account(&alice, "CHECKING", "USD").await;

    // A deposit made in error: the money goes back to the cash channel.
    let deposit = app.deposit(&alice, &a.id, "50.00", &key()).await;
    settle(&app, &alice, &deposit).await;
    let reversal = expect_data(
        reverse_raw(&app, &admin, &id_of(&deposit), "deposited twice").await,
    )["reverseTransfer"]
        .clone();
    assert_eq!(reversal["kind"], "REVERSAL");
    assert_eq!(reversal["amount"], "50.00");
    assert_eq!(
        reversal["source"]["account"]["id"],
        a.id.as_str(),
        "{reversal}"
    );
    assert!(reversal["destination"].is_null(), "{reversal}");
    assert_eq!(settle(&app, &admin, &reversal).await["status"], "COMPLETED");
    let after = app.account(&alice, &a.id).await;
    assert_eq!(after["balance"], "0.00");
    assert_eq!(after["availableBalance"], "0.00");

    // A withdrawal that never paid out: the money comes back.
    let deposit = app.deposit(&alice, &a.id, "100.00", &key()).await;
    settle(&app, &alice, &deposit).await;
    let withdrawal = app.withdraw(&alice, &a.id, "30.00", &key()).await;
    settle(&app, &alice, &withdrawal).await;
    assert_eq!(app.account(&alice, &a.id).await["balance"], "70.00");
    let reversal = expect_data(reverse_raw(&app, &admin, &id_of(&withdrawal), "ATM fault").await)
        ["reverseTransfer"]
        .clone();
    assert_eq!(reversal["kind"], "REVERSAL");
    assert!(reversal["source"].is_null(), "{reversal}");
    assert_eq!(
        reversal["destination"]["account"]["id"],
        a.id.as_str(),
        "{reversal}"
    );
    assert_eq!(settle(&app, &admin, &reversal).await["status"], "COMPLETED");
    assert_eq!(app.account(&alice, &a.id).await["balance"], "100.00");

    // Alice sees both reversals; the originals stay COMPLETED.
    let data = expect_data(
        app.gql(
            alice.token(),
            "query($a: ID) { transfers(accountId: $a, kind: REVERSAL) { totalCount } }",
            json!({ "a": a.id }),
        )
        .await,
    );
    assert_eq!(data["transfers"]["totalCount"], 2);
    assert_eq!(
        app.transfer_by_id(&alice, &id_of(&withdrawal)).await["status"],
        "COMPLETED"
    );
    for line in app.trial_balance(&admin).await {
        assert_eq!(line["net"], "0.00", "{line}");
    }
    app.assert_ledger_consistent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_reversed_at_most_once_and_only_when_completed() {
    let mut app = TestApp::builder().workers(1).spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;
    let t = app
        .transfer(&alice, &a.id, &b.number, "40.00", &key())
        .await;
    settle(&app, &alice, &t).await;

    // Eight admins' clicks at once: one reversal.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = app.client();
        let admin = admin.clone();
        let id = id_of(&t);
        tasks.push(tokio::spawn(async move {
            client
                .gql(
                    admin.token(),
                    "mutation($id: ID!, $r: String!) { reverseTransfer(id: $id, reason: $r) { id } }",
                    json!({ "id": id, "r": format!("click {i}") }),
                )
                .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        let resp = task.await.expect("reversal task");
        match error_codes(&resp).as_slice() {
            [] => ok += 1,
            [code] if code == "BAD_USER_INPUT" => {}
            other => panic!("unexpected answer {other:?}: {resp}"),
        }
    }
    assert_eq!(
        ok, 1,
        "exactly one of eight concurrent reversals is accepted"
    );
    let reversals = transfers_of_kind(&app, &admin, "REVERSAL").await;
    assert_eq!(reversals.len(), 1, "{reversals:?}");
    let entries = audit_entries(&app, &admin, 50).await;
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["action"] == "REVERSE_TRANSFER")
            .count(),
        1,
        "{entries:?}"
    );
    settle(&app, &admin, &reversals[0]).await;
    assert_eq!(app.account(&alice, &a.id).await["balance"], "100.00");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "0.00");

    // Later, and of the reversal itself: refused.
    expect_code(
        &reverse_raw(&app, &admin, &id_of(&t), "again").await,
        "BAD_USER_INPUT",
    );
    expect_code(
        &reverse_raw(&app, &admin, &id_of(&reversals[0]), "undo").await,
        "BAD_USER_INPUT",
    );
    expect_code(
        &reverse_raw(&app, &admin, &Uuid::new_v4().to_string(), "x").await,
        "NOT_FOUND",
    );

    // A pending transfer cannot be reversed.
    app.workers[0].kill9().await;
    let pending = app.transfer(&alice, &a.id, &b.number, "5.00", &key()).await;
    assert_eq!(pending["status"], "PENDING");
    expect_code(
        &reverse_raw(&app, &admin, &id_of(&pending), "too early").await,
        "BAD_USER_INPUT",
    );
    let _worker = app.spawn_worker().await;
    assert_eq!(settle(&app, &alice, &pending).await["status"], "COMPLETED");
    assert_eq!(transfers_of_kind(&app, &admin, "REVERSAL").await.len(), 1);
    app.wait_no_pending(&admin, SETTLE).await;
    app.assert_ledger_consistent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_the_recipient_cannot_cover_is_insufficient_funds_and_changes_nothing() {
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
    // Bob spends most of it.
    let w = app.withdraw(&bob, &b.id, "35.00", &key()).await;
    settle(&app, &bob, &w).await;

    let audit = audit_count(&app, &admin).await;
    let resp = reverse_raw(&app, &admin, &id_of(&t), "fraud").await;
    assert_eq!(error_codes(&resp), ["INSUFFICIENT_FUNDS"], "{resp}");
    assert!(transfers_of_kind(&app, &admin, "REVERSAL").await.is_empty());
    assert_eq!(
        audit_count(&app, &admin).await,
        audit,
        "a refused reversal was audited"
    );
    let bob_account = app.account(&bob, &b.id).await;
    assert_eq!(bob_account["balance"], "5.00");
    assert_eq!(
        bob_account["availableBalance"], "5.00",
        "no hold left behind"
    );
    assert_eq!(app.account(&alice, &a.id).await["balance"], "60.00");

    // Once Bob has the money again, the reversal goes through.
    let d = app.deposit(&bob, &b.id, "35.00", &key()).await;
    settle(&app, &bob, &d).await;
    let reversal =
        expect_data(reverse_raw(&app, &admin, &id_of(&t), "fraud").await)["reverseTransfer"]
            .clone();
    assert_eq!(settle(&app, &admin, &reversal).await["status"], "COMPLETED");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "0.00");
    assert_eq!(app.account(&alice, &a.id).await["balance"], "100.00");
    app.assert_ledger_consistent().await;
}

// ---------------------------------------------------------------------------
// Admin listings
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listings_search_and_filter() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let tag = Uuid::new_v4().simple().to_string()[..10].to_string();
    let zelda = app
        .register(
            &format!("zelda-{tag}@example.test"),
            PASSWORD,
            &format!("Zelda Q{tag}"),
        )
        .await;
    let other = app.register_random().await;
    let z = app.funded_account(&zelda, "USD", "10.00").await;
    let o = app.open_account(&other, "CHECKING", "USD").await;
    expect_data(
        app.gql(
            admin.token(),
            "mutation($id: ID!) { freezeAccount(id: $id, reason: \"review\") { status } }",
            json!({ "id": o.id }),
        )
        .await,
    );

    // users(search:) matches email or name, case-insensitively.
    for search in [
        format!("zelda-{tag}"),
        format!("ZELDA Q{}", tag.to_uppercase()),
        tag.clone(),
    ] {
        let data = expect_data(
            app.gql(
                admin.token(),
                "query($s: String) { users(search: $s) { totalCount edges { node { id email role } } } }",
                json!({ "s": search }),
            )
            .await,
        );
        assert_eq!(data["users"]["totalCount"], 1, "search {search:?}: {data}");
        assert_eq!(
            data["users"]["edges"][0]["node"]["id"],
            zelda.user_id.as_str()
        );
    }
    // LIKE wildcards in a search are text: an email with an underscore is
    // found by itself, "_" finds only it, and "%" finds no one.
    let underscored = app
        .register(
            &format!("first_last.{tag}@example.test"),
            PASSWORD,
            "Under Score",
        )
        .await;
    let search = |s: String| {
        let admin = admin.clone();
        let app = &app;
        async move {
            expect_data(
                app.gql(
                    admin.token(),
                    "query($s: String) { users(search: $s) { totalCount edges { node { id } } } }",
                    json!({ "s": s }),
                )
                .await,
            )["users"]
                .clone()
        }
    };
    let found = search(format!("first_last.{tag}")).await;
    assert_eq!(
        found["totalCount"], 1,
        "searching an email with an underscore: {found}"
    );
    assert_eq!(
        found["edges"][0]["node"]["id"],
        underscored.user_id.as_str()
    );
    let found = search("_".to_string()).await;
    assert_eq!(
        found["totalCount"], 1,
        "\"_\" is a character, not a wildcard: {found}"
    );
    assert_eq!(
        found["edges"][0]["node"]["id"],
        underscored.user_id.as_str()
    );
    let found = search("%".to_string()).await;
    assert_eq!(
        found["totalCount"], 0,
        "\"%\" is a character, not a wildcard: {found}"
    );

    // allAccounts(status:) filters; system accounts are not customer accounts.
    let ids = |data: &Value| -> Vec<String> {
        data["allAccounts"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| id_of(&e["node"]))
            .collect()
    };
    let frozen = expect_data(
        app.gql(admin.token(), "{ allAccounts(status: FROZEN, first: 100) { totalCount edges { node { id status } } } }", json!({})).await,
    );
    assert_eq!(ids(&frozen), vec![o.id.clone()], "{frozen}");
    let all = expect_data(
        app.gql(
            admin.token(),
            "{ allAccounts(first: 100) { totalCount edges { node { id owner { id } } } } }",
            json!({}),
        )
        .await,
    );
    assert_eq!(
        all["allAccounts"]["totalCount"], 2,
        "only the two customer accounts: {all}"
    );
    let mut listed = ids(&all);
    listed.sort();
    let mut want = vec![z.id.clone(), o.id.clone()];
    want.sort();
    assert_eq!(listed, want);

    // allTransfers(status:, kind:) filters.
    // More than she has: refused at once, no transfer recorded.
    expect_code(
        &app.withdraw_raw(&zelda, &z.id, "20.00", &key()).await,
        "INSUFFICIENT_FUNDS",
    );
    let ok = app.withdraw(&zelda, &z.id, "4.00", &key()).await;
    settle(&app, &zelda, &ok).await;
    let count = |status: Option<&'static str>, kind: Option<&'static str>| {
        let admin = admin.clone();
        let app = &app;
        async move {
            expect_data(
                app.gql(
                    admin.token(),
                    "query($s: TransferStatus, $k: TransferKind) { allTransfers(status: $s, kind: $k) { totalCount } }",
                    json!({ "s": status, "k": kind }),
                )
                .await,
            )["allTransfers"]["totalCount"]
                .as_i64()
                .expect("totalCount")
        }
    };
    assert_eq!(count(None, Some("DEPOSIT")).await, 1);
    assert_eq!(count(None, Some("WITHDRAWAL")).await, 1);
    assert_eq!(count(Some("COMPLETED"), None).await, 2);
    assert_eq!(count(Some("COMPLETED"), Some("TRANSFER")).await, 0);
    assert_eq!(count(Some("PENDING"), None).await, 0);
}

// ---------------------------------------------------------------------------
// Saved payees
// ---------------------------------------------------------------------------

async fn contacts(app: &TestApp, s: &Session) -> Vec<Value> {
    expect_data(
        app.gql(
            s.token(),
            "{ contacts { id name accountNumber createdAt } }",
            json!({}),
        )
        .await,
    )["contacts"]
        .as_array()
        .expect("contacts")
        .clone()
}

async fn add_contact_raw(app: &TestApp, s: &Session, name: &str, number: &str) -> Value {
    app.gql(
        s.token(),
        "mutation($n: String!, $a: String!) { addContact(input: {name: $n, accountNumber: $a}) { id name accountNumber createdAt } }",
        json!({ "n": name, "a": number }),
    )
    .await
}

async fn remove_contact_raw(app: &TestApp, s: &Session, id: &str) -> Value {
    app.gql(
        s.token(),
        "mutation($id: ID!) { removeContact(id: $id) }",
        json!({ "id": id }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_payees_belong_to_their_owner() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let carol = app.register_random().await;
    let mallory = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;
    let c = app.open_account(&carol, "CHECKING", "USD").await;
    let m = app.funded_account(&mallory, "USD", "100.00").await;

    // Add and list, newest first.
    let to_bob =
        expect_data(add_contact_raw(&app, &alice, "Bob", &b.number).await)["addContact"].clone();
    assert_eq!(to_bob["name"], "Bob");
    assert_eq!(to_bob["accountNumber"], b.number.as_str());
    assert!(to_bob["createdAt"].is_string());
    let to_carol =
        expect_data(add_contact_raw(&app, &alice, "Carol", &c.number).await)["addContact"].clone();
    let listed: Vec<String> = contacts(&app, &alice).await.iter().map(id_of).collect();
    assert_eq!(listed, vec![id_of(&to_carol), id_of(&to_bob)]);
    assert!(
        contacts(&app, &mallory).await.is_empty(),
        "Mallory sees no one else's payees"
    );

    // Checked numbers: a typo fails Luhn; a valid number of no account is
    // NOT_FOUND; a blank name is refused.
    let (body, last) = b.number.split_at(b.number.len() - 1);
    let typo = format!("{body}{}", (last.parse::<u8>().unwrap() + 1) % 10);
    assert!(!luhn_valid(&typo));
    for bad in [
        typo.as_str(),
        "12345",
        "abcdefghijkl",
        "",
        &format!("{}0", b.number),
    ] {
        let resp = add_contact_raw(&app, &alice, "Typo", bad).await;
        assert_eq!(error_codes(&resp), ["BAD_USER_INPUT"], "{bad:?}: {resp}");
    }
    let nobody = loop {
        let candidate = with_luhn_digit(&format!(
            "{:011}",
            Uuid::new_v4().as_u128() % 100_000_000_000
        ));
        if ![&a, &b, &c, &m].iter().any(|x| x.number == candidate) {
            break candidate;
        }
    };
    expect_code(
        &add_contact_raw(&app, &alice, "Ghost", &nobody).await,
        "NOT_FOUND",
    );
    expect_code(
        &add_contact_raw(&app, &alice, "   ", &b.number).await,
        "BAD_USER_INPUT",
    );
    assert_eq!(
        contacts(&app, &alice).await.len(),
        2,
        "refused payees are not saved"
    );

    // Paying a payee.
    let t = expect_data(
        app.transfer_to_contact_raw(&alice, &a.id, &id_of(&to_bob), "12.00", &key())
            .await,
    )["transfer"]
        .clone();
    assert_eq!(t["destination"]["accountNumber"], b.number.as_str());
    assert_eq!(settle(&app, &alice, &t).await["status"], "COMPLETED");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "12.00");

    // Someone else's payee id is NOT_FOUND, to pay and to remove.
    let resp = app
        .transfer_to_contact_raw(&mallory, &m.id, &id_of(&to_carol), "1.00", &key())
        .await;
    assert_eq!(error_codes(&resp), ["NOT_FOUND"], "{resp}");
    assert_eq!(
        error_codes(&remove_contact_raw(&app, &mallory, &id_of(&to_carol)).await),
        ["NOT_FOUND"]
    );
    assert_eq!(contacts(&app, &alice).await.len(), 2);
    assert_eq!(
        app.account(&mallory, &m.id).await["availableBalance"],
        "100.00"
    );
    assert_eq!(app.account(&carol, &c.id).await["balance"], "0.00");

    // Removing: gone from the list, unusable, and not removable twice.
    let removed = expect_data(remove_contact_raw(&app, &alice, &id_of(&to_bob)).await);
    assert_eq!(removed["removeContact"], true);
    let listed: Vec<String> = contacts(&app, &alice).await.iter().map(id_of).collect();
    assert_eq!(listed, vec![id_of(&to_carol)]);
    expect_code(
        &app.transfer_to_contact_raw(&alice, &a.id, &id_of(&to_bob), "1.00", &key())
            .await,
        "NOT_FOUND",
    );
    expect_code(
        &remove_contact_raw(&app, &alice, &id_of(&to_bob)).await,
        "NOT_FOUND",
    );
    expect_code(
        &remove_contact_raw(&app, &alice, "not-an-id").await,
        "NOT_FOUND",
    );
    assert_eq!(
        app.account(&alice, &a.id).await["availableBalance"],
        "88.00"
    );
}
