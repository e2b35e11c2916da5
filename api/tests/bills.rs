//! Utility bills (contract §7) against the real `mock-provider`: linking
//! checks the customer number with the provider, bills are served from the
//! cache the worker fills, `payBill` moves the money once through the
//! hold/settle path and the payment is reported to the provider exactly once
//! (with retries while the provider fails), a slow or down provider never
//! blocks a GraphQL request, and `billsUpdated` fires.
//!
//! Every test starts its own `mock-provider` on a free port and registers it
//! with `createUtilityProvider`. Timeouts are generous: nothing here is a
//! benchmark except the explicit "answers within 2 s" bounds of the
//! slow-provider test.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// How long the worker gets to fill the cache after a link or refresh.
const CACHE_FILL: Duration = Duration::from_secs(30);
/// How long a settled payment gets to be reported (two 5xx first: ~6 s).
const REPORTED: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(30);
const EVENT: Duration = Duration::from_secs(30);

const BILL_FIELDS: &str = "id link { id } reference amount currency dueDate status fetchedAt";

const PAY_BILL: &str = "mutation P($b: ID!, $a: ID!, $k: String!) { \
     payBill(input: {billId: $b, fromAccountId: $a, idempotencyKey: $k}) { \
       id kind status amount currency destination { holderName } } }";

/// A deployment plus one mock provider registered by the admin.
struct World {
    app: TestApp,
    provider: MockProvider,
    admin: Session,
    provider_id: String,
    provider_name: String,
}

async fn world() -> World {
    world_with(TestApp::builder()).await
}

async fn world_with(builder: TestAppBuilder) -> World {
    let provider = MockProvider::start().await;
    let app = builder.spawn().await;
    let admin = app.admin().await;
    let name = format!(
        "Power & Light {}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let created = expect_data(create_provider_raw(&app, &admin, &name, &provider.base_url).await);
    let p = &created["createUtilityProvider"];
    assert_eq!(p["name"], name.as_str(), "createUtilityProvider: {p}");
    assert_eq!(p["kind"], "ELECTRICITY", "createUtilityProvider: {p}");
    assert_eq!(p["currency"], "USD", "createUtilityProvider: {p}");
    let provider_id = p["id"]
        .as_str()
        .unwrap_or_else(|| panic!("provider without id: {p}"))
        .to_string();
    World {
        app,
        provider,
        admin,
        provider_id,
        provider_name: name,
    }
}

async fn create_provider_raw(app: &TestApp, s: &Session, name: &str, base_url: &str) -> Value {
    app.gql(
        s.token(),
        "mutation C($n: String!, $u: String!) { createUtilityProvider(input: \
           {name: $n, kind: ELECTRICITY, currency: \"USD\", apiBaseUrl: $u}) { id name kind currency } }",
        json!({ "n": name, "u": base_url }),
    )
    .await
}

async fn link_raw(app: &TestApp, s: &Session, provider_id: &str, number: &str) -> Value {
    app.gql(
        s.token(),
        "mutation L($p: ID!, $n: String!) { linkUtilityAccount(input: \
           {providerId: $p, customerNumber: $n, nickname: \"Home\"}) { \
             id provider { id name } customerNumber nickname createdAt } }",
        json!({ "p": provider_id, "n": number }),
    )
    .await
}

/// Links `number` and returns the link's id.
async fn link(w: &World, s: &Session, number: &str) -> String {
    let data = expect_data(link_raw(&w.app, s, &w.provider_id, number).await);
    let l = &data["linkUtilityAccount"];
    assert_eq!(l["customerNumber"], number, "link: {l}");
    assert_eq!(l["nickname"], "Home", "link: {l}");
    assert_eq!(l["provider"]["id"], w.provider_id.as_str(), "link: {l}");
    assert_eq!(l["provider"]["name"], w.provider_name.as_str(), "link: {l}");
    assert!(
        l["createdAt"].as_str().is_some_and(|t| !t.is_empty()),
        "link without createdAt: {l}"
    );
    l["id"].as_str().expect("link id").to_string()
}

async fn bills_raw(app: &TestApp, s: &Session, status: Option<&str>) -> Value {
    app.gql(
        s.token(),
        &format!("query B($s: BillStatus) {{ bills(status: $s) {{ {BILL_FIELDS} }} }}"),
        json!({ "s": status }),
    )
    .await
}

async fn bills(app: &TestApp, s: &Session, status: Option<&str>) -> Vec<Value> {
    let data = expect_data(bills_raw(app, s, status).await);
    data["bills"]
        .as_array()
        .unwrap_or_else(|| panic!("bills is not a list: {data}"))
        .clone()
}

/// Polls `bills` every 200 ms until `pred` holds.
async fn wait_bills(
    app: &TestApp,
    s: &Session,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = bills(app, s, None).await;
        if pred(&list) {
            return list;
        }
        if Instant::now() > deadline {
            panic!(
                "bills did not reach \"{what}\" within {timeout:?}; last: {list:#?} (logs: {})",
                app.log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the link's refresh job has filled the cache.
async fn wait_cached(app: &TestApp, s: &Session) -> Vec<Value> {
    wait_bills(app, s, "non-empty", CACHE_FILL, |b| !b.is_empty()).await
}

async fn refresh_bills(app: &TestApp, s: &Session) {
    let data = expect_data(
        app.gql(s.token(), "mutation { refreshBills }", json!({}))
            .await,
    );
    assert_eq!(data["refreshBills"], true, "refreshBills: {data}");
}

async fn pay_bill_raw(
    app: &TestApp,
    s: &Session,
    bill_id: &str,
    account_id: &str,
    key: &str,
) -> Value {
    app.gql(
        s.token(),
        PAY_BILL,
        json!({ "b": bill_id, "a": account_id, "k": key }),
    )
    .await
}

async fn pay_bill(app: &TestApp, s: &Session, bill_id: &str, account_id: &str, key: &str) -> Value {
    expect_data(pay_bill_raw(app, s, bill_id, account_id, key).await)["payBill"].clone()
}

#[track_caller]
fn bill<'a>(list: &'a [Value], reference: &str) -> &'a Value {
    list.iter()
        .find(|b| b["reference"] == reference)
        .unwrap_or_else(|| panic!("no bill {reference} in {list:#?}"))
}

fn find_bill<'a>(list: &'a [Value], reference: &str) -> Option<&'a Value> {
    list.iter().find(|b| b["reference"] == reference)
}

fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}

#[track_caller]
fn fetched_at(bill: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let raw = bill["fetchedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("fetchedAt is not a string: {bill}"));
    chrono::DateTime::parse_from_rfc3339(raw)
        .unwrap_or_else(|e| panic!("fetchedAt {raw:?} is not RFC 3339 ({e}): {bill}"))
}

fn references(list: &[Value]) -> Vec<String> {
    let mut refs: Vec<String> = list
        .iter()
        .map(|b| b["reference"].as_str().unwrap_or("?").to_string())
        .collect();
    refs.sort();
    refs
}

/// The Redis keys of this deployment that mention `link_id`, with their TTL
/// in seconds (-1: none).
async fn cache_ttls(app: &TestApp, link_id: &str) -> Vec<(String, i64)> {
    let client = redis::Client::open(test_redis_url()).expect("TEST_REDIS_URL");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {}: {e}", test_redis_url()));
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", app.prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .expect("SCAN");
        keys.extend(batch.into_iter().filter(|k| k.contains(link_id)));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut con)
            .await
            .expect("TTL");
        out.push((key, ttl));
    }
    out
}

/// Asserts that `elapsed` stays under `limit` for `what`.
#[track_caller]
fn assert_fast(what: &str, elapsed: Duration, limit: Duration) {
    assert!(
        elapsed < limit,
        "{what} took {elapsed:?} with a slow provider (limit {limit:?}): the provider blocks the API"
    );
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_checks_the_customer_number_with_the_provider_and_lists_the_cached_bills() {
    let w = world().await;
    let app = &w.app;
    let s = app.register_random().await;

    // Customers see the registered provider.
    let data = expect_data(
        app.gql(
            s.token(),
            "{ utilityProviders { id name kind currency } }",
            json!({}),
        )
        .await,
    );
    let providers = data["utilityProviders"]
        .as_array()
        .expect("utilityProviders list");
    assert!(
        providers.iter().any(|p| p["id"] == w.provider_id.as_str()
            && p["kind"] == "ELECTRICITY"
            && p["currency"] == "USD"),
        "utilityProviders lacks the provider: {data}"
    );

    // The provider does not know 999999: NOT_FOUND, nothing linked.
    let unknown = link_raw(app, &s, &w.provider_id, "999999").await;
    expect_code(&unknown, "NOT_FOUND");
    // An unknown provider: NOT_FOUND too.
    let no_provider = link_raw(app, &s, &uuid::Uuid::new_v4().to_string(), "100001").await;
    expect_code(&no_provider, "NOT_FOUND");
    let data = expect_data(
        app.gql(s.token(), "{ utilityLinks { id } }", json!({}))
            .await,
    );
    assert_eq!(
        data["utilityLinks"],
        json!([]),
        "a refused link was stored: {data}"
    );

    let link_id = link(&w, &s, "100001").await;
    let data = expect_data(
        app.gql(
            s.token(),
            "{ utilityLinks { id customerNumber provider { id } } }",
            json!({}),
        )
        .await,
    );
    assert_eq!(
        data["utilityLinks"],
        json!([{ "id": link_id, "customerNumber": "100001", "provider": { "id": w.provider_id } }]),
        "utilityLinks: {data}"
    );

    // A customer number that is no number at all never reaches the provider.
    let bad = link_raw(app, &s, &w.provider_id, "../admin").await;
    expect_code(&bad, "BAD_USER_INPUT");

    // Linking the same number twice is refused.
    let twice = link_raw(app, &s, &w.provider_id, "100001").await;
    expect_code(&twice, "BAD_USER_INPUT");

    // The worker fetches the bills into the cache.
    let list = wait_cached(app, &s).await;
    assert_eq!(
        references(&list),
        vec!["INV-100001-10", "INV-100001-11"],
        "bills of 100001: {list:#?}"
    );
    let unpaid = bill(&list, "INV-100001-11");
    assert_eq!(unpaid["amount"], "123.45", "{unpaid}");
    assert_eq!(unpaid["currency"], "USD", "{unpaid}");
    assert_eq!(unpaid["dueDate"], "2026-12-01", "{unpaid}");
    assert_eq!(unpaid["status"], "UNPAID", "{unpaid}");
    assert_eq!(unpaid["link"]["id"], link_id.as_str(), "{unpaid}");
    let paid = bill(&list, "INV-100001-10");
    assert_eq!(
        paid["amount"], "98.10",
        "amounts keep the currency's two digits: {paid}"
    );
    assert_eq!(paid["currency"], "USD", "{paid}");
    assert_eq!(paid["dueDate"], "2026-11-01", "{paid}");
    assert_eq!(paid["status"], "PAID", "{paid}");
    assert_eq!(paid["link"]["id"], link_id.as_str(), "{paid}");
    assert_ne!(unpaid["id"], paid["id"], "two bills share an id");
    let age = chrono::Utc::now().signed_duration_since(fetched_at(unpaid));
    assert!(
        age < chrono::Duration::minutes(5) && age > chrono::Duration::minutes(-5),
        "fetchedAt of a fresh fetch is {age} old: {unpaid}"
    );
    assert_eq!(
        fetched_at(unpaid),
        fetched_at(paid),
        "one fetch, one fetchedAt"
    );

    // The cache lives in Redis with a TTL of at most 24 h.
    let ttls = cache_ttls(app, &link_id).await;
    assert!(
        !ttls.is_empty(),
        "no Redis key under {} mentions link {link_id}",
        app.prefix
    );
    for (key, ttl) in &ttls {
        assert!(
            *ttl > 0 && *ttl <= 24 * 3600,
            "the bill cache key {key} has TTL {ttl} s; expected a TTL of at most 24 h"
        );
    }

    // The status filter.
    let only_unpaid = bills(app, &s, Some("UNPAID")).await;
    assert_eq!(
        references(&only_unpaid),
        vec!["INV-100001-11"],
        "{only_unpaid:#?}"
    );
    let only_paid = bills(app, &s, Some("PAID")).await;
    assert_eq!(
        references(&only_paid),
        vec!["INV-100001-10"],
        "{only_paid:#?}"
    );
    let processing = bills(app, &s, Some("PROCESSING")).await;
    assert!(
        processing.is_empty(),
        "nothing is PROCESSING yet: {processing:#?}"
    );

    // Another customer sees none of it.
    let other = app.register_random().await;
    assert!(
        bills(app, &other, None).await.is_empty(),
        "bills leak to another customer"
    );
    // And nobody anonymous.
    let anonymous = app
        .gql(None, &format!("{{ bills {{ {BILL_FIELDS} }} }}"), json!({}))
        .await;
    expect_code(&anonymous, "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_bills_while_the_provider_is_down_and_fetched_at_tells_their_age() {
    let w = world().await;
    let app = &w.app;
    let s = app.register_random().await;
    link(&w, &s, "100001").await;
    let before = wait_cached(app, &s).await;
    let first_fetch = fetched_at(bill(&before, "INV-100001-11"));

    w.provider.control(json!({ "down": true })).await;

    // Linking needs the provider: refused while it answers 503.
    let refused = link_raw(app, &s, &w.provider_id, "100002").await;
    expect_code(&refused, "PROVIDER_UNAVAILABLE");

    // Served from the cache, as it was.
    let during = bills(app, &s, None).await;
    assert_eq!(
        references(&during),
        references(&before),
        "bills while down: {during:#?}"
    );
    assert_eq!(fetched_at(bill(&during, "INV-100001-11")), first_fetch);

    // A refresh against a down provider retries (1 s, 2 s) and then keeps
    // the old cache: for the whole time and after, the bills stay listed
    // with the old fetchedAt.
    refresh_bills(app, &s).await;
    let watch_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < watch_until {
        let list = bills(app, &s, None).await;
        assert_eq!(
            references(&list),
            references(&before),
            "the cache lost bills while the provider was down: {list:#?}"
        );
        assert_eq!(
            fetched_at(bill(&list, "INV-100001-11")),
            first_fetch,
            "fetchedAt changed although no fetch succeeded: {list:#?}"
        );
        for b in &list {
            assert_ne!(b["status"], "PROCESSING", "{b}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The provider is back: a refresh brings a newer fetchedAt.
    w.provider.control(json!({ "down": false })).await;
    refresh_bills(app, &s).await;
    let after = wait_bills(app, &s, "a newer fetchedAt", CACHE_FILL, |list| {
        find_bill(list, "INV-100001-11").is_some_and(|b| fetched_at(b) > first_fetch)
    })
    .await;
    assert_eq!(references(&after), references(&before), "{after:#?}");
    assert_eq!(bill(&after, "INV-100001-11")["status"], "UNPAID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_bill_moves_the_money_once_and_reports_the_payment_to_the_provider_exactly_once() {
    let w = world().await;
    let app = &w.app;
    let s = app.register_random().await;
    link(&w, &s, "100001").await;
    let list = wait_cached(app, &s).await;
    let to_pay = id(bill(&list, "INV-100001-11"));
    let already_paid = id(bill(&list, "INV-100001-10"));
    let account = app.funded_account(&s, "USD", "500.00").await;

    // The provider answers the first two reports with 500.
    let settings = w.provider.control(json!({ "failNextPayments": 2 })).await;
    assert_eq!(settings["failNextPayments"], 2, "{settings}");

    let pay_key = key();
    let transfer = pay_bill(app, &s, &to_pay, &account.id, &pay_key).await;
    assert_eq!(transfer["kind"], "BILL_PAYMENT", "{transfer}");
    assert_eq!(transfer["status"], "PENDING", "{transfer}");
    assert_eq!(transfer["amount"], "123.45", "{transfer}");
    assert_eq!(transfer["currency"], "USD", "{transfer}");
    assert!(
        transfer["destination"]["holderName"]
            .as_str()
            .is_some_and(|h| h.contains(w.provider_name.as_str())),
        "the payee of a bill payment is the provider: {transfer}"
    );
    let transfer_id = id(&transfer);

    // Until the provider accepted the report the bill is PROCESSING (the
    // first two reports fail), then PAID; never UNPAID again.
    let mut seen = Vec::new();
    let deadline = Instant::now() + REPORTED;
    loop {
        let list = bills(app, &s, None).await;
        let status = bill(&list, "INV-100001-11")["status"]
            .as_str()
            .expect("status")
            .to_string();
        assert_ne!(
            status, "UNPAID",
            "a paid bill went back to UNPAID: {list:#?}"
        );
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "PAID" {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "the bill is not PAID {REPORTED:?} after payBill (statuses seen {seen:?}); \
                 provider payments: {:?} (logs: {})",
                w.provider.payments().await,
                app.log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen,
        vec!["PROCESSING", "PAID"],
        "the bill must be PROCESSING while the provider refuses the report, PAID after"
    );
    let settled = app.wait_transfer_final(&s, &transfer_id, SETTLE).await;
    assert_eq!(settled["status"], "COMPLETED", "{settled}");
    assert_eq!(settled["kind"], "BILL_PAYMENT", "{settled}");

    // The provider recorded exactly one payment for the bill.
    let recorded = w.provider.payments_for("INV-100001-11").await;
    assert_eq!(
        recorded.len(),
        1,
        "payments recorded for the bill: {recorded:#?}"
    );
    let p = &recorded[0];
    assert_eq!(p["payment"]["amount"], "123.45", "{p}");
    assert_eq!(p["payment"]["currency"], "USD", "{p}");
    assert!(
        p["payment"]["paymentId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{p}"
    );
    assert!(p["timesReceived"].as_u64().is_some_and(|n| n >= 1), "{p}");
    assert_eq!(
        w.provider.payments().await.len(),
        1,
        "other payments were reported"
    );

    // Money moved once.
    let acc = app.account(&s, &account.id).await;
    assert_eq!(acc["balance"], "376.55", "{acc}");
    assert_eq!(acc["availableBalance"], "376.55", "{acc}");

    // The bill cannot be paid a second time, even with a fresh key.
    let again = pay_bill_raw(app, &s, &to_pay, &account.id, &key()).await;
    expect_code(&again, "BAD_USER_INPUT");
    // The retry of the original request returns the original transfer.
    let replay = pay_bill(app, &s, &to_pay, &account.id, &pay_key).await;
    assert_eq!(
        id(&replay),
        transfer_id,
        "the same key must return the same transfer: {replay}"
    );
    assert_eq!(replay["kind"], "BILL_PAYMENT", "{replay}");
    // A bill the provider reports PAID cannot be paid.
    let paid_before = pay_bill_raw(app, &s, &already_paid, &account.id, &key()).await;
    expect_code(&paid_before, "BAD_USER_INPUT");

    // After a refresh the provider itself reports the bill PAID; nothing
    // more was reported or moved meanwhile.
    refresh_bills(app, &s).await;
    let first = fetched_at(bill(&list, "INV-100001-11"));
    let refreshed = wait_bills(app, &s, "refetched", CACHE_FILL, |l| {
        find_bill(l, "INV-100001-11").is_some_and(|b| fetched_at(b) > first)
    })
    .await;
    assert_eq!(
        bill(&refreshed, "INV-100001-11")["status"],
        "PAID",
        "{refreshed:#?}"
    );
    let again = pay_bill_raw(app, &s, &to_pay, &account.id, &key()).await;
    expect_code(&again, "BAD_USER_INPUT");
    let replay = pay_bill(app, &s, &to_pay, &account.id, &pay_key).await;
    assert_eq!(
        id(&replay),
        transfer_id,
        "the same key after the refresh: {replay}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recorded = w.provider.payments_for("INV-100001-11").await;
    assert_eq!(
        recorded.len(),
        1,
        "payments recorded for the bill: {recorded:#?}"
    );
    let acc = app.account(&s, &account.id).await;
    assert_eq!(
        acc["balance"], "376.55",
        "money moved more than once: {acc}"
    );
    assert_eq!(
        app.count_transfers(&w.admin, None).await,
        2,
        "exactly the funding deposit and one bill payment"
    );

    // The provider's settlement account is a system account: the books net
    // to zero and the customers' total is the remaining balance.
    let lines = app.trial_balance(&w.admin).await;
    let usd = lines
        .iter()
        .find(|l| l["currency"] == "USD")
        .unwrap_or_else(|| panic!("no USD line in {lines:?}"));
    assert_eq!(minor(usd["net"].as_str().expect("net"), 2), 0, "{usd}");
    assert_eq!(
        minor(usd["customerTotal"].as_str().expect("customerTotal"), 2),
        37655,
        "{usd}"
    );
    let report = app.assert_ledger_consistent().await;
    assert_eq!(
        report.customer_total_minor.get("USD"),
        Some(&37655),
        "{report:?}"
    );
    assert_eq!(report.completed, 2, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_does_not_slow_down_any_graphql_request() {
    let w = world().await;
    let app = &w.app;
    let s = app.register_random().await;
    link(&w, &s, "100001").await;
    let list = wait_cached(app, &s).await;
    let to_pay = id(bill(&list, "INV-100001-11"));
    let account = app.funded_account(&s, "USD", "200.00").await;

    w.provider.control(json!({ "latencyMs": 5000 })).await;
    let limit = Duration::from_secs(2);

    let started = Instant::now();
    let cached = bills(app, &s, None).await;
    assert_fast("bills", started.elapsed(), limit);
    assert_eq!(references(&cached), references(&list), "{cached:#?}");

    let started = Instant::now();
    refresh_bills(app, &s).await;
    assert_fast("refreshBills", started.elapsed(), limit);

    let started = Instant::now();
    let transfer = pay_bill(app, &s, &to_pay, &account.id, &key()).await;
    assert_fast("payBill", started.elapsed(), limit);
    assert_eq!(transfer["kind"], "BILL_PAYMENT", "{transfer}");

    let started = Instant::now();
    expect_data(app.me_raw(s.token()).await);
    assert_fast("me", started.elapsed(), limit);

    // While the refresh (and the report) are stuck on the slow provider,
    // reads still answer at once.
    for _ in 0..3 {
        let started = Instant::now();
        let during = bills(app, &s, None).await;
        assert_fast("bills during a slow refresh", started.elapsed(), limit);
        assert_eq!(references(&during), references(&list), "{during:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Linking asks the provider synchronously, with a 3 s limit.
    let started = Instant::now();
    let slow_link = link_raw(app, &s, &w.provider_id, "100002").await;
    let elapsed = started.elapsed();
    expect_code(&slow_link, "PROVIDER_UNAVAILABLE");
    assert!(
        elapsed < Duration::from_millis(4500),
        "linkUtilityAccount with a 5 s provider took {elapsed:?}; the limit is 3 s"
    );

    // The money path does not wait for the provider either.
    let settled = app.wait_transfer_final(&s, &id(&transfer), SETTLE).await;
    assert_eq!(settled["status"], "COMPLETED", "{settled}");
    let processing = bills(app, &s, None).await;
    assert_eq!(
        bill(&processing, "INV-100001-11")["status"],
        "PROCESSING",
        "{processing:#?}"
    );

    // Reports that timed out are retried; once the provider is fast again
    // the bill becomes PAID with one payment at the provider.
    w.provider.control(json!({ "latencyMs": 0 })).await;
    wait_bills(app, &s, "INV-100001-11 PAID", REPORTED, |l| {
        find_bill(l, "INV-100001-11").is_some_and(|b| b["status"] == "PAID")
    })
    .await;
    let recorded = w.provider.payments_for("INV-100001-11").await;
    assert_eq!(
        recorded.len(),
        1,
        "payments recorded for the bill: {recorded:#?}"
    );
    assert_eq!(app.account(&s, &account.id).await["balance"], "76.55");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_updated_fires_when_a_refresh_finishes_and_when_a_payment_changes_state() {
    let w = world().await;
    let app = &w.app;
    let s = app.register_random().await;
    link(&w, &s, "100001").await;
    let list = wait_cached(app, &s).await;
    let first = fetched_at(bill(&list, "INV-100001-11"));
    let account = app.funded_account(&s, "USD", "200.00").await;

    let mut ws = Ws::connect(&app.addr, &s.access_token).await;
    ws.subscribe(
        "bills",
        &format!("subscription {{ billsUpdated {{ {BILL_FIELDS} }} }}"),
        json!({}),
    )
    .await;
    // Give the server a moment to register the subscription.
    tokio::time::sleep(Duration::from_millis(500)).await;

    refresh_bills(app, &s).await;
    let deadline = Instant::now() + EVENT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let data = ws
            .next_data("bills", remaining.max(Duration::from_millis(1)))
            .await;
        let event = data["billsUpdated"]
            .as_array()
            .unwrap_or_else(|| panic!("billsUpdated is not a list: {data}"))
            .clone();
        assert_eq!(
            references(&event),
            references(&list),
            "billsUpdated: {event:#?}"
        );
        // An event of the link's own refresh may still be on its way; the
        // refresh asked for here brings a newer fetchedAt.
        if fetched_at(bill(&event, "INV-100001-11")) > first {
            assert_eq!(bill(&event, "INV-100001-11")["status"], "UNPAID");
            assert_eq!(bill(&event, "INV-100001-11")["amount"], "123.45");
            break;
        }
    }

    // A payment: PROCESSING while the provider refuses the first report,
    // then PAID.
    w.provider.control(json!({ "failNextPayments": 1 })).await;
    let to_pay = id(bill(&list, "INV-100001-11"));
    let transfer = pay_bill(app, &s, &to_pay, &account.id, &key()).await;
    let mut statuses: Vec<String> = Vec::new();
    let deadline = Instant::now() + REPORTED;
    while statuses.last().map(String::as_str) != Some("PAID") {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            panic!(
                "no billsUpdated event with the bill PAID within {REPORTED:?} (statuses {statuses:?})\n\
                 transcript:\n{}",
                ws.transcript()
            );
        }
        let data = ws.next_data("bills", remaining).await;
        let event = data["billsUpdated"]
            .as_array()
            .expect("billsUpdated list")
            .clone();
        let status = bill(&event, "INV-100001-11")["status"]
            .as_str()
            .expect("status")
            .to_string();
        if statuses.last() != Some(&status) {
            statuses.push(status);
        }
    }
    assert!(
        statuses.contains(&"PROCESSING".to_string()),
        "no billsUpdated event showed the bill PROCESSING (statuses {statuses:?})"
    );
    if let Some(pos) = statuses.iter().position(|st| st == "PROCESSING") {
        assert!(
            !statuses[pos..].contains(&"UNPAID".to_string()),
            "the bill went back to UNPAID after PROCESSING: {statuses:?}"
        );
    }
    let settled = app.wait_transfer_final(&s, &id(&transfer), SETTLE).await;
    assert_eq!(settled["status"], "COMPLETED", "{settled}");

    // Another customer's subscription hears nothing of it.
    let other = app.register_random().await;
    let mut other_ws = Ws::connect(&app.addr, &other.access_token).await;
    other_ws
        .subscribe("bills", "subscription { billsUpdated { id } }", json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    refresh_bills(app, &s).await;
    // The owner's event proves the refresh finished.
    ws.next_data("bills", EVENT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaked: Vec<Value> = other_ws
        .received()
        .into_iter()
        .filter(|m| m["type"] == "next")
        .collect();
    assert!(
        leaked.is_empty(),
        "another customer received billsUpdated: {leaked:?}"
    );
    ws.close().await;
    other_ws.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_creates_providers_and_links_are_private_to_their_owner() {
    let w = world().await;
    let app = &w.app;
    let alice = app.register_random().await;
    let bob = app.register_random().await;

    // A customer cannot register a provider.
    let denied = create_provider_raw(app, &alice, "Rogue Utility", &w.provider.base_url).await;
    expect_code(&denied, "FORBIDDEN");
    let data = expect_data(
        app.gql(alice.token(), "{ utilityProviders { id name } }", json!({}))
            .await,
    );
    let names: Vec<&str> = data["utilityProviders"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"Rogue Utility"),
        "a customer created a provider: {data}"
    );
    assert_eq!(names, vec![w.provider_name.as_str()], "{data}");

    // The admin's creation is audited.
    let data = expect_data(
        app.gql(
            w.admin.token(),
            "{ auditLog(first: 50) { edges { node { action targetId actor { id } } } } }",
            json!({}),
        )
        .await,
    );
    let audited = data["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .any(|e| {
            e["node"]["action"] == "CREATE_UTILITY_PROVIDER"
                && e["node"]["targetId"] == w.provider_id.as_str()
        });
    assert!(
        audited,
        "no CREATE_UTILITY_PROVIDER audit entry for the provider: {data}"
    );

    // Alice's link is hers alone.
    let alice_link = link(&w, &alice, "100001").await;
    let alice_bills = wait_cached(app, &alice).await;
    let alice_bill = id(bill(&alice_bills, "INV-100001-11"));

    let steal = app
        .gql(
            bob.token(),
            "mutation U($id: ID!) { unlinkUtilityAccount(id: $id) }",
            json!({ "id": alice_link }),
        )
        .await;
    expect_code(&steal, "NOT_FOUND");
    let data = expect_data(
        app.gql(bob.token(), "{ utilityLinks { id } }", json!({}))
            .await,
    );
    assert_eq!(data["utilityLinks"], json!([]), "{data}");
    assert!(
        bills(app, &bob, None).await.is_empty(),
        "Alice's bills leak to Bob"
    );
    // Bob cannot pay Alice's bill from his own account either.
    let bob_account = app.funded_account(&bob, "USD", "500.00").await;
    let pay = pay_bill_raw(app, &bob, &alice_bill, &bob_account.id, &key()).await;
    expect_code(&pay, "NOT_FOUND");
    let acc = app.account(&bob, &bob_account.id).await;
    assert_eq!(acc["availableBalance"], "500.00", "{acc}");

    // Alice still has her link and bills; she can unlink it once.
    let data = expect_data(
        app.gql(alice.token(), "{ utilityLinks { id } }", json!({}))
            .await,
    );
    assert_eq!(
        data["utilityLinks"],
        json!([{ "id": alice_link }]),
        "{data}"
    );
    assert_eq!(bills(app, &alice, None).await.len(), 2);
    let unlink = expect_data(
        app.gql(
            alice.token(),
            "mutation U($id: ID!) { unlinkUtilityAccount(id: $id) }",
            json!({ "id": alice_link }),
        )
        .await,
    );
    assert_eq!(unlink["unlinkUtilityAccount"], true, "{unlink}");
    let data = expect_data(
        app.gql(alice.token(), "{ utilityLinks { id } }", json!({}))
            .await,
    );
    assert_eq!(data["utilityLinks"], json!([]), "{data}");
    assert!(
        bills(app, &alice, None).await.is_empty(),
        "an unlinked account's bills are still listed"
    );
    let twice = app
        .gql(
            alice.token(),
            "mutation U($id: ID!) { unlinkUtilityAccount(id: $id) }",
            json!({ "id": alice_link }),
        )
        .await;
    expect_code(&twice, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_bill_refuses_another_currency_and_missing_funds_and_leaves_the_bill_unpaid() {
    let w = world().await;
    let app = &w.app;
    let s = app.register_random().await;
    link(&w, &s, "100002").await;
    let list = wait_cached(app, &s).await;
    assert_eq!(references(&list), vec!["INV-100002-11"], "{list:#?}");
    assert_eq!(bill(&list, "INV-100002-11")["amount"], "42.00");
    let to_pay = id(bill(&list, "INV-100002-11"));

    let eur = app.funded_account(&s, "EUR", "500.00").await;
    expect_code(
        &pay_bill_raw(app, &s, &to_pay, &eur.id, &key()).await,
        "CURRENCY_MISMATCH",
    );

    let poor = app.funded_account(&s, "USD", "10.00").await;
    expect_code(
        &pay_bill_raw(app, &s, &to_pay, &poor.id, &key()).await,
        "INSUFFICIENT_FUNDS",
    );

    let unknown_bill = pay_bill_raw(app, &s, "not-a-bill", &poor.id, &key()).await;
    expect_code(&unknown_bill, "NOT_FOUND");

    // The refusals took nothing and left the bill payable.
    assert_eq!(app.account(&s, &eur.id).await["availableBalance"], "500.00");
    assert_eq!(app.account(&s, &poor.id).await["availableBalance"], "10.00");
    let now = bills(app, &s, None).await;
    assert_eq!(bill(&now, "INV-100002-11")["status"], "UNPAID", "{now:#?}");
    assert!(w.provider.payments().await.is_empty());

    let rich = app.funded_account(&s, "USD", "100.00").await;
    let transfer = pay_bill(app, &s, &to_pay, &rich.id, &key()).await;
    assert_eq!(transfer["amount"], "42.00", "{transfer}");
    let settled = app.wait_transfer_final(&s, &id(&transfer), SETTLE).await;
    assert_eq!(settled["status"], "COMPLETED", "{settled}");
    wait_bills(app, &s, "INV-100002-11 PAID", REPORTED, |l| {
        find_bill(l, "INV-100002-11").is_some_and(|b| b["status"] == "PAID")
    })
    .await;
    assert_eq!(app.account(&s, &rich.id).await["balance"], "58.00");
    assert_eq!(w.provider.payments_for("INV-100002-11").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_email_cannot_pay_a_bill_when_verification_is_required() {
    let w = world_with(TestApp::builder().email_verification_required()).await;
    let app = &w.app;
    let s = app.register_random().await;
    link(&w, &s, "100001").await;
    let list = wait_cached(app, &s).await;
    let to_pay = id(bill(&list, "INV-100001-11"));
    // Deposits have no source account: allowed without a verified email.
    let account = app.funded_account(&s, "USD", "500.00").await;

    let refused = pay_bill_raw(app, &s, &to_pay, &account.id, &key()).await;
    expect_code(&refused, "EMAIL_NOT_VERIFIED");
    assert_eq!(
        app.account(&s, &account.id).await["availableBalance"],
        "500.00"
    );
    let now = bills(app, &s, None).await;
    assert_eq!(bill(&now, "INV-100001-11")["status"], "UNPAID", "{now:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pay_bills_of_one_bill_have_exactly_one_effect() {
    let w = world().await;
    let app = &w.app;
    let s = app.register_random().await;
    link(&w, &s, "100001").await;
    let list = wait_cached(app, &s).await;
    let to_pay = id(bill(&list, "INV-100001-11"));
    let account = app.funded_account(&s, "USD", "1000.00").await;

    // Ten different keys at once: one payment, nine BAD_USER_INPUT.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = app.client();
        let s = s.clone();
        let (bill_id, account_id) = (to_pay.clone(), account.id.clone());
        tasks.push(tokio::spawn(async move {
            client
                .gql(
                    s.token(),
                    PAY_BILL,
                    json!({ "b": bill_id, "a": account_id, "k": key() }),
                )
                .await
        }));
    }
    let mut paid = Vec::new();
    for task in tasks {
        let resp = task.await.expect("payBill task");
        if resp.get("errors").is_some() {
            expect_code(&resp, "BAD_USER_INPUT");
        } else {
            paid.push(expect_data(resp)["payBill"].clone());
        }
    }
    assert_eq!(
        paid.len(),
        1,
        "concurrent payBills that succeeded: {paid:#?}"
    );
    let settled = app.wait_transfer_final(&s, &id(&paid[0]), SETTLE).await;
    assert_eq!(settled["status"], "COMPLETED", "{settled}");
    wait_bills(app, &s, "INV-100001-11 PAID", REPORTED, |l| {
        find_bill(l, "INV-100001-11").is_some_and(|b| b["status"] == "PAID")
    })
    .await;
    assert_eq!(app.account(&s, &account.id).await["balance"], "876.55");
    assert_eq!(w.provider.payments_for("INV-100001-11").await.len(), 1);
    app.assert_ledger_consistent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_are_refreshed_periodically_every_bills_refresh_secs() {
    let w = world_with(TestApp::builder().env("BILLS_REFRESH_SECS", "2")).await;
    let app = &w.app;
    let s = app.register_random().await;
    link(&w, &s, "100001").await;
    let list = wait_cached(app, &s).await;
    let first = fetched_at(bill(&list, "INV-100001-11"));
    // No refreshBills: the periodic refresh alone brings a newer fetch.
    wait_bills(
        app,
        &s,
        "a newer fetchedAt without refreshBills",
        CACHE_FILL,
        |l| find_bill(l, "INV-100001-11").is_some_and(|b| fetched_at(b) > first),
    )
    .await;
}

/// Link, cached bills, a payment reported after one refused report, PAID,
/// money moved once: the same flow on another deployment shape.
async fn pay_flow(w: &World) {
    let app = &w.app;
    let s = app.register_random().await;
    link(w, &s, "100001").await;
    let list = wait_cached(app, &s).await;
    assert_eq!(
        references(&list),
        vec!["INV-100001-10", "INV-100001-11"],
        "{list:#?}"
    );
    let account = app.funded_account(&s, "USD", "300.00").await;
    let mut ws = Ws::connect(&app.addr, &s.access_token).await;
    ws.subscribe(
        "bills",
        &format!("subscription {{ billsUpdated {{ {BILL_FIELDS} }} }}"),
        json!({}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.provider.control(json!({ "failNextPayments": 1 })).await;
    let transfer = pay_bill(
        app,
        &s,
        &id(bill(&list, "INV-100001-11")),
        &account.id,
        &key(),
    )
    .await;
    assert_eq!(transfer["kind"], "BILL_PAYMENT", "{transfer}");
    let now = bills(app, &s, None).await;
    assert_eq!(
        bill(&now, "INV-100001-11")["status"],
        "PROCESSING",
        "{now:#?}"
    );
    let settled = app.wait_transfer_final(&s, &id(&transfer), SETTLE).await;
    assert_eq!(settled["status"], "COMPLETED", "{settled}");
    wait_bills(app, &s, "INV-100001-11 PAID", REPORTED, |l| {
        find_bill(l, "INV-100001-11").is_some_and(|b| b["status"] == "PAID")
    })
    .await;
    // The report (by the worker) reaches the subscriber (on the api).
    let deadline = Instant::now() + EVENT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "no billsUpdated with the bill PAID\n{}",
            ws.transcript()
        );
        let data = ws.next_data("bills", remaining).await;
        let event = data["billsUpdated"]
            .as_array()
            .expect("billsUpdated list")
            .clone();
        if bill(&event, "INV-100001-11")["status"] == "PAID" {
            break;
        }
    }
    ws.close().await;
    assert_eq!(app.account(&s, &account.id).await["balance"], "176.55");
    assert_eq!(w.provider.payments_for("INV-100001-11").await.len(), 1);
    // Enough money left for a second payment: refused as already paid.
    let again = pay_bill_raw(
        app,
        &s,
        &id(bill(&list, "INV-100001-11")),
        &account.id,
        &key(),
    )
    .await;
    expect_code(&again, "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_work_with_separate_worker_processes() {
    let w = world_with(TestApp::builder().workers(1)).await;
    pay_flow(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bills_work_in_embedded_mode_with_the_in_memory_cache() {
    let w = world_with(TestApp::builder().sqlite()).await;
    pay_flow(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bill_payment_that_fails_at_settlement_frees_the_bill_and_is_never_reported() {
    let mut w = world_with(TestApp::builder().workers(1)).await;
    let s = w.app.register_random().await;
    link(&w, &s, "100001").await;
    let list = wait_cached(&w.app, &s).await;
    let to_pay = id(bill(&list, "INV-100001-11"));
    let account = w.app.funded_account(&s, "USD", "500.00").await;

    // No worker: the payment stays PENDING while the admin freezes the
    // source account, so settlement fails it.
    w.app.workers[0].terminate(Duration::from_secs(30)).await;
    let transfer = pay_bill(&w.app, &s, &to_pay, &account.id, &key()).await;
    assert_eq!(transfer["status"], "PENDING", "{transfer}");
    let now = bills(&w.app, &s, None).await;
    assert_eq!(
        bill(&now, "INV-100001-11")["status"],
        "PROCESSING",
        "{now:#?}"
    );
    expect_data(
        w.app
            .gql(
                w.admin.token(),
                "mutation F($id: ID!) { freezeAccount(id: $id, reason: \"bill test\") { id status } }",
                json!({ "id": account.id }),
            )
            .await,
    );
    let worker = w.app.spawn_worker().await;
    w.app.workers.push(worker);
    let failed = w.app.wait_transfer_final(&s, &id(&transfer), SETTLE).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");

    // The bill is payable again and the provider never heard of the payment.
    wait_bills(&w.app, &s, "INV-100001-11 UNPAID again", CACHE_FILL, |l| {
        find_bill(l, "INV-100001-11").is_some_and(|b| b["status"] == "UNPAID")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        w.provider.payments().await.is_empty(),
        "a failed payment was reported: {:?}",
        w.provider.payments().await
    );
    let acc = w.app.account(&s, &account.id).await;
    assert_eq!(acc["balance"], "500.00", "{acc}");
    assert_eq!(
        acc["availableBalance"], "500.00",
        "the hold survived the failure: {acc}"
    );

    expect_data(
        w.app
            .gql(
                w.admin.token(),
                "mutation U($id: ID!) { unfreezeAccount(id: $id) { id status } }",
                json!({ "id": account.id }),
            )
            .await,
    );
    let retry = pay_bill(&w.app, &s, &to_pay, &account.id, &key()).await;
    let done = w.app.wait_transfer_final(&s, &id(&retry), SETTLE).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    wait_bills(&w.app, &s, "INV-100001-11 PAID", REPORTED, |l| {
        find_bill(l, "INV-100001-11").is_some_and(|b| b["status"] == "PAID")
    })
    .await;
    assert_eq!(w.provider.payments_for("INV-100001-11").await.len(), 1);
    assert_eq!(w.app.account(&s, &account.id).await["balance"], "376.55");
    w.app.assert_ledger_consistent().await;
}
