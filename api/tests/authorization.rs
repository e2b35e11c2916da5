//! Who may call what (contract §4, §6): every operation and type declares
//! its access rule in the SDL, and a walk over every root field checks the
//! rule as a stranger, another customer, the owner and an admin would meet it.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// 1. The printed SDL declares a rule on every operation and type.
// ---------------------------------------------------------------------------

/// One `type X ... { ... }` block of an SDL document.
#[derive(Debug)]
struct SdlType {
    name: String,
    /// The header line, directives included.
    header: String,
    /// (field name, whole field definition on one line)
    fields: Vec<(String, String)>,
}

/// A line-based SDL reader, good enough for the printer's output: skips
/// descriptions, reads `type` blocks (fields one per line, arguments joined
/// when they span lines) and the `schema { ... }` block.
fn parse_sdl(sdl: &str) -> (Vec<SdlType>, HashMap<String, String>) {
    let mut types = Vec::new();
    let mut roots = HashMap::new();
    let mut in_description = false;
    let mut current: Option<SdlType> = None;
    let mut in_schema = false;
    let mut in_other_block = false;
    let mut pending = String::new();
    for raw in sdl.lines() {
        let line = raw.trim();
        let quotes = line.matches("\"\"\"").count();
        if in_description {
            if quotes % 2 == 1 {
                in_description = false;
            }
            continue;
        }
        if quotes > 0 {
            if quotes % 2 == 1 {
                in_description = true;
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with('"') {
            continue;
        }
        if let Some(t) = current.as_mut() {
            if line == "}" && pending.is_empty() {
                types.push(current.take().expect("inside a type block"));
                continue;
            }
            if !pending.is_empty() {
                pending.push(' ');
            }
            pending.push_str(line);
            if pending.matches('(').count() > pending.matches(')').count() {
                continue;
            }
            let def = std::mem::take(&mut pending);
            let name: String = def
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                !name.is_empty(),
                "cannot read a field of {}: {def:?}",
                t.name
            );
            t.fields.push((name, def));
            continue;
        }
        if in_schema {
            if line == "}" {
                in_schema = false;
            } else if let Some((op, ty)) = line.split_once(':') {
                roots.insert(op.trim().to_string(), ty.trim().to_string());
            }
            continue;
        }
        if in_other_block {
            if line == "}" {
                in_other_block = false;
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("type ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let t = SdlType {
                name,
                header: line.to_string(),
                fields: Vec::new(),
            };
            if line.ends_with('{') {
                current = Some(t);
            } else {
                types.push(t);
            }
        } else if line.starts_with("schema") && line.ends_with('{') {
            in_schema = true;
        } else if line.ends_with('{') {
            // input, enum, interface blocks: not object types.
            in_other_block = true;
        }
    }
    assert!(current.is_none(), "unterminated type block in the SDL");
    (types, roots)
}

/// The `rule` of the `@access(rule: "...")` directive in `text`, if any.
fn access_rule(text: &str) -> Option<String> {
    let start = text.find("@access(")? + "@access(".len();
    let rest = &text[start..];
    let end = rest.find(')')?;
    let args = &rest[..end];
    let value = args.split_once("rule:")?.1.trim();
    Some(value.trim_matches('"').to_string())
}

async fn print_schema() -> String {
    let mut command = tokio::process::Command::new(api_binary());
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_SECRET",
        "BIND_ADDR",
        "SMTP_URL",
    ] {
        command.env_remove(var);
    }
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        command.arg("--print-schema").kill_on_drop(true).output(),
    )
    .await
    .expect("api --print-schema finishes within 60 s")
    .expect("run api --print-schema");
    assert!(
        output.status.success(),
        "api --print-schema failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the SDL is UTF-8")
}

