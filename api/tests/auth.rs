//! Registration, login, tokens and email verification (contract §4, §5, §6).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

fn random_email() -> String {
    format!("u-{}@example.test", Uuid::new_v4().simple())
}

fn base64url_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn me(app: &TestApp, token: &str) -> Value {
    expect_data(app.me_raw(Some(token)).await)["me"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_returns_tokens_and_a_customer_user() {
    let app = TestApp::spawn().await;
    let email = random_email();
    let data = expect_data(app.register_raw(&email, PASSWORD, "Ada Lovelace").await);
    let payload = &data["register"];
    assert!(
        payload["accessToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        payload["refreshToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(payload["user"]["email"], email);
    assert_eq!(payload["user"]["fullName"], "Ada Lovelace");
    assert_eq!(payload["user"]["role"], "CUSTOMER");

    let me = me(&app, payload["accessToken"].as_str().unwrap()).await;
    assert_eq!(me["id"], payload["user"]["id"]);
    assert_eq!(me["role"], "CUSTOMER");
    assert!(me["createdAt"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_taken_email_fails_with_email_taken_whatever_its_case() {
    let app = TestApp::spawn().await;
    let local = format!("dup-{}", Uuid::new_v4().simple());
    app.register(&format!("{local}@example.test"), PASSWORD, "First")
        .await;

    let again = app
        .register_raw(&format!("{local}@example.test"), PASSWORD, "Second")
        .await;
    expect_code(&again, "EMAIL_TAKEN");

    let shouted = app
        .register_raw(
            &format!("{}@EXAMPLE.TEST", local.to_uppercase()),
            PASSWORD,
            "Third",
        )
        .await;
    expect_code(&shouted, "EMAIL_TAKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_under_ten_characters_is_rejected() {
    let app = TestApp::spawn().await;
    let resp = app
        .register_raw(&random_email(), "123456789", "Short")
        .await;
    expect_code(&resp, "BAD_USER_INPUT");
    // Exactly ten characters is the minimum that works.
    expect_data(app.register_raw(&random_email(), "1234567890", "Ten").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_email_is_rejected() {
    let app = TestApp::spawn().await;
    for email in [
        "not-an-email",
        "",
        "missing-at.example.test",
        "two@@example.test",
    ] {
        let resp = app.register_raw(email, PASSWORD, "Nobody").await;
        expect_code(&resp, "BAD_USER_INPUT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_works_and_its_failures_do_not_tell_whether_the_email_exists() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;

    let session = app.login(&user.email, PASSWORD).await;
    assert_eq!(session.user_id, user.user_id);
    assert_eq!(me(&app, &session.access_token).await["id"], user.user_id);

    let wrong_password = app.login_raw(&user.email, "wrong password!").await;
    expect_code(&wrong_password, "INVALID_CREDENTIALS");
    let unknown_email = app.login_raw(&random_email(), "wrong password!").await;
    expect_code(&unknown_email, "INVALID_CREDENTIALS");
    assert_eq!(
        wrong_password["errors"][0]["message"], unknown_email["errors"][0]["message"],
        "login failures must not tell whether the email exists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_without_a_valid_token_is_unauthenticated() {
    let app = TestApp::spawn().await;
    expect_code(&app.me_raw(None).await, "UNAUTHENTICATED");
    expect_code(&app.me_raw(Some("garbage")).await, "UNAUTHENTICATED");
    expect_code(
        &app.me_raw(Some("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"))
            .await,
        "UNAUTHENTICATED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_access_tokens_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let parts: Vec<&str> = user.access_token.split('.').collect();
    assert_eq!(parts.len(), 3, "access token is a JWT");
    let (_, claims) = jwt_parts(&user.access_token);

    // The algorithm is pinned: an unsigned token with the same claims fails.
    let none_header = base64url_encode(br#"{"alg":"none","typ":"JWT"}"#);
    let none_token = format!("{none_header}.{}.", parts[1]);
    expect_code(&app.me_raw(Some(&none_token)).await, "UNAUTHENTICATED");

    // Changed claims under the original signature fail.
    let mut tampered = claims.clone();
    tampered["exp"] = json!(claims["exp"].as_i64().unwrap_or(0) + 3600);
    let tampered_token = format!(
        "{}.{}.{}",
        parts[0],
        base64url_encode(tampered.to_string().as_bytes()),
        parts[2]
    );
    expect_code(&app.me_raw(Some(&tampered_token)).await, "UNAUTHENTICATED");

    // The untouched token still works.
    assert_eq!(me(&app, &user.access_token).await["id"], user.user_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_rotates_and_the_old_one_stops_working() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;

    let first = expect_data(app.refresh_raw(&user.refresh_token).await)["refreshToken"].clone();
    let first_refresh = first["refreshToken"].as_str().unwrap().to_string();
    assert_ne!(
        first_refresh, user.refresh_token,
        "refresh must rotate the token"
    );
    assert_eq!(first["user"]["id"], user.user_id);
    let access = first["accessToken"].as_str().unwrap();
    assert_eq!(me(&app, access).await["id"], user.user_id);

    // The new refresh token works in turn.
    let second = expect_data(app.refresh_raw(&first_refresh).await)["refreshToken"].clone();
    assert_ne!(second["refreshToken"], first["refreshToken"]);

    // The original one is spent.
    expect_code(
        &app.refresh_raw(&user.refresh_token).await,
        "UNAUTHENTICATED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_rotated_refresh_token_revokes_the_newer_one_too() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;

    let rotated = expect_data(app.refresh_raw(&user.refresh_token).await);
    let newer = rotated["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();

    // Replaying the old token looks like theft: it fails, and the whole
    // family (the newer token included) is revoked.
    expect_code(
        &app.refresh_raw(&user.refresh_token).await,
        "UNAUTHENTICATED",
    );
    expect_code(&app.refresh_raw(&newer).await, "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_refresh_token() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let resp = app
        .gql(
            user.token(),
            "mutation O($t: String!) { logout(refreshToken: $t) }",
            json!({ "t": user.refresh_token }),
        )
        .await;
    assert_eq!(expect_data(resp)["logout"], true);
    expect_code(
        &app.refresh_raw(&user.refresh_token).await,
        "UNAUTHENTICATED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_admin_logs_in_as_a_verified_admin() {
    let app = TestApp::spawn().await;
    let data = expect_data(app.login_raw(ADMIN_EMAIL, ADMIN_PASSWORD).await);
    assert_eq!(data["login"]["user"]["role"], "ADMIN");
    assert_eq!(data["login"]["user"]["emailVerified"], true);
    let me = me(&app, data["login"]["accessToken"].as_str().unwrap()).await;
    assert_eq!(me["role"], "ADMIN");
    assert_eq!(me["email"], ADMIN_EMAIL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_are_forbidden_from_admin_operations() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    for query in [
        "{ users(first: 5) { totalCount } }",
        "{ allAccounts(first: 5) { totalCount } }",
        "{ allTransfers(first: 5) { totalCount } }",
        "{ auditLog(first: 5) { totalCount } }",
        "{ trialBalance { currency net } }",
    ] {
        let resp = app.gql(user.token(), query, json!({})).await;
        expect_code(&resp, "FORBIDDEN");
    }
    let resp = app
        .gql(
            user.token(),
            "mutation S($u: ID!) { setUserRole(userId: $u, role: ADMIN) { role } }",
            json!({ "u": user.user_id }),
        )
        .await;
    expect_code(&resp, "FORBIDDEN");
    let me = me(&app, &user.access_token).await;
    assert_eq!(me["role"], "CUSTOMER");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_is_an_hs256_jwt_valid_at_most_fifteen_minutes() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let (header, claims) = jwt_parts(&user.access_token);
    assert_eq!(header["alg"], "HS256", "header: {header}");
    let iat = claims["iat"].as_i64().expect("iat claim");
    let exp = claims["exp"].as_i64().expect("exp claim");
    assert!(exp > iat, "exp {exp} must follow iat {iat}");
    assert!(
        exp - iat <= 900,
        "token lives {} s, more than 15 minutes",
        exp - iat
    );
    let now = chrono::Utc::now().timestamp();
    assert!(exp > now, "a fresh token is not yet expired");
}

/// Extracts the `token=<token>` query parameter from an email body.
fn verification_token(body: &str) -> Option<String> {
    let start = body.find("token=")? + "token=".len();
    let token: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '%'))
        .collect();
    (!token.is_empty()).then_some(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_required_verification_money_leaves_only_after_verify_email() {
    let app = TestApp::builder()
        .email_verification_required()
        .spawn()
        .await;
    let admin = app.admin().await;
    let user = app.register_random().await;
    let other = app.register_random().await;
    assert_eq!(me(&app, &user.access_token).await["emailVerified"], false);

    // Money may come in (funded by an admin deposit here) ...
    let account = app.open_account(&user, "CHECKING", "USD").await;
    let target = app.open_account(&other, "CHECKING", "USD").await;
    let deposit = app.deposit(&admin, &account.id, "100.00", &key()).await;
    let deposit = app
        .wait_transfer_final(
            &admin,
            deposit["id"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(deposit["status"], "COMPLETED");

    // ... but not leave.
    let withdraw = app.withdraw_raw(&user, &account.id, "10.00", &key()).await;
    expect_code(&withdraw, "EMAIL_NOT_VERIFIED");
    let transfer = app
        .transfer_raw(&user, &account.id, &target.number, "10.00", &key())
        .await;
    expect_code(&transfer, "EMAIL_NOT_VERIFIED");
    assert_eq!(
        app.account(&user, &account.id).await["availableBalance"],
        "100.00"
    );

    // The verification email is recorded in the user's notifications.
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let found = app
            .notifications(&user)
            .await
            .iter()
            .filter_map(|n| n["body"].as_str().and_then(verification_token))
            .next();
        if let Some(token) = found {
            break token;
        }
        assert!(
            Instant::now() < deadline,
            "no notification with `token=` within 30 s (logs: {})",
            app.log_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let verified = app
        .gql(
            None,
            "mutation V($t: String!) { verifyEmail(token: $t) { id emailVerified } }",
            json!({ "t": token }),
        )
        .await;
    let verified = expect_data(verified);
    assert_eq!(verified["verifyEmail"]["id"], user.user_id);
    assert_eq!(verified["verifyEmail"]["emailVerified"], true);
    assert_eq!(me(&app, &user.access_token).await["emailVerified"], true);

    let transfer = app
        .transfer(&user, &account.id, &target.number, "10.00", &key())
        .await;
    let done = app
        .wait_transfer_final(
            &user,
            transfer["id"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(app.account(&user, &account.id).await["balance"], "90.00");

    // The token is single-use.
    let again = app
        .gql(
            None,
            "mutation V($t: String!) { verifyEmail(token: $t) { id emailVerified } }",
            json!({ "t": token }),
        )
        .await;
    expect_one_of(&again, &["BAD_USER_INPUT", "NOT_FOUND"]);
}
