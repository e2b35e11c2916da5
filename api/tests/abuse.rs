//! Abuse of the GraphQL endpoint: oversized documents, batches, password
//! guessing, forged tokens, cross-site request shapes, request floods and the
//! production switches for introspection and GraphiQL.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

const LOGIN: &str = "mutation L($e: String!, $p: String!) { \
     login(input: {email: $e, password: $p}) { accessToken } }";

/// POSTs `body` with `content_type` (and extra headers) and returns the
/// HTTP status and the JSON answer, checked against the error contract.
async fn post(
    app: &TestApp,
    content_type: &str,
    body: String,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.url("/graphql"))
        .header("Content-Type", content_type)
        .header("Accept", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST /graphql");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
        panic!("POST /graphql answered {status} with a non-JSON body: {text:.300}")
    });
    (status, check_response(value))
}

async fn post_json(app: &TestApp, token: Option<&str>, body: &Value) -> (u16, Value) {
    post(app, "application/json", body.to_string(), token, &[]).await
}

fn random_email() -> String {
    format!("u-{}@example.test", Uuid::new_v4().simple())
}

/// Whether a login with the right password gets in.
async fn can_log_in(app: &TestApp, email: &str) -> Value {
    app.login_raw(email, PASSWORD).await
}

// ---------------------------------------------------------------------------
// Document limits
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_nested_deeper_than_fifteen_levels_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    app.funded_account(&user, "USD", "10.00").await;

    // me(1) accounts(2) edges(3) node(4) transfers(5) edges(6) node(7)
    // destination(8) account(9) owner(10) accounts(11) edges(12) node(13)
    // owner(14) id(15); `first: 1` keeps the complexity low.
    let fifteen = "{ me { accounts(first: 1) { edges { node { transfers(first: 1) { edges { node { destination { \
                   account { owner { accounts(first: 1) { edges { node { owner { id } } } } } } } } } } } } } } }";
    let data = expect_data(app.gql(user.token(), fifteen, json!({})).await);
    assert!(data["me"]["accounts"]["edges"][0].is_object(), "{data}");

    // ... node(13) owner(14) accounts(15) totalCount(16)
    let sixteen = "{ me { accounts(first: 1) { edges { node { transfers(first: 1) { edges { node { destination { \
                   account { owner { accounts(first: 1) { edges { node { owner { accounts(first: 1) { totalCount } } } } } } } } } } } } } } } }";
    let resp = app.gql(user.token(), sixteen, json!({})).await;
    expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
    assert!(resp["data"].is_null(), "nothing executes: {resp}");

    // Through fragments the depth is the same.
    let with_fragments = "query { me { ...A } } \
        fragment A on User { accounts(first: 1) { edges { node { ...B } } } } \
        fragment B on Account { transfers(first: 1) { edges { node { destination { account { ...C } } } } } } \
        fragment C on Account { owner { accounts(first: 1) { edges { node { owner { accounts(first: 1) { totalCount } } } } } } }";
    let resp = app.gql(user.token(), with_fragments, json!({})).await;
    expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
}

