//! Email delivery against a real SMTP server (contract §1 `SMTP_URL`,
//! `MAIL_FROM`, `EMAIL_VERIFICATION`; §5 notifications and "a mail server
//! that is down delays emails, never a transfer").
//!
//! Every test starts `tests/smtp_sink.py` (aiosmtpd; stores each message as
//! an `.eml` file) and points `SMTP_URL` of the api and the workers at it.
//! Stopping and restarting the sink on the same port plays a mail server
//! going down and coming back. `EMAIL_RETRY_BASE_SECS=1` keeps the retry
//! schedule short (1 s doubling) unless a test needs the default.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const VERIFY_SUBJECT: &str = "Verify your corebank email address";
const MAIL_FROM: &str = "corebank tests <no-reply@corebank.test>";
/// Upper bound for an email to reach the sink with the mail server up.
const MAIL_WAIT: Duration = Duration::from_secs(30);
/// Upper bound for a transfer to settle ("promptly", whatever the mail server does).
const SETTLE_WAIT: Duration = Duration::from_secs(10);
const NOTIFICATION_FIELDS: &str = "id kind subject body emailStatus createdAt";

/// A deployment whose api and workers send email to `sink`, retrying after
/// 1 s, 2 s, 4 s, ... Tests chain more options before `.spawn()`.
fn with_sink(sink: &SmtpSink) -> TestAppBuilder {
    TestApp::builder()
        .smtp(&sink.addr())
        .env("MAIL_FROM", MAIL_FROM)
        .env("EMAIL_RETRY_BASE_SECS", "1")
}

// -- GraphQL helpers of this file -------------------------------------------

async fn verify_email_raw(app: &TestApp, token: &str) -> Value {
    app.gql(
        None,
        "mutation V($t: String!) { verifyEmail(token: $t) { id email emailVerified } }",
        json!({ "t": token }),
    )
    .await
}

async fn email_verified(app: &TestApp, s: &Session) -> bool {
    let data = expect_data(app.me_raw(s.token()).await);
    data["me"]["emailVerified"]
        .as_bool()
        .unwrap_or_else(|| panic!("me.emailVerified is not a boolean: {data}"))
}

async fn resend_raw(app: &TestApp, s: &Session) -> Value {
    app.gql(s.token(), "mutation { resendVerificationEmail }", json!({}))
        .await
}

async fn failed_notifications_raw(app: &TestApp, token: Option<&str>) -> Value {
    app.gql(
        token,
        &format!(
            "{{ failedNotifications(first: 100) {{ totalCount edges {{ node {{ {NOTIFICATION_FIELDS} }} }} }} }}"
        ),
        json!({}),
    )
    .await
}

/// Admin: the ids of `failedNotifications`.
async fn failed_notification_ids(app: &TestApp, admin: &Session) -> Vec<String> {
    let data = expect_data(failed_notifications_raw(app, admin.token()).await);
    data["failedNotifications"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("failedNotifications.edges is not a list: {data}"))
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("node id").to_string())
        .collect()
}

async fn retry_notification_raw(app: &TestApp, token: Option<&str>, id: &str) -> Value {
    app.gql(
        token,
        &format!(
            "mutation R($id: ID!) {{ retryNotification(id: $id) {{ {NOTIFICATION_FIELDS} }} }}"
        ),
        json!({ "id": id }),
    )
    .await
}