/// Root fields whose rule the contract fixes (§4, §7).
const CONTRACT_PUBLIC: &[&str] = &["register", "login", "refreshToken", "verifyEmail"];
const CONTRACT_ADMIN: &[&str] = &[
    "users",
    "allAccounts",
    "allTransfers",
    "auditLog",
    "trialBalance",
    "freezeAccount",
    "unfreezeAccount",
    "changeAccountKind",
    "reverseTransfer",
    "setUserRole",
    "createUtilityProvider",
];
const CONTRACT_CUSTOMER: &[&str] = &[
    "me",
    "account",
    "accounts",
    "transfer",
    "transfers",
    "contacts",
    "notifications",
    "logout",
    "resendVerificationEmail",
    "openAccount",
    "closeAccount",
    "deposit",
    "withdraw",
    "addContact",
    "removeContact",
    "balanceChanged",
    "transferUpdated",
    "notificationReceived",
    "utilityProviders",
    "utilityLinks",
    "bills",
    "linkUtilityAccount",
    "unlinkUtilityAccount",
    "refreshBills",
    "payBill",
    "billsUpdated",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_and_type_declares_an_access_rule() {
    let sdl = print_schema().await;
    assert!(
        sdl.contains("directive @access(rule: String!)"),
        "the SDL declares no @access directive"
    );
    let (types, roots) = parse_sdl(&sdl);
    let root_names: Vec<String> = ["query", "mutation", "subscription"]
        .iter()
        .map(|op| {
            roots
                .get(*op)
                .cloned()
                .unwrap_or_else(|| panic!("the SDL's schema block names no {op} root: {roots:?}"))
        })
        .collect();

    let mut problems = Vec::new();
    let mut root_fields = 0;
    for t in &types {
        if root_names.contains(&t.name) {
            for (field, def) in &t.fields {
                root_fields += 1;
                match access_rule(def).as_deref() {
                    Some(rule @ ("PUBLIC" | "CUSTOMER" | "ADMIN")) => {
                        let want = if CONTRACT_PUBLIC.contains(&field.as_str()) {
                            Some("PUBLIC")
                        } else if CONTRACT_ADMIN.contains(&field.as_str()) {
                            Some("ADMIN")
                        } else if CONTRACT_CUSTOMER.contains(&field.as_str()) {
                            Some("CUSTOMER")
                        } else {
                            None
                        };
                        if let Some(want) = want
                            && want != rule
                        {
                            problems.push(format!(
                                "{}.{field} declares {rule}, the contract makes it {want}",
                                t.name
                            ));
                        }
                    }
                    Some(other) => problems.push(format!(
                        "{}.{field} declares an unknown rule {other:?}: {def}",
                        t.name
                    )),
                    None => problems.push(format!(
                        "{}.{field} has no @access(rule: ...): {def}",
                        t.name
                    )),
                }
            }
            if access_rule(&t.header).is_some() {
                // A rule on the root type itself would hide a missing one on a field.
                problems.push(format!("root type {} carries a type-level @access", t.name));
            }
            continue;
        }
        let generated =
            t.name == "PageInfo" || t.name.ends_with("Connection") || t.name.ends_with("Edge");
        if generated {
            continue;
        }
        match access_rule(&t.header).as_deref() {
            // OWNER_OR_ADMIN / ADMIN for owned or internal objects; CUSTOMER
            // or PUBLIC for shared reference data (utility providers).
            Some("OWNER_OR_ADMIN" | "ADMIN" | "CUSTOMER" | "PUBLIC") => {}
            Some(other) => problems.push(format!(
                "type {} declares an unknown rule {other:?}: {}",
                t.name, t.header
            )),
            None => problems.push(format!(
                "type {} has no type-level @access(rule: ...): {}",
                t.name, t.header
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "access rules missing or wrong in the SDL:\n  {}",
        problems.join("\n  ")
    );

    // The reader saw the schema, not an empty shell.
    let names: BTreeSet<&str> = types.iter().map(|t| t.name.as_str()).collect();
    for expected in ["Account", "Transfer", "User", "Party", "AuditEntry"] {
        assert!(
            names.contains(expected),
            "type {expected} not found in the SDL"
        );
    }
    assert!(
        root_fields >= 30,
        "only {root_fields} root fields read from the SDL"
    );
    // The committed copy says the same.
    let committed =
        std::fs::read_to_string(repo_root().join("schema.graphql")).expect("read schema.graphql");
    assert_eq!(
        committed.trim(),
        sdl.trim(),
        "schema.graphql differs from `api --print-schema`"
    );
}

// ---------------------------------------------------------------------------
// 2. The walk over every root field.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    Public,
    Customer,
    Admin,
}

/// What another customer gets from a call aimed at the victim's objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stranger {
    /// The call names a victim's object: NOT_FOUND.
    NotFound,
    /// An ADMIN operation: FORBIDDEN.
    Forbidden,
    /// The call acts on the caller's own data only; checked per field.
    OwnScope,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Anonymous,
    Mallory,
    Owner,
    Admin,
}

struct Call {
    root: &'static str,
    field: &'static str,
    rule: Rule,
    stranger: Stranger,
    doc: String,
    vars: Value,
    /// Business errors an admin may get from an ADMIN operation whose guard
    /// let them through (e.g. no FAILED notification to retry).
    admin_may_fail_with: &'static [&'static str],
}

fn call(
    root: &'static str,
    field: &'static str,
    rule: Rule,
    stranger: Stranger,
    doc: &str,
    vars: Value,
) -> Call {
    Call {
        root,
        field,
        rule,
        stranger,
        doc: doc.to_string(),
        vars,
        admin_may_fail_with: &[],
    }
}

/// The victim's (Alice's) objects and the other people in the walk.
struct Fx {
    admin: Session,
    alice: Session,
    mallory: Session,
    /// A user the admin may change the role of.
    spare: Session,
    /// Alice's funded account and an empty one.
    a: AccountRef,
    e: AccountRef,
    /// Mallory's funded account.
    m: AccountRef,
    /// The deposit that funded `a` (only Alice is a party).
    alice_deposit: String,
    /// A settled transfer from Alice to Mallory.
    t_am: String,
    /// Alice's saved payee (Mallory's account number).
    alice_contact: String,
    alice_notification: String,
    /// The mock utility provider (kept running), its id, Alice's link to
    /// customer 100001 and her unpaid bill of it.
    provider: MockProvider,
    provider_id: String,
    alice_link: String,
    alice_bill: String,
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

async fn setup(app: &TestApp) -> Fx {
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let mallory = app.register_random().await;
    let spare = app.register_random().await;

    let a = app.open_account(&alice, "CHECKING", "USD").await;
    // Enough for the owner's own calls, the unpaid bill (123.45) included.
    let deposit = app.deposit(&alice, &a.id, "300.00", &key()).await;
    let alice_deposit = id_of(&deposit);
    let done = app
        .wait_transfer_final(&alice, &alice_deposit, SETTLE)
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let e = app.open_account(&alice, "CHECKING", "USD").await;
    let m = app.funded_account(&mallory, "USD", "50.00").await;

    let t = app
        .transfer(&alice, &a.id, &m.number, "10.00", &key())
        .await;
    let t_am = id_of(&t);
    let done = app.wait_transfer_final(&alice, &t_am, SETTLE).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    let alice_contact = app.add_contact(&alice, "Mallory", &m.number).await;

    // Deposits and transfers notify their owners.
    let deadline = std::time::Instant::now() + SETTLE;
    let alice_notification = loop {
        if let Some(n) = app.notifications(&alice).await.first() {
            break id_of(n);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Alice got no notification for her deposit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Utility bills: a provider, Alice's link and her cached unpaid bill.
    let provider = MockProvider::start().await;
    let created = expect_data(
        app.gql(
            admin.token(),
            "mutation($u: String!) { createUtilityProvider(input: {name: \"Walk Power\", \
               kind: ELECTRICITY, currency: \"USD\", apiBaseUrl: $u}) { id } }",
            json!({ "u": provider.base_url }),
        )
        .await,
    );
    let provider_id = id_of(&created["createUtilityProvider"]);
    let linked = expect_data(
        app.gql(
            alice.token(),
            "mutation($p: ID!) { linkUtilityAccount(input: {providerId: $p, customerNumber: \"100001\"}) { id } }",
            json!({ "p": provider_id }),
        )
        .await,
    );
    let alice_link = id_of(&linked["linkUtilityAccount"]);
    let deadline = std::time::Instant::now() + SETTLE;
    let alice_bill = loop {
        let data = expect_data(
            app.gql(
                alice.token(),
                "{ bills(status: UNPAID) { id status } }",
                json!({}),
            )
            .await,
        );
        if let Some(b) = data["bills"].as_array().and_then(|l| l.first()) {
            break id_of(b);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Alice's bills were not fetched: {data}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Fx {
        admin,
        alice,
        mallory,
        spare,
        a,
        e,
        m,
        alice_deposit,
        t_am,
        alice_contact,
        alice_notification,
        provider,
        provider_id,
        alice_link,
        alice_bill,
    }
}

/// Every root Query and Mutation field with a minimal valid call, as `who`
/// would make it. Destructive calls come last.
fn calls(fx: &Fx, who: Who, spare_refresh: &str) -> Vec<Call> {
    use Rule::*;
    use Stranger::*;
    const Q: &str = "Query";
    const M: &str = "Mutation";
    // The source of the payee transfer: the caller's own account, so that
    // only the contact is foreign for Mallory.
    let own_account = if who == Who::Mallory {
        fx.m.id.clone()
    } else {
        fx.a.id.clone()
    };
    let (role_target, role) = if who == Who::Admin {
        (fx.spare.user_id.clone(), "CUSTOMER")
    } else {
        (fx.mallory.user_id.clone(), "ADMIN")
    };
    vec![
        // -- queries ------------------------------------------------------
        call(
            Q,
            "me",
            Customer,
            OwnScope,
            "{ me { id email role } }",
            json!({}),
        ),
        call(
            Q,
            "account",
            Customer,
            NotFound,
            "query($id: ID!) { account(id: $id) { id status balance } }",
            json!({ "id": fx.a.id }),
        ),
        call(
            Q,
            "accounts",
            Customer,
            OwnScope,
            "{ accounts(first: 100) { totalCount edges { node { id } } } }",
            json!({}),
        ),
        call(
            Q,
            "transfer",
            Customer,
            NotFound,
            "query($id: ID!) { transfer(id: $id) { id amount status } }",
            json!({ "id": fx.alice_deposit }),
        ),
        call(
            Q,
            "transfers",
            Customer,
            NotFound,
            "query($a: ID) { transfers(accountId: $a, first: 100) { totalCount edges { node { id } } } }",
            json!({ "a": fx.a.id }),
        ),
        call(
            Q,
            "transfers",
            Customer,
            OwnScope,
            "{ transfers(first: 100) { totalCount edges { node { id } } } }",
            json!({}),
        ),
        call(
            Q,
            "notifications",
            Customer,
            OwnScope,
            "{ notifications(first: 100) { totalCount edges { node { id } } } }",
            json!({}),
        ),
        call(
            Q,
            "contacts",
            Customer,
            OwnScope,
            "{ contacts { id name accountNumber } }",
            json!({}),
        ),
        call(
            Q,
            "users",
            Admin,
            Forbidden,
            "query($s: String) { users(search: $s, first: 5) { totalCount edges { node { id email } } } }",
            json!({ "s": fx.alice.email }),
        ),
        call(
            Q,
            "allAccounts",
            Admin,
            Forbidden,
            "{ allAccounts(status: ACTIVE, first: 5) { totalCount edges { node { id } } } }",
            json!({}),
        ),
        call(
            Q,
            "allTransfers",
            Admin,
            Forbidden,
            "{ allTransfers(status: COMPLETED, kind: TRANSFER, first: 5) { totalCount edges { node { id } } } }",
            json!({}),
        ),
        call(
            Q,
            "auditLog",
            Admin,
            Forbidden,
            "{ auditLog(first: 5) { totalCount edges { node { id action } } } }",
            json!({}),
        ),
        call(
            Q,
            "failedNotifications",
            Admin,
            Forbidden,
            "{ failedNotifications(first: 5) { totalCount edges { node { id } } } }",
            json!({}),
        ),
        call(
            Q,
            "trialBalance",
            Admin,
            Forbidden,
            "{ trialBalance { currency net } }",
            json!({}),
        ),
        call(
            Q,
            "utilityProviders",
            Customer,
            OwnScope,
            "{ utilityProviders { id name } }",
            json!({}),
        ),
        call(
            Q,
            "utilityLinks",
            Customer,
            OwnScope,
            "{ utilityLinks { id customerNumber } }",
            json!({}),
        ),
        call(
            Q,
            "bills",
            Customer,
            OwnScope,
            "{ bills { id reference status } }",
            json!({}),
        ),
        // -- mutations ----------------------------------------------------
        call(
            M,
            "register",
            Public,
            OwnScope,
            "mutation($e: String!, $p: String!) { register(input: {email: $e, password: $p, fullName: \"Walker\"}) { accessToken user { id } } }",
            json!({ "e": format!("walk-{}@example.test", Uuid::new_v4().simple()), "p": PASSWORD }),
        ),
        call(
            M,
            "login",
            Public,
            OwnScope,
            "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken user { id } } }",
            json!({ "e": fx.spare.email, "p": PASSWORD }),
        ),
        call(
            M,
            "refreshToken",
            Public,
            OwnScope,
            "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken user { id } } }",
            json!({ "t": spare_refresh }),
        ),
        call(
            M,
            "verifyEmail",
            Public,
            OwnScope,
            "mutation { verifyEmail(token: \"0000000000000000\") { id } }",
            json!({}),
        ),
        call(
            M,
            "resendVerificationEmail",
            Customer,
            OwnScope,
            "mutation { resendVerificationEmail }",
            json!({}),
        ),
        call(
            M,
            "openAccount",
            Customer,
            OwnScope,
            "mutation { openAccount(input: {kind: CHECKING, currency: \"EUR\"}) { id owner { id } } }",
            json!({}),
        ),
        call(
            M,
            "deposit",
            Customer,
            NotFound,
            "mutation($a: ID!, $k: String!) { deposit(input: {accountId: $a, amount: \"1.00\", idempotencyKey: $k}) { id status } }",
            json!({ "a": fx.a.id, "k": key() }),
        ),
        call(
            M,
            "withdraw",
            Customer,
            NotFound,
            "mutation($a: ID!, $k: String!) { withdraw(input: {accountId: $a, amount: \"1.00\", idempotencyKey: $k}) { id status } }",
            json!({ "a": fx.a.id, "k": key() }),
        ),
        call(
            M,
            "transfer",
            Customer,
            NotFound,
            "mutation($a: ID!, $to: String!, $k: String!) { transfer(input: {fromAccountId: $a, toAccountNumber: $to, amount: \"1.00\", idempotencyKey: $k}) { id status } }",
            json!({ "a": fx.a.id, "to": fx.m.number, "k": key() }),
        ),
        call(
            M,
            "transfer",
            Customer,
            NotFound,
            "mutation($a: ID!, $c: ID!, $k: String!) { transfer(input: {fromAccountId: $a, toContactId: $c, amount: \"1.00\", idempotencyKey: $k}) { id status } }",
            json!({ "a": own_account, "c": fx.alice_contact, "k": key() }),
        ),
        call(
            M,
            "addContact",
            Customer,
            OwnScope,
            "mutation($n: String!) { addContact(input: {name: \"Payee\", accountNumber: $n}) { id accountNumber } }",
            json!({ "n": fx.a.number }),
        ),
        call(
            M,
            "logout",
            Customer,
            OwnScope,
            "mutation($t: String!) { logout(refreshToken: $t) }",
            json!({ "t": fx.alice.refresh_token }),
        ),
        call(
            M,
            "freezeAccount",
            Admin,
            Forbidden,
            "mutation($a: ID!) { freezeAccount(id: $a, reason: \"walk\") { id status } }",
            json!({ "a": fx.a.id }),
        ),
        call(
            M,
            "unfreezeAccount",
            Admin,
            Forbidden,
            "mutation($a: ID!) { unfreezeAccount(id: $a) { id status } }",
            json!({ "a": fx.a.id }),
        ),
        call(
            M,
            "changeAccountKind",
            Admin,
            Forbidden,
            "mutation($a: ID!) { changeAccountKind(id: $a, kind: SAVINGS) { id kind } }",
            json!({ "a": fx.a.id }),
        ),
        call(
            M,
            "reverseTransfer",
            Admin,
            Forbidden,
            "mutation($t: ID!) { reverseTransfer(id: $t, reason: \"walk\") { id kind status } }",
            json!({ "t": fx.t_am }),
        ),
        Call {
            // Without SMTP nothing is dead-lettered: the guard passes, the
            // operation itself refuses.
            admin_may_fail_with: &["BAD_USER_INPUT"],
            ..call(
                M,
                "retryNotification",
                Admin,
                Forbidden,
                "mutation($n: ID!) { retryNotification(id: $n) { id emailStatus } }",
                json!({ "n": fx.alice_notification }),
            )
        },
        call(
            M,
            "setUserRole",
            Admin,
            Forbidden,
            "mutation($u: ID!, $r: Role!) { setUserRole(userId: $u, role: $r) { id role } }",
            json!({ "u": role_target, "r": role }),
        ),
        call(
            M,
            "createUtilityProvider",
            Admin,
            Forbidden,
            "mutation($u: String!) { createUtilityProvider(input: {name: \"Rogue Power\", kind: GAS, \
               currency: \"USD\", apiBaseUrl: $u}) { id } }",
            json!({ "u": fx.provider.base_url }),
        ),
        call(
            M,
            "linkUtilityAccount",
            Customer,
            OwnScope,
            "mutation($p: ID!) { linkUtilityAccount(input: {providerId: $p, customerNumber: \"100002\"}) { id } }",
            json!({ "p": fx.provider_id }),
        ),
        call(
            M,
            "refreshBills",
            Customer,
            OwnScope,
            "mutation { refreshBills }",
            json!({}),
        ),
        call(
            M,
            "payBill",
            Customer,
            NotFound,
            "mutation($b: ID!, $a: ID!, $k: String!) { payBill(input: {billId: $b, fromAccountId: $a, \
               idempotencyKey: $k}) { id status } }",
            json!({ "b": fx.alice_bill, "a": own_account, "k": key() }),
        ),
        call(
            M,
            "unlinkUtilityAccount",
            Customer,
            NotFound,
            "mutation($l: ID!) { unlinkUtilityAccount(id: $l) }",
            json!({ "l": fx.alice_link }),
        ),
        call(
            M,
            "removeContact",
            Customer,
            NotFound,
            "mutation($c: ID!) { removeContact(id: $c) }",
            json!({ "c": fx.alice_contact }),
        ),
        call(
            M,
            "closeAccount",
            Customer,
            NotFound,
            "mutation($a: ID!) { closeAccount(id: $a) { id status } }",
            json!({ "a": fx.e.id }),
        ),
        call(
            M,
            "logoutAll",
            Customer,
            OwnScope,
            "mutation { logoutAll }",
            json!({}),
        ),
    ]
}

/// Alice's side of the world, as the admin and Alice see it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    a: Value,
    e: Value,
    alice_accounts: i64,
    alice_contacts: Vec<String>,
    audit_entries: i64,
    transfers: i64,
    mallory_role: Value,
    alice_token_works: bool,
    alice_refresh_works: bool,
    alice_links: Value,
    alice_bills: Value,
    providers: Value,
}

async fn snapshot(app: &TestApp, fx: &mut Fx) -> Snapshot {
    app.wait_no_pending(&fx.admin, SETTLE).await;
    let account = |id: String| {
        let admin = fx.admin.clone();
        async move {
            let data = expect_data(
                app.gql(
                    admin.token(),
                    "query($id: ID!) { account(id: $id) { id status kind balance availableBalance } }",
                    json!({ "id": id }),
                )
                .await,
            );
            data["account"].clone()
        }
    };
    let a = account(fx.a.id.clone()).await;
    let e = account(fx.e.id.clone()).await;
    let me = app
        .gql(
            fx.alice.token(),
            "{ me { id } accounts(first: 100) { totalCount } contacts { id } \
               utilityLinks { id customerNumber } bills { id status } utilityProviders { id } }",
            json!({}),
        )
        .await;
    let alice_token_works = error_codes(&me).is_empty();
    let (alice_links, alice_bills, providers) = (
        me["data"]["utilityLinks"].clone(),
        me["data"]["bills"].clone(),
        me["data"]["utilityProviders"].clone(),
    );
    let (alice_accounts, alice_contacts) = if alice_token_works {
        let data = expect_data(me);
        let mut contacts: Vec<String> = data["contacts"]
            .as_array()
            .expect("contacts")
            .iter()
            .map(id_of)
            .collect();
        contacts.sort();
        (
            data["accounts"]["totalCount"].as_i64().unwrap_or(-1),
            contacts,
        )
    } else {
        (-1, Vec::new())
    };
    let counts = expect_data(
        app.gql(
            fx.admin.token(),
            "query($m: String) { auditLog(first: 1) { totalCount } allTransfers(first: 1) { totalCount } \
               users(search: $m, first: 5) { edges { node { id role } } } }",
            json!({ "m": fx.mallory.email }),
        )
        .await,
    );
    let mallory_role = counts["users"]["edges"]
        .as_array()
        .expect("users edges")
        .iter()
        .find(|e| e["node"]["id"] == fx.mallory.user_id.as_str())
        .map(|e| e["node"]["role"].clone())
        .unwrap_or(Value::Null);
    // Still valid refresh token? Using it rotates it: keep the new one.
    let refreshed = app.refresh_raw(&fx.alice.refresh_token).await;
    let alice_refresh_works = error_codes(&refreshed).is_empty();
    if alice_refresh_works {
        let data = expect_data(refreshed);
        fx.alice.refresh_token = data["refreshToken"]["refreshToken"]
            .as_str()
            .expect("refreshToken")
            .to_string();
        fx.alice.access_token = data["refreshToken"]["accessToken"]
            .as_str()
            .expect("accessToken")
            .to_string();
    }
    Snapshot {
        a,
        e,
        alice_accounts,
        alice_contacts,
        audit_entries: counts["auditLog"]["totalCount"]
            .as_i64()
            .expect("audit count"),
        transfers: counts["allTransfers"]["totalCount"]
            .as_i64()
            .expect("transfer count"),
        mallory_role,
        alice_token_works,
        alice_refresh_works,
        alice_links,
        alice_bills,
        providers,
    }
}

/// Root field names of one root type, by introspection.
async fn root_fields(app: &TestApp, admin: &Session) -> BTreeMap<&'static str, BTreeSet<String>> {
    let data = expect_data(
        app.gql(
            admin.token(),
            "{ __schema { queryType { fields { name } } mutationType { fields { name } } \
               subscriptionType { fields { name } } } }",
            json!({}),
        )
        .await,
    );
    let names = |ty: &str| -> BTreeSet<String> {
        data["__schema"][ty]["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("{ty} has no fields: {data}"))
            .iter()
            .map(|f| f["name"].as_str().expect("field name").to_string())
            .collect()
    };
    BTreeMap::from([
        ("Query", names("queryType")),
        ("Mutation", names("mutationType")),
        ("Subscription", names("subscriptionType")),
    ])
}

/// The subscriptions the walk knows; they are checked in subscriptions.rs
/// (over the WebSocket), but a new one must still be decided here.
const KNOWN_SUBSCRIPTIONS: &[&str] = &[
    "balanceChanged",
    "transferUpdated",
    "notificationReceived",
    "billsUpdated",
];

fn token_of(fx: &Fx, who: Who) -> Option<String> {
    match who {
        Who::Anonymous => None,
        Who::Mallory => Some(fx.mallory.access_token.clone()),
        Who::Owner => Some(fx.alice.access_token.clone()),
        Who::Admin => Some(fx.admin.access_token.clone()),
    }
}

/// Runs every call as `who` and returns the failures found.
async fn walk(app: &TestApp, fx: &mut Fx, who: Who) -> Vec<String> {
    let spare = app.login(&fx.spare.email, PASSWORD).await;
    let list = calls(fx, who, &spare.refresh_token);
    let mut failures = Vec::new();
    let secrets = [
        fx.a.id.clone(),
        fx.e.id.clone(),
        fx.alice.email.clone(),
        fx.alice_contact.clone(),
        fx.alice_deposit.clone(),
        fx.alice_notification.clone(),
        fx.alice_link.clone(),
        fx.alice_bill.clone(),
    ];
    for c in list {
        let token = token_of(fx, who);
        let resp = app.gql(token.as_deref(), &c.doc, c.vars.clone()).await;
        let codes = error_codes(&resp);
        let name = format!("{}.{} as {who:?}", c.root, c.field);
        let guard_error = codes
            .iter()
            .any(|c| c == "UNAUTHENTICATED" || c == "FORBIDDEN");
        if codes.iter().any(|c| c == "GRAPHQL_VALIDATION_FAILED") {
            failures.push(format!("{name}: the fixture does not validate: {resp}"));
            continue;
        }
        match who {
            Who::Anonymous => {
                if c.rule == Rule::Public {
                    if guard_error {
                        failures.push(format!(
                            "{name}: a PUBLIC operation refused a stranger: {resp}"
                        ));
                    }
                    if matches!(c.field, "register" | "login" | "refreshToken") && !codes.is_empty()
                    {
                        failures.push(format!("{name}: should succeed: {resp}"));
                    }
                } else if codes != ["UNAUTHENTICATED"] {
                    failures.push(format!(
                        "{name}: expected UNAUTHENTICATED only, got {codes:?}: {resp}"
                    ));
                }
                if c.rule != Rule::Public && !resp["data"].is_null() {
                    let data = &resp["data"];
                    let any = data
                        .as_object()
                        .is_some_and(|o| o.values().any(|v| !v.is_null()));
                    if any {
                        failures.push(format!("{name}: data returned to a stranger: {resp}"));
                    }
                }
            }
            Who::Mallory => {
                if c.rule != Rule::Public {
                    let data_text = resp["data"].to_string();
                    for secret in &secrets {
                        if data_text.contains(secret.as_str()) {
                            failures.push(format!(
                                "{name}: the answer contains Alice's {secret}: {resp}"
                            ));
                        }
                    }
                }
                match c.stranger {
                    Stranger::Forbidden => {
                        if codes != ["FORBIDDEN"] {
                            failures
                                .push(format!("{name}: expected FORBIDDEN, got {codes:?}: {resp}"));
                        }
                    }
                    Stranger::NotFound => {
                        if codes != ["NOT_FOUND"] {
                            failures
                                .push(format!("{name}: expected NOT_FOUND, got {codes:?}: {resp}"));
                        }
                    }
                    Stranger::OwnScope => {
                        if guard_error {
                            failures
                                .push(format!("{name}: refused to a signed-in customer: {resp}"));
                        }
                        let data = &resp["data"];
                        let problem = match c.field {
                            "me" => (data["me"]["id"] != fx.mallory.user_id.as_str())
                                .then(|| "me is not Mallory".to_string()),
                            "openAccount" => (data["openAccount"]["owner"]["id"]
                                != fx.mallory.user_id.as_str())
                            .then(|| "the new account is not Mallory's".to_string()),
                            "logout" => (data["logout"] == true).then(|| {
                                "Mallory's logout revoked Alice's refresh token".to_string()
                            }),
                            _ => None,
                        };
                        if let Some(p) = problem {
                            failures.push(format!("{name}: {p}: {resp}"));
                        }
                    }
                }
            }
            Who::Owner => {
                if c.rule == Rule::Admin {
                    if codes != ["FORBIDDEN"] {
                        failures.push(format!(
                            "{name}: a customer got past an ADMIN guard: {codes:?}: {resp}"
                        ));
                    }
                } else if guard_error {
                    failures.push(format!("{name}: refused to the owner: {resp}"));
                } else if c.stranger == Stranger::NotFound && !codes.is_empty() {
                    failures.push(format!("{name}: the owner's own object failed: {resp}"));
                }
            }
            Who::Admin => {
                if guard_error {
                    failures.push(format!("{name}: refused to an admin: {resp}"));
                } else if c.rule == Rule::Admin
                    && codes
                        .iter()
                        .any(|code| !c.admin_may_fail_with.contains(&code.as_str()))
                {
                    failures.push(format!(
                        "{name}: an ADMIN operation failed for an admin: {resp}"
                    ));
                }
            }
        }
        if c.field == "logoutAll" && codes.is_empty() {
            // The caller's tokens are gone: sign in again.
            match who {
                Who::Mallory => fx.mallory = app.login(&fx.mallory.email, PASSWORD).await,
                Who::Owner => fx.alice = app.login(&fx.alice.email, PASSWORD).await,
                Who::Admin => fx.admin = app.admin().await,
                Who::Anonymous => {}
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_walk_refuses_strangers() {
    let app = TestApp::spawn().await;
    let mut fx = setup(&app).await;

    // Every root field must have a fixture: a new operation forces a decision.
    let schema = root_fields(&app, &fx.admin).await;
    let known: BTreeSet<(String, String)> = calls(&fx, Who::Owner, "")
        .iter()
        .map(|c| (c.root.to_string(), c.field.to_string()))
        .collect();
    let mut unknown = Vec::new();
    for root in ["Query", "Mutation"] {
        for field in &schema[root] {
            if !known.contains(&(root.to_string(), field.clone())) {
                unknown.push(format!("{root}.{field}"));
            }
        }
    }
    for field in &schema["Subscription"] {
        if !KNOWN_SUBSCRIPTIONS.contains(&field.as_str()) {
            unknown.push(format!("Subscription.{field}"));
        }
    }
    assert!(
        unknown.is_empty(),
        "root fields without a fixture in the authorization walk (decide their rule and add a call): {unknown:?}"
    );
    let stale: Vec<_> = known
        .iter()
        .filter(|(root, field)| !schema[root.as_str()].contains(field))
        .collect();
    assert!(
        stale.is_empty(),
        "fixtures for fields the schema lacks: {stale:?}"
    );

    let mut failures = Vec::new();

    // (a) anonymous, (b) Mallory: nothing of Alice's changes.
    let before = snapshot(&app, &mut fx).await;
    assert!(
        before.alice_token_works && before.alice_refresh_works,
        "{before:?}"
    );
    failures.extend(walk(&app, &mut fx, Who::Anonymous).await);
    let after_anonymous = snapshot(&app, &mut fx).await;
    if after_anonymous != before {
        failures.push(format!(
            "anonymous calls changed state:\n  before {before:?}\n  after  {after_anonymous:?}"
        ));
    }
    failures.extend(walk(&app, &mut fx, Who::Mallory).await);
    let after_mallory = snapshot(&app, &mut fx).await;
    if after_mallory != after_anonymous {
        failures.push(format!(
            "Mallory's calls changed Alice's state:\n  before {after_anonymous:?}\n  after  {after_mallory:?}"
        ));
    }

    // (c) the owner, (d) an admin.
    failures.extend(walk(&app, &mut fx, Who::Owner).await);
    app.wait_no_pending(&fx.admin, SETTLE).await;
    failures.extend(walk(&app, &mut fx, Who::Admin).await);
    app.wait_no_pending(&fx.admin, SETTLE).await;

    assert!(
        failures.is_empty(),
        "{} authorization failure(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    app.assert_ledger_consistent().await;
}

// ---------------------------------------------------------------------------
// 3. Every field of a victim's Account and Transfer, by any path.
// ---------------------------------------------------------------------------

/// All types with their fields, by introspection.
async fn type_map(app: &TestApp, s: &Session) -> HashMap<String, Value> {
    let data = expect_data(
        app.gql(
            s.token(),
            "{ __schema { types { name kind fields { name args { name type { kind } } \
               type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }",
            json!({}),
        )
        .await,
    );
    data["__schema"]["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("type name").to_string(),
                t.clone(),
            )
        })
        .collect()
}

/// A selection of every field of `type_name` that needs no argument,
/// objects expanded `depth` levels deep (deeper ones get `__typename`).
fn selection(types: &HashMap<String, Value>, type_name: &str, depth: usize) -> String {
    let t = types
        .get(type_name)
        .unwrap_or_else(|| panic!("type {type_name} not in the schema"));
    let mut out = Vec::new();
    for f in t["fields"].as_array().into_iter().flatten() {
        let required_arg = f["args"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["type"]["kind"] == "NON_NULL");
        if required_arg {
            continue;
        }
        let mut ty = &f["type"];
        while ty["name"].is_null() && !ty["ofType"].is_null() {
            ty = &ty["ofType"];
        }
        let plain = f["name"].as_str().expect("field name");
        // Lists are costed per requested item: ask for one so the whole
        // selection stays under the complexity limit.
        let pages = f["args"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["name"] == "first");
        let name = if pages {
            format!("{plain}(first: 1)")
        } else {
            plain.to_string()
        };
        let name = name.as_str();
        match ty["kind"].as_str() {
            Some("SCALAR" | "ENUM") => out.push(name.to_string()),
            Some("OBJECT") if depth > 0 => {
                let inner = ty["name"].as_str().expect("object type name");
                out.push(format!(
                    "{name} {{ {} }}",
                    selection(types, inner, depth - 1)
                ));
            }
            _ => out.push(format!("{name} {{ __typename }}")),
        }
    }
    out.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_customer_reaches_no_field_of_a_victims_account_or_transfer() {
    let app = TestApp::spawn().await;
    let alice = app.register_random().await;
    let mallory = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let m = app.funded_account(&mallory, "USD", "100.00").await;
    let to_mallory = app
        .transfer(&alice, &a.id, &m.number, "10.00", &key())
        .await;
    let to_mallory = id_of(
        &app.wait_transfer_final(&alice, &id_of(&to_mallory), SETTLE)
            .await,
    );
    let to_alice = app
        .transfer(&mallory, &m.id, &a.number, "3.00", &key())
        .await;
    let to_alice = id_of(
        &app.wait_transfer_final(&mallory, &id_of(&to_alice), SETTLE)
            .await,
    );
    let alice_transfers = expect_data(
        app.gql(
            alice.token(),
            "query($a: ID) { transfers(accountId: $a, kind: DEPOSIT) { edges { node { id } } } }",
            json!({ "a": a.id }),
        )
        .await,
    );
    let alice_deposit = id_of(&alice_transfers["transfers"]["edges"][0]["node"]);

    let types = type_map(&app, &mallory).await;
    let account_all = selection(&types, "Account", 3);
    let transfer_all = selection(&types, "Transfer", 4);
    // For paths already nine levels deep (the depth limit is 12).
    let account_shallow = selection(&types, "Account", 1);
    assert!(account_all.contains("availableBalance") && account_all.contains("owner"));
    assert!(transfer_all.contains("source") && transfer_all.contains("account"));

    let secrets = [a.id.as_str(), alice.email.as_str(), alice_deposit.as_str()];
    let leaks = |resp: &Value| -> Vec<&str> {
        let text = resp["data"].to_string();
        secrets
            .iter()
            .copied()
            .filter(|s| text.contains(s))
            .collect()
    };

    // Direct paths: NOT_FOUND, nothing in data, and the same answer as for
    // an id that names nothing (existence is not leaked).
    for (doc, id) in [
        (
            format!("query($id: ID!) {{ account(id: $id) {{ {account_all} }} }}"),
            a.id.clone(),
        ),
        (
            format!("query($id: ID!) {{ transfer(id: $id) {{ {transfer_all} }} }}"),
            alice_deposit.clone(),
        ),
        (
            format!(
                "query($id: ID) {{ transfers(accountId: $id, first: 1) {{ totalCount edges {{ node {{ {transfer_all} }} }} }} }}"
            ),
            a.id.clone(),
        ),
    ] {
        let resp = app.gql(mallory.token(), &doc, json!({ "id": id })).await;
        assert_eq!(error_codes(&resp), ["NOT_FOUND"], "{doc}: {resp}");
        assert!(
            leaks(&resp).is_empty() && resp["data"].is_null(),
            "{doc}: {resp}"
        );
        let unknown = app
            .gql(
                mallory.token(),
                &doc,
                json!({ "id": Uuid::new_v4().to_string() }),
            )
            .await;
        assert_eq!(
            resp["errors"][0]["message"], unknown["errors"][0]["message"],
            "a stranger's object and a missing one must look the same: {resp} vs {unknown}"
        );
    }

    // Indirect paths: the transfers Mallory is a party to carry Alice's
    // side as a Party whose `account` is null.
    let paths = [
        format!("query($id: ID!) {{ transfer(id: $id) {{ {transfer_all} }} }}"),
        format!(
            "query($id: ID!) {{ t: transfer(id: $id) {{ id }} transfers(first: 10) {{ edges {{ node {{ {transfer_all} }} }} }} }}"
        ),
        format!(
            "query($id: ID!) {{ t: transfer(id: $id) {{ id }} accounts(first: 2) {{ edges {{ node {{ transfers(first: 10) {{ edges {{ node {{ {transfer_all} }} }} }} }} }} }} }}"
        ),
        format!(
            "query($id: ID!) {{ t: transfer(id: $id) {{ id }} me {{ accounts(first: 2) {{ edges {{ node {{ transfers(first: 10) {{ edges {{ node {{ source {{ accountNumber holderName account {{ {account_shallow} }} }} destination {{ accountNumber holderName account {{ {account_shallow} }} }} }} }} }} }} }} }} }} }}"
        ),
    ];
    for doc in &paths {
        for id in [&to_mallory, &to_alice] {
            let resp = app.gql(mallory.token(), doc, json!({ "id": id })).await;
            let data = expect_data(resp.clone());
            assert!(
                leaks(&resp).is_empty(),
                "Alice's data leaked through {doc}: {resp}"
            );
            // Every Party naming Alice's account has a null `account`.
            let mut parties = Vec::new();
            collect_parties(&data, &mut parties);
            assert!(!parties.is_empty(), "no Party in {resp}");
            for p in parties {
                if p["accountNumber"] == a.number.as_str() {
                    assert!(
                        p.get("account").is_none_or(Value::is_null),
                        "Party.account of Alice's side is visible to Mallory: {p}"
                    );
                    assert_eq!(p["holderName"], alice.full_name.as_str(), "{p}");
                } else if p["accountNumber"] == m.number.as_str()
                    && let Some(acc) = p.get("account")
                {
                    assert_eq!(acc["id"], m.id.as_str(), "Mallory sees her own side: {p}");
                }
            }
        }
    }

    // The mutation's own answer is a path too.
    let resp = app
        .gql(
            mallory.token(),
            &format!(
                "mutation($a: ID!, $to: String!, $k: String!) {{ transfer(input: {{fromAccountId: $a, \
                   toAccountNumber: $to, amount: \"1.00\", idempotencyKey: $k}}) {{ {transfer_all} }} }}"
            ),
            json!({ "a": m.id, "to": a.number, "k": key() }),
        )
        .await;
    let data = expect_data(resp.clone());
    assert!(leaks(&resp).is_empty(), "{resp}");
    assert!(
        data["transfer"]["destination"]["account"].is_null(),
        "the transfer mutation shows Mallory Alice's account: {resp}"
    );

    // The owner and an admin do see the account behind the Party.
    let admin = app.admin().await;
    for viewer in [&alice, &admin] {
        let t = app.transfer_by_id(viewer, &to_mallory).await;
        assert_eq!(t["source"]["account"]["id"], a.id.as_str(), "{t}");
    }
    let t = app.transfer_by_id(&alice, &to_mallory).await;
    assert!(
        t["destination"]["account"].is_null(),
        "Alice sees Mallory's account: {t}"
    );
}

/// Every object with an `accountNumber` (a Party) inside `v`.
fn collect_parties(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(map) => {
            if map.contains_key("accountNumber") && map.contains_key("holderName") {
                out.push(v.clone());
            }
            map.values().for_each(|x| collect_parties(x, out));
        }
        Value::Array(list) => list.iter().for_each(|x| collect_parties(x, out)),
        _ => {}
    }
}