/// A document selecting `n` times the same leaf of `me`.
fn repeated_fields(n: usize) -> String {
    format!("{{ me {{ {} }} }}", "id ".repeat(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_above_complexity_five_thousand_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;

    // me + 4,990 fields: 4,991, under the limit.
    let data = expect_data(
        app.gql(user.token(), &repeated_fields(4990), json!({}))
            .await,
    );
    assert_eq!(data["me"]["id"], user.user_id.as_str());

    // me + 5,001 fields: 5,002.
    let resp = app
        .gql(user.token(), &repeated_fields(5001), json!({}))
        .await;
    expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
    assert!(resp["data"].is_null(), "{resp:.300}");

    // A small document whose fragment spreads add up to 9,000 fields.
    let fragment = "fragment F on User { id email fullName role emailVerified createdAt \
                    a: accounts { totalCount } b: accounts { totalCount } }";
    let spreads = "...F ".repeat(1000);
    let doc = format!("{{ me {{ {spreads} }} }} {fragment}");
    assert!(doc.len() < 16 * 1024);
    let resp = app.gql(user.token(), &doc, json!({})).await;
    expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_listing_whose_cost_multiplies_past_the_limit_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    // 100 transfers, each with 100 transfers of its counterpart account, each
    // with ten fields: 100,000 values for a document of a few dozen fields.
    let doc = "{ transfers(first: 100) { edges { node { destination { account { \
                 transfers(first: 100) { edges { node { id kind status amount currency memo \
                 failureReason idempotencyKey createdAt settledAt } } } } } } } } }";
    let resp = app.gql(user.token(), doc, json!({})).await;
    expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_aliased_logins_in_one_document_are_refused_unexecuted() {
    let app = TestApp::spawn().await;
    let victim = app.register_random().await;

    let aliases: String = (0..1000)
        .map(|i| format!("a{i}: login(input: $i) {{ accessToken }} "))
        .collect();
    let doc = format!("mutation M($i: LoginInput!) {{ {aliases} }}");
    let body = json!({
        "query": doc,
        "variables": { "i": { "email": victim.email, "password": "wrong password guess" } },
    });
    let (status, resp) = post_json(&app, None, &body).await;
    assert_eq!(status, 400, "{resp:.300}");
    expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
    assert!(resp["data"].is_null(), "{resp:.300}");
    // No login ran: five failures would have locked the account.
    expect_data(can_log_in(&app, &victim.email).await);

    // The cap is 30: 31 aliases are refused, 30 pass.
    let doc = |n: usize| {
        let fields: String = (0..n).map(|i| format!("a{i}: me {{ id }} ")).collect();
        json!({ "query": format!("{{ {fields} }}") })
    };
    let (status, resp) = post_json(&app, victim.token(), &doc(31)).await;
    assert_eq!(status, 400, "{resp:.300}");
    expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
    let (status, resp) = post_json(&app, victim.token(), &doc(30)).await;
    assert_eq!(status, 200, "{resp:.300}");
    assert_eq!(expect_data(resp)["a29"]["id"], victim.user_id.as_str());

    // At most 10 operations per document.
    let ops = |n: usize| -> String {
        (0..n)
            .map(|i| format!("query Q{i} {{ me {{ id }} }} "))
            .collect()
    };
    let (status, resp) = post_json(
        &app,
        victim.token(),
        &json!({ "query": ops(11), "operationName": "Q0" }),
    )
    .await;
    assert_eq!(status, 400, "{resp:.300}");
    expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
    let (status, resp) = post_json(
        &app,
        victim.token(),
        &json!({ "query": ops(10), "operationName": "Q9" }),
    )
    .await;
    assert_eq!(status, 200, "{resp:.300}");
    expect_data(resp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_batch_of_logins_is_refused_unexecuted() {
    let app = TestApp::spawn().await;
    let victim = app.register_random().await;
    let batch: Vec<Value> = (0..100)
        .map(|i| {
            json!({
                "query": LOGIN,
                "variables": { "e": victim.email, "p": format!("guess number {i}") },
            })
        })
        .collect();
    let (status, resp) = post_json(&app, None, &Value::Array(batch)).await;
    assert_eq!(status, 400, "{resp:.300}");
    expect_code(&resp, "BAD_USER_INPUT");
    assert!(resp.get("data").is_none_or(Value::is_null), "{resp:.300}");
    expect_data(can_log_in(&app, &victim.email).await);

    // A batch of one is still a batch.
    let one = json!([{ "query": "{ __typename }" }]);
    let (status, resp) = post_json(&app, None, &one).await;
    assert_eq!(status, 400, "{resp:.300}");
    expect_code(&resp, "BAD_USER_INPUT");
}

// ---------------------------------------------------------------------------
// Password guessing
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_headers_do_not_escape_the_account_lock() {
    let app = TestApp::spawn().await;
    let victim = app.register_random().await;
    let bystander = app.register_random().await;

    let mut answers = Vec::new();
    for i in 0..20 {
        let ip = format!("203.0.113.{}", i + 1);
        let body = json!({ "query": LOGIN, "variables": { "e": victim.email, "p": format!("guess {i}") } });
        let (status, resp) = post(
            &app,
            "application/json",
            body.to_string(),
            None,
            &[
                ("X-Forwarded-For", ip.as_str()),
                ("X-Real-IP", ip.as_str()),
                ("Forwarded", &format!("for={ip}")),
            ],
        )
        .await;
        assert_eq!(status, 200, "{resp}");
        answers.push(error_codes(&resp));
    }
    for (i, codes) in answers.iter().enumerate() {
        let want = if i < 5 {
            "INVALID_CREDENTIALS"
        } else {
            "RATE_LIMITED"
        };
        assert_eq!(codes, &[want], "login #{} of 20: {answers:?}", i + 1);
    }
    // Locked whatever is typed, however the email is spelled.
    expect_code(&can_log_in(&app, &victim.email).await, "RATE_LIMITED");
    expect_code(
        &can_log_in(&app, &format!("  {}  ", victim.email.to_uppercase())).await,
        "RATE_LIMITED",
    );
    // The lock is the account's: another account from the same client is fine.
    expect_data(can_log_in(&app, &bystander.email).await);
    // The tokens already issued keep working.
    expect_data(app.me_raw(victim.token()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_login_resets_the_account_failure_count() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    for round in 0..2 {
        for i in 0..4 {
            let resp = app
                .login_raw(&user.email, &format!("wrong {round} {i}"))
                .await;
            expect_code(&resp, "INVALID_CREDENTIALS");
        }
        expect_data(can_log_in(&app, &user.email).await);
    }
    // Five in a row lock it.
    for i in 0..5 {
        expect_code(
            &app.login_raw(&user.email, &format!("wrong {i}")).await,
            "INVALID_CREDENTIALS",
        );
    }
    expect_code(&can_log_in(&app, &user.email).await, "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_get_no_more_than_five_guesses() {
    let app = TestApp::spawn().await;
    let victim = app.register_random().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = app.client();
        let email = victim.email.clone();
        tasks.push(tokio::spawn(async move {
            error_codes(
                &client
                    .login_raw(&email, &format!("parallel guess {i}"))
                    .await,
            )
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("login task"));
    }
    let guesses = answers
        .iter()
        .filter(|c| c.as_slice() == ["INVALID_CREDENTIALS"])
        .count();
    assert!(
        answers
            .iter()
            .all(|c| c.as_slice() == ["INVALID_CREDENTIALS"] || c.as_slice() == ["RATE_LIMITED"]),
        "{answers:?}"
    );
    assert!(
        guesses <= 5,
        "{guesses} of 20 concurrent wrong passwords were checked; the account lock allows 5: {answers:?}"
    );
    expect_code(&can_log_in(&app, &victim.email).await, "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_failed_logins_from_one_client_lock_that_client_out() {
    let app = TestApp::spawn().await;
    let mut users = Vec::new();
    for _ in 0..9 {
        users.push(app.register_random().await);
    }
    // 30 failures, at most 4 per account: no account is locked.
    let mut failures = 0;
    'outer: for user in &users[..8] {
        for i in 0..4 {
            if failures == 30 {
                break 'outer;
            }
            expect_code(
                &app.login_raw(&user.email, &format!("spray {i}")).await,
                "INVALID_CREDENTIALS",
            );
            failures += 1;
        }
    }
    assert_eq!(failures, 30);
    // The client is out, even with the right password of a fresh account.
    expect_code(&can_log_in(&app, &users[8].email).await, "RATE_LIMITED");
}

// ---------------------------------------------------------------------------
// Forged tokens
// ---------------------------------------------------------------------------

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..chunk.len() + 1 {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn sign(alg: jsonwebtoken::Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_access_tokens_get_nothing_and_change_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let customer = app.register_random().await;
    let target = app.open_account(&customer, "CHECKING", "USD").await;
    let secret = app.jwt_secret();
    let (_, admin_claims) = jwt_parts(&admin.access_token);
    let now = unix_now();
    let with = |changes: &[(&str, Value)], drop: &[&str]| {
        let mut c = admin_claims.clone();
        c["iat"] = json!(now);
        c["exp"] = json!(now + 600);
        for (k, v) in changes {
            c[*k] = v.clone();
        }
        for k in drop {
            c.as_object_mut().expect("claims object").remove(*k);
        }
        c
    };
    let hs256 = jsonwebtoken::Algorithm::HS256;

    // Control: the harness signs exactly what the server accepts.
    let genuine = sign(hs256, &secret, &with(&[], &[]));
    assert_eq!(
        expect_data(app.me_raw(Some(&genuine)).await)["me"]["role"],
        "ADMIN",
        "the control token must work, or the forgeries below prove nothing"
    );

    let parts: Vec<&str> = customer.access_token.split('.').collect();
    let (_, customer_claims) = jwt_parts(&customer.access_token);
    let mut promoted = customer_claims.clone();
    promoted["role"] = json!("ADMIN");
    let mut impersonating = customer_claims.clone();
    impersonating["role"] = json!("ADMIN");
    impersonating["sub"] = admin_claims["sub"].clone();

    let forgeries: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64url(br#"{"alg":"none","typ":"JWT"}"#),
                b64url(with(&[], &[]).to_string().as_bytes())
            ),
        ),
        (
            "wrong key",
            sign(hs256, &format!("{secret}-not-it"), &with(&[], &[])),
        ),
        (
            "HS512 with the right key",
            sign(jsonwebtoken::Algorithm::HS512, &secret, &with(&[], &[])),
        ),
        (
            "expired 60 s ago",
            sign(
                hs256,
                &secret,
                &with(&[("iat", json!(now - 960)), ("exp", json!(now - 60))], &[]),
            ),
        ),
        ("no exp", sign(hs256, &secret, &with(&[], &["exp"]))),
        ("no sub", sign(hs256, &secret, &with(&[], &["sub"]))),
        (
            "wrong iss",
            sign(hs256, &secret, &with(&[("iss", json!("evil"))], &[])),
        ),
        (
            "wrong aud",
            sign(hs256, &secret, &with(&[("aud", json!("other-api"))], &[])),
        ),
        (
            "old token version",
            sign(
                hs256,
                &secret,
                &with(
                    &[("tv", json!(admin_claims["tv"].as_i64().unwrap_or(0) - 1))],
                    &[],
                ),
            ),
        ),
        (
            "customer payload changed to role ADMIN",
            format!(
                "{}.{}.{}",
                parts[0],
                b64url(promoted.to_string().as_bytes()),
                parts[2]
            ),
        ),
        (
            "customer payload changed to the admin's sub",
            format!(
                "{}.{}.{}",
                parts[0],
                b64url(impersonating.to_string().as_bytes()),
                parts[2]
            ),
        ),
        ("not a JWT", "a.b.c".to_string()),
    ];

    let audit_before = expect_data(
        app.gql(
            admin.token(),
            "{ auditLog(first: 1) { totalCount } }",
            json!({}),
        )
        .await,
    )["auditLog"]["totalCount"]
        .clone();
    for (what, token) in &forgeries {
        expect_code(&app.me_raw(Some(token)).await, "UNAUTHENTICATED");
        let resp = app
            .gql(
                Some(token),
                "mutation F($id: ID!) { freezeAccount(id: $id, reason: \"forged\") { status } }",
                json!({ "id": target.id }),
            )
            .await;
        let codes = error_codes(&resp);
        assert!(
            codes == ["UNAUTHENTICATED"] || codes == ["FORBIDDEN"],
            "{what}: freezeAccount answered {codes:?}: {resp}"
        );
        let resp = app
            .gql(
                Some(token),
                "{ allAccounts(first: 5) { totalCount } }",
                json!({}),
            )
            .await;
        let codes = error_codes(&resp);
        assert!(
            codes == ["UNAUTHENTICATED"] || codes == ["FORBIDDEN"],
            "{what}: allAccounts answered {codes:?}: {resp}"
        );
    }
    assert_eq!(app.account(&customer, &target.id).await["status"], "ACTIVE");
    let audit_after = expect_data(
        app.gql(
            admin.token(),
            "{ auditLog(first: 1) { totalCount } }",
            json!({}),
        )
        .await,
    )["auditLog"]["totalCount"]
        .clone();
    assert_eq!(
        audit_before, audit_after,
        "a forged token left an audit entry"
    );
}

// ---------------------------------------------------------------------------
// Request shapes a browser can send cross-site
// ---------------------------------------------------------------------------

fn register_body(email: &str) -> Value {
    json!({
        "query": "mutation R($e: String!, $p: String!) { register(input: {email: $e, password: $p, fullName: \"Csrf\"}) { accessToken } }",
        "variables": { "e": email, "p": PASSWORD },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_bodies_are_unsupported_media_type_and_not_executed() {
    let app = TestApp::spawn().await;
    let email = random_email();
    let json_text = register_body(&email).to_string();
    let query = register_body(&email)["query"].as_str().unwrap().to_string();
    let form = format!(
        "query={}",
        query
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>()
    );
    for (content_type, body) in [
        ("text/plain", json_text.clone()),
        ("text/plain;charset=UTF-8", json_text.clone()),
        ("application/x-www-form-urlencoded", form.clone()),
        (
            "multipart/form-data; boundary=xyz",
            format!(
                "--xyz\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{json_text}\r\n--xyz--\r\n"
            ),
        ),
    ] {
        let (status, resp) = post(&app, content_type, body, None, &[]).await;
        assert_eq!(status, 415, "{content_type}: {resp}");
        expect_code(&resp, "BAD_USER_INPUT");
    }
    // None of them registered the email.
    expect_data(app.register_raw(&email, PASSWORD, "Real").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_sent_with_get_is_not_executed() {
    let app = TestApp::spawn().await;
    let email = random_email();
    let body = register_body(&email);
    let query = body["query"].as_str().unwrap();
    let variables = body["variables"].to_string();
    let mut url = reqwest::Url::parse(&app.url("/graphql")).unwrap();
    url.query_pairs_mut()
        .append_pair("query", query)
        .append_pair("variables", &variables);
    for accept in [
        Some("application/json"),
        Some("*/*"),
        Some("application/graphql-response+json"),
        None,
    ] {
        let mut request = app.http.get(url.clone());
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        let response = request.send().await.expect("GET /graphql");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 405, "Accept {accept:?}: {text:.300}");
        let value: Value = serde_json::from_str(&text).expect("a JSON error body");
        expect_code(&check_response(value), "BAD_USER_INPUT");
    }
    // A browser asking for HTML gets the playground, not an execution.
    let response = app
        .http
        .get(url.clone())
        .header("Accept", "text/html")
        .send()
        .await
        .expect("GET /graphql as a browser");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    // The email is still free.
    expect_data(app.register_raw(&email, PASSWORD, "Real").await);
}

// ---------------------------------------------------------------------------
// Request floods
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_viewer_request_limit_answers_429_after_twenty_a_minute() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_PER_MINUTE", "20")
        .spawn()
        .await;
    // Three anonymous requests from this client.
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;

    let me = json!({ "query": "{ me { id } }" });
    for i in 1..=20 {
        let (status, resp) = post_json(&app, alice.token(), &me).await;
        assert_eq!(status, 200, "request {i} of 20: {resp}");
        expect_data(resp);
    }
    for i in 21..=23 {
        let (status, resp) = post_json(&app, alice.token(), &me).await;
        assert_eq!(status, 429, "request {i}: {resp}");
        expect_code(&resp, "RATE_LIMITED");
    }
    // A limited request does not run.
    let open = json!({ "query": "mutation { openAccount(input: {kind: CHECKING, currency: \"USD\"}) { id } }" });
    let (status, resp) = post_json(&app, alice.token(), &open).await;
    assert_eq!(status, 429, "{resp}");
    expect_code(&resp, "RATE_LIMITED");
    let (status, resp) = post_json(
        &app,
        admin.token(),
        &json!({
            "query": "query($s: String) { users(search: $s) { edges { node { id accounts { totalCount } } } } }",
            "variables": { "s": alice.email },
        }),
    )
    .await;
    assert_eq!(status, 200, "the admin has a budget of their own: {resp}");
    let data = expect_data(resp);
    assert_eq!(
        data["users"]["edges"][0]["node"]["accounts"]["totalCount"], 0,
        "the limited openAccount ran: {data}"
    );

    // The limit is per viewer: Bob is unaffected.
    let (status, resp) = post_json(&app, bob.token(), &me).await;
    assert_eq!(status, 200, "{resp}");

    // Anonymous requests count per client address: three are spent.
    let mut statuses = Vec::new();
    for _ in 0..22 {
        let (status, resp) = post_json(&app, None, &json!({ "query": "{ __typename }" })).await;
        if status == 429 {
            expect_code(&resp, "RATE_LIMITED");
        }
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 17, "anonymous answers: {statuses:?}");
    assert!(statuses[17..].iter().all(|s| *s == 429), "{statuses:?}");
}

// ---------------------------------------------------------------------------
// The WebSocket carries queries and mutations too
// ---------------------------------------------------------------------------

/// The final answer of a one-shot operation sent over the WebSocket:
/// the `next`/`data` payload, or the errors of an `error` message.
async fn ws_result(ws: &mut Ws, id: &str) -> Value {
    let m = ws.next_for(id, Duration::from_secs(120)).await;
    match m["type"].as_str() {
        Some("next" | "data") => m["payload"].clone(),
        Some("error") => json!({ "errors": m["payload"].clone() }),
        Some("complete") => json!({ "errors": [{ "message": "completed without a result" }] }),
        _ => panic!("unexpected message {m}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alias_cap_also_holds_for_documents_sent_over_the_websocket() {
    let app = TestApp::spawn().await;
    let victim = app.register_random().await;
    let attacker = app.register_random().await;
    let mut ws = Ws::connect(&app.addr, &attacker.access_token).await;
    let aliases: String = (0..1000)
        .map(|i| format!("a{i}:login(input:$i){{accessToken}}"))
        .collect::<Vec<_>>()
        .join(" ");
    ws.subscribe(
        "guess",
        &format!("mutation M($i:LoginInput!){{{aliases}}}"),
        json!({ "i": { "email": victim.email, "password": "wrong password guess" } }),
    )
    .await;
    let result = ws_result(&mut ws, "guess").await;
    let logged_in = result["data"]
        .as_object()
        .is_some_and(|d| d.values().any(|v| !v.is_null()));
    assert!(!logged_in, "{result:.300}");
    assert!(
        result["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "the document must be refused: {result:.300}"
    );
    // Refused, not executed: the victim can still sign in.
    let resp = can_log_in(&app, &victim.email).await;
    assert!(
        error_codes(&resp).is_empty(),
        "1,000 aliased logins sent over /graphql/ws ran (the account is now locked): {resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_over_the_websocket_count_toward_the_client_limit() {
    let app = TestApp::spawn().await;
    let mut users = Vec::new();
    for _ in 0..9 {
        users.push(app.register_random().await);
    }
    let mut ws = Ws::connect(&app.addr, &users[8].access_token).await;
    // 32 wrong passwords, 4 per account, in documents of 16 aliases.
    for (n, group) in users[..8].chunks(4).enumerate() {
        let mut fields = Vec::new();
        let mut variables = serde_json::Map::new();
        for (u, user) in group.iter().enumerate() {
            variables.insert(format!("e{u}"), json!(user.email));
            for i in 0..4 {
                fields.push(format!(
                    "a{u}x{i}: login(input: {{email: $e{u}, password: \"spray {i}\"}}) {{ accessToken }}"
                ));
            }
        }
        let defs: Vec<String> = (0..group.len())
            .map(|u| format!("$e{u}: String!"))
            .collect();
        let doc = format!("mutation M({}) {{ {} }}", defs.join(", "), fields.join(" "));
        let id = format!("spray-{n}");
        ws.subscribe(&id, &doc, Value::Object(variables)).await;
        let result = ws_result(&mut ws, &id).await;
        assert!(
            result["data"]
                .as_object()
                .is_none_or(|d| d.values().all(Value::is_null)),
            "a wrong password got in: {result}"
        );
    }
    // Over HTTP, 30 failures from one client lock the client out; the
    // WebSocket is the same client.
    expect_code(&can_log_in(&app, &users[8].email).await, "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_limit_also_counts_operations_sent_over_the_websocket() {
    let app = TestApp::builder()
        .env("RATE_LIMIT_PER_MINUTE", "20")
        .spawn()
        .await;
    let user = app.register_random().await;
    let mut ws = Ws::connect(&app.addr, &user.access_token).await;
    let mut answered = 0;
    for i in 0..30 {
        let id = format!("q{i}");
        ws.subscribe(&id, "{ me { id } }", json!({})).await;
        let result = ws_result(&mut ws, &id).await;
        if result["data"]["me"]["id"] == user.user_id.as_str() {
            answered += 1;
        }
    }
    assert!(
        answered <= 20,
        "{answered} of 30 queries sent over /graphql/ws within a minute were answered; \
         RATE_LIMIT_PER_MINUTE is 20"
    );
}

// ---------------------------------------------------------------------------
// Production switches
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_introspection_off_neither_the_schema_nor_suggestions_are_disclosed() {
    let app = TestApp::builder()
        .env("GRAPHQL_INTROSPECTION", "off")
        .spawn()
        .await;
    let user = app.register_random().await;
    let admin = app.admin().await;
    for token in [None, user.token(), admin.token()] {
        for query in [
            "{ __schema { types { name } } }",
            "{ __schema { queryType { fields { name } } } }",
            "{ __type(name: \"Account\") { name fields { name } } }",
        ] {
            let resp = app.gql(token, query, json!({})).await;
            let text = resp["data"].to_string();
            assert!(
                !text.contains("Account") && !text.contains("fields"),
                "{query}: {resp}"
            );
        }
    }
    for query in [
        "{ mee { id } }",
        "{ me { emial } }",
        "{ acounts { totalCount } }",
    ] {
        let resp = app.gql(user.token(), query, json!({})).await;
        expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
        let text = resp.to_string();
        assert!(!text.contains("Did you mean"), "{query}: {resp}");
        assert!(
            !text.contains("\\\"email\\\"") && !text.contains("\\\"accounts\\\""),
            "{resp}"
        );
    }
    // The API itself still works.
    expect_data(app.me_raw(user.token()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_introspection_off_an_introspection_query_is_an_error_not_a_null() {
    let app = TestApp::builder()
        .env("GRAPHQL_INTROSPECTION", "off")
        .spawn()
        .await;
    let admin = app.admin().await;
    // `__schema` is `__Schema!`: answering null without an error breaks the
    // GraphQL type system and looks like an empty success to tools.
    let resp = app
        .gql(admin.token(), "{ __schema { types { name } } }", json!({}))
        .await;
    assert!(
        !error_codes(&resp).is_empty(),
        "an introspection query must fail when introspection is off: {resp}"
    );
    assert!(
        resp["data"].is_null() || resp["data"]["__schema"].is_null(),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_graphiql_off_no_playground_is_served() {
    let app = TestApp::builder().env("GRAPHIQL", "off").spawn().await;
    let root = app.get("/", "text/html").await;
    assert_eq!(root.status(), 404);
    let page = app.get("/graphql", "text/html").await;
    let status = page.status();
    let text = page.text().await.unwrap_or_default();
    assert_ne!(status, 200, "GET /graphql still serves a page: {text:.300}");
    assert!(!text.to_lowercase().contains("graphiql"), "{text:.300}");
    // POST /graphql is unaffected.
    let user = app.register_random().await;
    expect_data(app.me_raw(user.token()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiqls_own_introspection_query_fits_within_the_limits() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    // The query the bundled GraphiQL sends on load (TypeRef nine levels deep).
    let type_ref = (0..9).fold("kind name".to_string(), |inner, _| {
        format!("kind name ofType {{ {inner} }}")
    });
    let query = format!(
        "query IntrospectionQuery {{ __schema {{ queryType {{ name kind }} \
           mutationType {{ name kind }} subscriptionType {{ name kind }} \
           types {{ ...FullType }} directives {{ name description locations \
           args {{ ...InputValue }} }} }} }} \
         fragment FullType on __Type {{ kind name description \
           fields(includeDeprecated: true) {{ name description args {{ ...InputValue }} \
             type {{ ...TypeRef }} isDeprecated deprecationReason }} \
           inputFields {{ ...InputValue }} interfaces {{ ...TypeRef }} \
           enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }} \
           possibleTypes {{ ...TypeRef }} }} \
         fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue }} \
         fragment TypeRef on __Type {{ {type_ref} }}"
    );
    let resp = app.gql(admin.token(), &query, json!({})).await;
    let data = expect_data(resp);
    assert!(
        data["__schema"]["types"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "Account")),
        "{data:.300}"
    );
}

// ---------------------------------------------------------------------------
// Signing out everywhere
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_ends_every_access_and_refresh_token_of_the_user() {
    let app = TestApp::spawn().await;
    let first = app.register_random().await;
    let second = app.login(&first.email, PASSWORD).await;
    let other = app.register_random().await;

    let data = expect_data(
        app.gql(second.token(), "mutation { logoutAll }", json!({}))
            .await,
    );
    assert_eq!(data["logoutAll"], true);

    for s in [&first, &second] {
        expect_code(&app.me_raw(s.token()).await, "UNAUTHENTICATED");
        expect_code(
            &app.gql(s.token(), "{ accounts { totalCount } }", json!({}))
                .await,
            "UNAUTHENTICATED",
        );
        expect_code(&app.refresh_raw(&s.refresh_token).await, "UNAUTHENTICATED");
    }
    // Others are untouched; the user can sign in again.
    expect_data(app.me_raw(other.token()).await);
    expect_data(app.refresh_raw(&other.refresh_token).await);
    let again = app.login(&first.email, PASSWORD).await;
    assert_eq!(
        expect_data(app.me_raw(again.token()).await)["me"]["id"],
        first.user_id.as_str()
    );
    // The WebSocket refuses the dead token too.
    let mut ws = Ws::open(&app.addr, WsProtocol::TransportWs).await;
    ws.init(Some(
        json!({ "Authorization": format!("Bearer {}", first.access_token) }),
    ))
    .await;
    let (code, _) = ws.expect_close(Duration::from_secs(30)).await;
    assert_eq!(code, 4403, "connection_init with a revoked token");
}