/// Polls the viewer's notifications until one satisfies `pred`; returns it.
async fn wait_notification(
    app: &TestApp,
    s: &Session,
    what: &str,
    pred: impl Fn(&Value) -> bool,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let list = app.notifications(s).await;
        if let Some(n) = list.iter().find(|n| pred(n)) {
            return n.clone();
        }
        if Instant::now() > deadline {
            panic!(
                "no notification of {} that is {what} within {timeout:?}: {list:#?} (logs: {})",
                s.email,
                app.log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until every notification of `s` with a kind in `kinds` has
/// `emailStatus` `status` and there are at least `min` of them.
async fn wait_all_status(
    app: &TestApp,
    s: &Session,
    kinds: &[&str],
    min: usize,
    status: &str,
    timeout: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let list: Vec<Value> = app
            .notifications(s)
            .await
            .into_iter()
            .filter(|n| kinds.iter().any(|k| n["kind"] == *k))
            .collect();
        if list.len() >= min && list.iter().all(|n| n["emailStatus"] == status) {
            return list;
        }
        if Instant::now() > deadline {
            panic!(
                "notifications {kinds:?} of {} not all {status} (at least {min}) within {timeout:?}: \
                 {list:#?} (logs: {})",
                s.email,
                app.log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The verification email of `s` (the first one), waited for.
async fn verification_mail(sink: &SmtpSink, s: &Session) -> ParsedMail {
    let email = s.email.clone();
    sink.wait_for_message(
        move |m| m.is_to(&email) && m.subject == VERIFY_SUBJECT,
        MAIL_WAIT,
    )
    .await
}

/// Verifies `s` with the token of its verification email.
async fn verify_from_mail(app: &TestApp, sink: &SmtpSink, s: &Session) {
    let mail = verification_mail(sink, s).await;
    let token = mail.token().unwrap_or_else(|| {
        panic!(
            "no token=<64 hex> in the verification email: {:?}",
            mail.text
        )
    });
    let data = expect_data(verify_email_raw(app, &token).await);
    assert_eq!(data["verifyEmail"]["emailVerified"], true, "{data}");
}

fn count(messages: &[ParsedMail], to: &str, subject: &str) -> usize {
    messages
        .iter()
        .filter(|m| m.is_to(to) && m.subject == subject)
        .count()
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

// -- tests --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registration_email_arrives_with_a_token_that_verifies_the_address() {
    let sink = SmtpSink::start().await;
    let app = with_sink(&sink).spawn().await;
    let alice = app.register_random().await;
    assert!(
        !email_verified(&app, &alice).await,
        "a new user is not verified"
    );

    let mail = verification_mail(&sink, &alice).await;
    assert_eq!(
        mail.content_type, "multipart/alternative",
        "plain text + HTML: {mail:?}"
    );
    assert!(mail.html.is_some(), "the email has an HTML part: {mail:?}");
    assert!(
        mail.from.contains("no-reply@corebank.test"),
        "MAIL_FROM sets the sender: {:?}",
        mail.from
    );
    let token = mail
        .token()
        .unwrap_or_else(|| panic!("no token=<64 hex> in the text part: {:?}", mail.text));
    assert!(
        mail.text.contains(&format!("/verify-email?token={token}")),
        "the text carries a verification link: {:?}",
        mail.text
    );

    let data = expect_data(verify_email_raw(&app, &token).await);
    assert_eq!(data["verifyEmail"]["emailVerified"], true, "{data}");
    assert_eq!(data["verifyEmail"]["id"], alice.user_id.as_str(), "{data}");
    assert!(email_verified(&app, &alice).await);

    // The token is single-use.
    expect_code(&verify_email_raw(&app, &token).await, "BAD_USER_INPUT");

    let n = wait_notification(
        &app,
        &alice,
        "an EMAIL_VERIFICATION marked SENT",
        |n| n["kind"] == "EMAIL_VERIFICATION" && n["emailStatus"] == "SENT",
        MAIL_WAIT,
    )
    .await;
    assert_eq!(n["subject"], VERIFY_SUBJECT, "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_in_the_verification_email_verifies_the_address_in_a_browser() {
    let sink = SmtpSink::start().await;
    let app = with_sink(&sink).spawn().await;
    let bob = app.register_random().await;
    let mail = verification_mail(&sink, &bob).await;
    let link = mail
        .text
        .split_whitespace()
        .find(|w| w.starts_with("http") && w.contains("/verify-email?token="))
        .unwrap_or_else(|| panic!("no verification link in {:?}", mail.text))
        .to_string();
    assert!(
        link.starts_with(&app.base_url),
        "PUBLIC_URL defaults to http://BIND_ADDR: {link}"
    );
    let response = app
        .http
        .get(&link)
        .header("Accept", "text/html")
        .send()
        .await
        .expect("GET the verification link");
    assert_eq!(response.status(), 200, "GET {link}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        email_verified(&app, &bob).await,
        "the link verified the address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_verification_required_by_default_money_moves_only_after_the_emailed_token_is_used() {
    let sink = SmtpSink::start().await;
    // An empty EMAIL_VERIFICATION is "unset": the default applies, which is
    // `required` when SMTP_URL is set.
    let app = with_sink(&sink).env("EMAIL_VERIFICATION", "").spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    // Deposits are not gated (contract §5 names withdraw, transfer, payBill).
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    expect_code(
        &app.transfer_raw(&alice, &a.id, &b.number, "30.00", &key())
            .await,
        "EMAIL_NOT_VERIFIED",
    );
    expect_code(
        &app.withdraw_raw(&alice, &a.id, "20.00", &key()).await,
        "EMAIL_NOT_VERIFIED",
    );
    let account = app.account(&alice, &a.id).await;
    assert_eq!(
        account["availableBalance"], "100.00",
        "nothing held: {account}"
    );

    verify_from_mail(&app, &sink, &alice).await;
    assert!(email_verified(&app, &alice).await);

    let t = app
        .transfer(&alice, &a.id, &b.number, "30.00", &key())
        .await;
    let t = app
        .wait_transfer_final(&alice, &id_of(&t), SETTLE_WAIT)
        .await;
    assert_eq!(t["status"], "COMPLETED", "{t}");
    let w = app.withdraw(&alice, &a.id, "20.00", &key()).await;
    let w = app
        .wait_transfer_final(&alice, &id_of(&w), SETTLE_WAIT)
        .await;
    assert_eq!(w["status"], "COMPLETED", "{w}");
    assert_eq!(app.account(&alice, &a.id).await["balance"], "50.00");
    assert_eq!(app.account(&bob, &b.id).await["balance"], "30.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_transfer_emails_each_party_exactly_once() {
    let sink = SmtpSink::start().await;
    let app = with_sink(&sink).spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    let t = app
        .transfer(&alice, &a.id, &b.number, "25.00", &key())
        .await;
    let id = id_of(&t);
    let t = app.wait_transfer_final(&alice, &id, SETTLE_WAIT).await;
    assert_eq!(t["status"], "COMPLETED", "{t}");

    let sent = "You sent 25.00 USD";
    let received = "You received 25.00 USD";
    sink.wait_for(
        |ms| count(ms, &alice.email, sent) >= 1 && count(ms, &bob.email, received) >= 1,
        MAIL_WAIT,
    )
    .await;
    // Room for a duplicate to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let messages = sink.messages();
    assert_eq!(
        count(&messages, &alice.email, sent),
        1,
        "{}",
        sink.summary()
    );
    assert_eq!(
        count(&messages, &bob.email, received),
        1,
        "{}",
        sink.summary()
    );
    for m in messages
        .iter()
        .filter(|m| m.subject == sent || m.subject == received)
    {
        assert!(
            m.text.contains(&id),
            "the email names the transfer {id}: {:?}",
            m.text
        );
    }
    // Nothing else: alice got verification + deposit + sent, bob
    // verification + received.
    assert_eq!(
        sink.messages_to(&alice.email).len(),
        3,
        "{}",
        sink.summary()
    );
    assert_eq!(sink.messages_to(&bob.email).len(), 2, "{}", sink.summary());
    assert_eq!(
        count(&messages, &alice.email, "Deposit of 100.00 USD received"),
        1,
        "{}",
        sink.summary()
    );

    let n = wait_all_status(
        &app,
        &alice,
        &["TRANSFER_SENT", "DEPOSIT_RECEIVED"],
        2,
        "SENT",
        MAIL_WAIT,
    )
    .await;
    assert!(n.iter().any(|n| n["subject"] == sent), "{n:#?}");
    let n = wait_all_status(&app, &bob, &["TRANSFER_RECEIVED"], 1, "SENT", MAIL_WAIT).await;
    assert_eq!(n.len(), 1, "{n:#?}");
    assert_eq!(n[0]["subject"], received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_complete_while_the_mail_server_is_down_and_their_emails_follow_when_it_is_back()
{
    let mut sink = SmtpSink::start().await;
    let app = with_sink(&sink).spawn().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;
    // Everything so far is delivered: 2 verifications and 1 deposit.
    sink.wait_for(|ms| ms.len() >= 3, MAIL_WAIT).await;

    sink.stop().await;
    let amounts = ["1.00", "2.00", "3.00"];
    let mut ids = Vec::new();
    for amount in amounts {
        let t = app.transfer(&alice, &a.id, &b.number, amount, &key()).await;
        let t = app
            .wait_transfer_final(&alice, &id_of(&t), SETTLE_WAIT)
            .await;
        assert_eq!(
            t["status"], "COMPLETED",
            "a down mail server never delays a transfer: {t}"
        );
        ids.push(id_of(&t));
    }
    assert_eq!(app.account(&bob, &b.id).await["balance"], "6.00");

    // The emails wait in the outbox: QUEUED, not SENT, and not given up.
    // Recorded with the settlement, so already there.
    let list = app.notifications(&alice).await;
    let transfer_notes: Vec<&Value> = list
        .iter()
        .filter(|n| n["kind"] == "TRANSFER_SENT")
        .collect();
    assert_eq!(transfer_notes.len(), 3, "{list:#?}");
    for n in &transfer_notes {
        assert_eq!(n["emailStatus"], "QUEUED", "mail server down: {n}");
    }
    for n in app
        .notifications(&bob)
        .await
        .iter()
        .filter(|n| n["kind"] == "TRANSFER_RECEIVED")
    {
        assert_eq!(n["emailStatus"], "QUEUED", "mail server down: {n}");
    }
    // The worker did try (and failed) before the server came back.
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let rows = app
            .sql(
                "SELECT COUNT(*)::bigint AS n FROM notifications \
                 WHERE kind IN ('TRANSFER_SENT', 'TRANSFER_RECEIVED') AND email_attempts >= 1",
            )
            .await;
        let tried: i64 = rows[0].try_get("", "n").unwrap();
        if tried == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {tried} of 6 transfer emails were attempted within {MAIL_WAIT:?} (logs: {})",
            app.log_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        sink.messages().len(),
        3,
        "nothing got through: {}",
        sink.summary()
    );

    sink.start_again().await;
    let expected = |ms: &[ParsedMail]| {
        amounts.iter().all(|amt| {
            count(ms, &alice.email, &format!("You sent {amt} USD")) >= 1
                && count(ms, &bob.email, &format!("You received {amt} USD")) >= 1
        })
    };
    sink.wait_for(expected, Duration::from_secs(45)).await;
    wait_all_status(&app, &alice, &["TRANSFER_SENT"], 3, "SENT", MAIL_WAIT).await;
    wait_all_status(&app, &bob, &["TRANSFER_RECEIVED"], 3, "SENT", MAIL_WAIT).await;
    let messages = sink.messages();
    for amt in amounts {
        assert_eq!(
            count(&messages, &alice.email, &format!("You sent {amt} USD")),
            1,
            "{}",
            sink.summary()
        );
        assert_eq!(
            count(&messages, &bob.email, &format!("You received {amt} USD")),
            1,
            "{}",
            sink.summary()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_out_of_attempts_is_dead_lettered_and_an_admin_retry_delivers_it() {
    let mut sink = SmtpSink::start().await;
    let app = with_sink(&sink)
        .env("EMAIL_MAX_ATTEMPTS", "2")
        .spawn()
        .await;
    let admin = app.admin().await;

    sink.stop().await;
    let carol = app.register_random().await;
    let dead = wait_notification(
        &app,
        &carol,
        "an EMAIL_VERIFICATION marked FAILED",
        |n| n["kind"] == "EMAIL_VERIFICATION" && n["emailStatus"] == "FAILED",
        Duration::from_secs(45),
    )
    .await;
    let id = id_of(&dead);
    assert!(
        failed_notification_ids(&app, &admin).await.contains(&id),
        "the dead letter is listed in failedNotifications"
    );

    // Customers may neither list nor retry dead letters.
    expect_code(
        &failed_notifications_raw(&app, carol.token()).await,
        "FORBIDDEN",
    );
    expect_code(
        &retry_notification_raw(&app, carol.token(), &id).await,
        "FORBIDDEN",
    );

    sink.start_again().await;
    // Nothing retries a dead letter by itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sink.messages_to(&carol.email).len(),
        0,
        "{}",
        sink.summary()
    );

    let data = expect_data(retry_notification_raw(&app, admin.token(), &id).await);
    assert_eq!(data["retryNotification"]["id"], id.as_str(), "{data}");
    assert_eq!(data["retryNotification"]["emailStatus"], "QUEUED", "{data}");

    let mail = verification_mail(&sink, &carol).await;
    wait_notification(
        &app,
        &carol,
        "the retried EMAIL_VERIFICATION marked SENT",
        |n| n["id"] == id.as_str() && n["emailStatus"] == "SENT",
        MAIL_WAIT,
    )
    .await;
    assert!(
        !failed_notification_ids(&app, &admin).await.contains(&id),
        "a delivered notification leaves failedNotifications"
    );
    // The retried email is the original one: its token still verifies.
    let token = mail.token().expect("token in the retried email");
    let data = expect_data(verify_email_raw(&app, &token).await);
    assert_eq!(data["verifyEmail"]["emailVerified"], true, "{data}");

    // Audited.
    let data = expect_data(
        app.gql(
            admin.token(),
            "{ auditLog(first: 100) { edges { node { action targetId actor { id email } } } } }",
            json!({}),
        )
        .await,
    );
    let entries = data["auditLog"]["edges"].as_array().expect("edges");
    assert!(
        entries.iter().any(|e| {
            e["node"]["action"] == "RETRY_NOTIFICATION"
                && e["node"]["targetId"] == id.as_str()
                && e["node"]["actor"]["email"] == ADMIN_EMAIL
        }),
        "no RETRY_NOTIFICATION audit entry for {id}: {data:#}"
    );

    // Only a FAILED notification can be retried.
    let again = retry_notification_raw(&app, admin.token(), &id).await;
    expect_code(&again, "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_the_mail_server_rejects_is_dead_lettered_without_waiting_for_retries() {
    let sink = SmtpSink::start_with(&["reject-"]).await;
    // Default retry schedule (30 s, 14 attempts): only a permanent failure
    // can dead-letter within the time allowed below.
    let app = TestApp::builder()
        .smtp(&sink.addr())
        .env("MAIL_FROM", MAIL_FROM)
        .spawn()
        .await;
    let admin = app.admin().await;
    let rejected = app
        .register(
            &format!("reject-{}@example.test", uuid::Uuid::new_v4().simple()),
            PASSWORD,
            "Rejected Holder",
        )
        .await;
    let fine = app.register_random().await;

    let dead = wait_notification(
        &app,
        &rejected,
        "an EMAIL_VERIFICATION marked FAILED",
        |n| n["kind"] == "EMAIL_VERIFICATION" && n["emailStatus"] == "FAILED",
        Duration::from_secs(15),
    )
    .await;
    assert!(
        failed_notification_ids(&app, &admin)
            .await
            .contains(&id_of(&dead))
    );
    verification_mail(&sink, &fine).await;
    assert_eq!(
        sink.messages_to(&rejected.email).len(),
        0,
        "{}",
        sink.summary()
    );
    let attempts = app
        .sql(&format!(
            "SELECT email_attempts FROM notifications WHERE id::text = '{}'",
            id_of(&dead)
        ))
        .await;
    let attempts: i32 = attempts[0].try_get("", "email_attempts").unwrap();
    assert_eq!(attempts, 1, "a 5xx rejection is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settlements_rerun_by_killed_workers_send_one_email_per_party_per_transfer() {
    let mut sink = SmtpSink::start().await;
    let mut app = with_sink(&sink).workers(2).spawn().await;
    let admin = app.admin().await;

    // Four customers with one funded account each.
    let mut holders = Vec::new();
    for _ in 0..4 {
        let s = app.register_random().await;
        let acc = app.funded_account(&s, "USD", "1000.00").await;
        holders.push((s, acc));
    }
    // 4 verifications + 4 deposits delivered before the churn.
    sink.wait_for(|ms| ms.len() >= 8, MAIL_WAIT).await;

    // The mail server is down during the churn, so that no email is
    // in flight when a worker is killed: SMTP itself is at-least-once (a
    // worker killed between the server's 250 and recording SENT sends
    // again); what this test checks is that a settlement run twice does not
    // create a second notification, hence a second email.
    sink.stop().await;
    let baseline = app.count_transfers(&admin, Some("COMPLETED")).await;
    let holders = Arc::new(holders);
    let client = app.client();
    let firing = {
        let holders = holders.clone();
        tokio::spawn(async move {
            let mut handles = Vec::new();
            for task in 0..4usize {
                let (client, holders) = (client.clone(), holders.clone());
                handles.push(tokio::spawn(async move {
                    let mut fired = Vec::new();
                    for j in 0..5usize {
                        let n = task * 5 + j;
                        let from = n % 4;
                        let to = (from + 1 + (n / 4) % 3) % 4;
                        let amount = fmt_minor(100 + n as i64, 2);
                        let (s, acc) = &holders[from];
                        let t = client
                            .transfer(s, &acc.id, &holders[to].1.number, &amount, &key())
                            .await;
                        fired.push((t["id"].as_str().unwrap().to_string(), from, to, amount));
                    }
                    fired
                }));
            }
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.await.expect("client task"));
            }
            all
        })
    };
    wait_completed(&app, &admin, baseline + 3).await;
    app.workers[0].kill9().await;
    let replacement = app.spawn_worker().await;
    app.workers.push(replacement);
    wait_completed(&app, &admin, baseline + 8).await;
    app.workers[1].kill9().await;
    let replacement = app.spawn_worker().await;
    app.workers.push(replacement);
    let fired = firing.await.expect("firing task");
    assert_eq!(fired.len(), 20);
    app.wait_no_pending(&admin, Duration::from_secs(90)).await;
    for (id, from, _, _) in &fired {
        let t = app.transfer_by_id(&holders[*from].0, id).await;
        assert_eq!(t["status"], "COMPLETED", "{t}");
    }
    app.assert_ledger_consistent().await;

    // One notification per (user, event), whatever ran twice.
    let dups = app
        .sql(
            "SELECT user_id::text AS u, dedup_key, COUNT(*)::bigint AS n FROM notifications \
             GROUP BY 1, 2 HAVING COUNT(*) > 1",
        )
        .await;
    assert!(
        dups.is_empty(),
        "{} duplicated notifications (logs: {})",
        dups.len(),
        app.log_dir.display()
    );
    let per_kind = app
        .sql(
            "SELECT kind, COUNT(*)::bigint AS n FROM notifications \
             WHERE kind IN ('TRANSFER_SENT', 'TRANSFER_RECEIVED') GROUP BY kind ORDER BY kind",
        )
        .await;
    let per_kind: Vec<(String, i64)> = per_kind
        .iter()
        .map(|r| (r.try_get("", "kind").unwrap(), r.try_get("", "n").unwrap()))
        .collect();
    assert_eq!(
        per_kind,
        vec![
            ("TRANSFER_RECEIVED".to_string(), 20),
            ("TRANSFER_SENT".to_string(), 20)
        ]
    );

    sink.start_again().await;
    let all_there = |ms: &[ParsedMail]| {
        fired.iter().all(|(id, from, to, _)| {
            ms.iter().any(|m| {
                m.is_to(&holders[*from].0.email)
                    && m.subject.starts_with("You sent")
                    && m.text.contains(id.as_str())
            }) && ms.iter().any(|m| {
                m.is_to(&holders[*to].0.email)
                    && m.subject.starts_with("You received")
                    && m.text.contains(id.as_str())
            })
        })
    };
    sink.wait_for(all_there, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let messages = sink.messages();
    for (id, from, to, amount) in &fired {
        let about: Vec<&ParsedMail> = messages
            .iter()
            .filter(|m| m.text.contains(id.as_str()))
            .collect();
        assert_eq!(
            about.len(),
            2,
            "transfer {id} was emailed {} times (one per party expected): {:?}\n{}\nlogs: {}",
            about.len(),
            about
                .iter()
                .map(|m| format!("{} | {} | {}", m.to, m.subject, m.file.display()))
                .collect::<Vec<_>>(),
            sink.summary(),
            app.log_dir.display()
        );
        assert_eq!(
            about
                .iter()
                .filter(|m| m.is_to(&holders[*from].0.email)
                    && m.subject == format!("You sent {amount} USD"))
                .count(),
            1,
            "sender's email for {id}: {}",
            sink.summary()
        );
        assert_eq!(
            about
                .iter()
                .filter(|m| m.is_to(&holders[*to].0.email)
                    && m.subject == format!("You received {amount} USD"))
                .count(),
            1,
            "recipient's email for {id}: {}",
            sink.summary()
        );
    }
    assert_eq!(messages.len(), 8 + 40, "{}", sink.summary());
}

/// Waits up to 30 s until `n` transfers are COMPLETED (carries on either way:
/// the kill happens regardless).
async fn wait_completed(app: &TestApp, admin: &Session, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if app.count_transfers(admin, Some("COMPLETED")).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_verification_email_request_within_a_minute_is_rate_limited() {
    let sink = SmtpSink::start().await;
    let app = with_sink(&sink).spawn().await;
    let dave = app.register_random().await;
    verification_mail(&sink, &dave).await;

    // The registration email counts as the first of the minute; age it so
    // that the test need not wait a minute for the first resend.
    let aged = app
        .sql(&format!(
            "UPDATE email_verifications SET created_at = created_at - interval '2 minutes' \
             WHERE user_id::text = '{}' RETURNING id",
            dave.user_id
        ))
        .await;
    assert_eq!(aged.len(), 1, "one verification token after registration");

    let first = expect_data(resend_raw(&app, &dave).await);
    assert_eq!(first["resendVerificationEmail"], true, "{first}");
    let second = resend_raw(&app, &dave).await;
    expect_code(&second, "RATE_LIMITED");

    let email = dave.email.clone();
    sink.wait_for(|ms| count(ms, &email, VERIFY_SUBJECT) >= 2, MAIL_WAIT)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages = sink.messages();
    assert_eq!(
        count(&messages, &dave.email, VERIFY_SUBJECT),
        2,
        "{}",
        sink.summary()
    );

    // The resent token works.
    let resent = messages
        .iter()
        .rfind(|m| m.is_to(&dave.email) && m.subject == VERIFY_SUBJECT)
        .expect("resent email");
    let token = resent.token().expect("token in the resent email");
    let data = expect_data(verify_email_raw(&app, &token).await);
    assert_eq!(data["verifyEmail"]["emailVerified"], true, "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transfer_emails_the_initiator_with_the_reason() {
    let sink = SmtpSink::start().await;
    let mut app = with_sink(&sink).workers(1).spawn().await;
    let admin = app.admin().await;
    let alice = app.register_random().await;
    let bob = app.register_random().await;
    let a = app.funded_account(&alice, "USD", "100.00").await;
    let b = app.open_account(&bob, "CHECKING", "USD").await;

    // No worker: the transfer stays PENDING while bob's account is frozen.
    app.workers[0].kill9().await;
    let t = app
        .transfer(&alice, &a.id, &b.number, "10.00", &key())
        .await;
    expect_data(
        app.gql(
            admin.token(),
            "mutation F($id: ID!) { freezeAccount(id: $id, reason: \"test\") { id status } }",
            json!({ "id": b.id }),
        )
        .await,
    );
    let replacement = app.spawn_worker().await;
    app.workers.push(replacement);
    let t = app
        .wait_transfer_final(&alice, &id_of(&t), Duration::from_secs(30))
        .await;
    assert_eq!(t["status"], "FAILED", "{t}");
    let reason = t["failureReason"]
        .as_str()
        .expect("failureReason")
        .to_string();

    let subject = "Transfer of 10.00 USD failed";
    let mail = sink
        .wait_for_message(|m| m.is_to(&alice.email) && m.subject == subject, MAIL_WAIT)
        .await;
    assert!(
        mail.text.contains(&reason),
        "the email gives the reason {reason}: {:?}",
        mail.text
    );
    let n = wait_notification(
        &app,
        &alice,
        "a TRANSFER_FAILED marked SENT",
        |n| n["kind"] == "TRANSFER_FAILED" && n["emailStatus"] == "SENT",
        MAIL_WAIT,
    )
    .await;
    assert!(n["body"].as_str().unwrap_or("").contains(&reason), "{n}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages = sink.messages();
    assert_eq!(
        count(&messages, &alice.email, subject),
        1,
        "{}",
        sink.summary()
    );
    assert!(
        !sink
            .messages_to(&bob.email)
            .iter()
            .any(|m| m.subject.contains("10.00")),
        "the recipient of a failed transfer gets no email: {}",
        sink.summary()
    );
}
