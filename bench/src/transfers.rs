//! Transfers end to end: GraphQL `transfer` mutations from `clients`
//! concurrent clients, settled by the workers, observed through
//! `transferUpdated` subscriptions.
//!
//! Setup goes through the API like a customer would: register users, open
//! several accounts per user (argon2 makes registration the slow part, and
//! the API has no per-user account cap), deposit into each. Every bench
//! user keeps one WebSocket with `transferUpdated` (no `accountId`: all of
//! its transfers, both directions), so a transfer's completion time is the
//! arrival of its first `COMPLETED` event at the client, whichever party's
//! socket brings it. The sockets are open before the funding deposits, and
//! setup waits for every deposit's `COMPLETED`: that proves every socket
//! delivers before the clock starts.
//!
//! Per (mode, clients): the closed loop sends transfers for `duration`;
//! then the run waits until every one of them is settled. Settled
//! transfers/s = transfers ÷ (last `COMPLETED` arrival − first mutation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::json;

use crate::api::{self, Account, gql};
use crate::baseline::{HOT_ACCOUNTS, Mode, pick_pair};
use crate::load::{Run, closed_loop};

/// The bench users and their accounts, shared with the reads scenario.
pub struct Pool {
    pub url: String,
    pub emails: Vec<String>,
    pub tokens: Vec<String>,
    pub accounts: Vec<Account>,
    /// When the tokens were issued: access tokens live 15 minutes.
    pub issued: Instant,
    tracker: Arc<Tracker>,
    sockets: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for s in &self.sockets {
            s.abort();
        }
    }
}

/// First `COMPLETED`/`FAILED` event per transfer id, as it reached the client.
#[derive(Default)]
struct Tracker {
    done: Mutex<HashMap<String, Settled>>,
}

#[derive(Clone)]
struct Settled {
    at: Instant,
    status: String,
    reason: Option<String>,
}

/// Deposited into every bench account: the largest single deposit allowed,
/// enough for 100 million 0.01 transfers.
const FUNDING: &str = "1000000";

const TRANSFER_EVENTS: &str = "subscription { transferUpdated { id status failureReason } }";

impl Pool {
    /// Registers `ceil(accounts / per_user)` users, subscribes each to its
    /// transfers, opens and funds `accounts` accounts (account `i` belongs
    /// to user `i % users`, so the hot-spot accounts `0..10` have distinct
    /// owners), and waits until every deposit is settled.
    pub async fn setup(
        http: &reqwest::Client,
        url: &str,
        accounts: usize,
        per_user: usize,
    ) -> anyhow::Result<Pool> {
        let accounts = accounts.max(HOT_ACCOUNTS);
        let users = accounts.div_ceil(per_user.max(1));
        let started = Instant::now();
        // Registration hashes a password with argon2 (CPU-bound on the
        // api): more in flight than cores only queues.
        let registered: Vec<(String, String)> = futures::stream::iter(0..users)
            .map(|u| {
                let http = http.clone();
                async move { api::register(&http, url, &format!("u{u}")).await }
            })
            .buffered(4)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let (emails, tokens): (Vec<_>, Vec<_>) = registered.into_iter().unzip();
        let issued = Instant::now();

        let tracker = Arc::new(Tracker::default());
        let mut sockets = Vec::new();
        for t in &tokens {
            let mut ws = api::connect(url, t).await?;
            api::subscribe(&mut ws, "t", TRANSFER_EVENTS, json!({})).await?;
            sockets.push(tokio::spawn(listen(ws, tracker.clone())));
        }
        // A subscribe message has no acknowledgement; give the api a moment
        // to register the streams before the first event they must see.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let opened: Vec<Account> = futures::stream::iter(0..accounts)
            .map(|i| {
                let (http, token) = (http.clone(), tokens[i % users].clone());
                async move { api::funded_account(&http, url, i % users, &token, FUNDING).await }
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let pool = Pool {
            url: url.to_owned(),
            emails,
            tokens,
            accounts: opened,
            issued,
            tracker,
            sockets,
        };
        let deposits: Vec<(String, usize)> = pool
            .accounts
            .iter()
            .map(|a| (a.funding.clone(), a.owner))
            .collect();
        let missed = pool.wait_settled(http, &deposits).await?;
        if missed > 0 {
            bail!(
                "{missed} funding deposits settled but their COMPLETED event never reached a transferUpdated socket"
            );
        }
        eprintln!(
            "[bench] setup: {users} users, {} accounts funded in {:.1} s",
            pool.accounts.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(pool)
    }

    /// Logs every user in again when the tokens are near their 15-minute
    /// expiry (HTTP use only; the transfer sockets are not renewed).
    pub async fn refresh_tokens(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        if self.issued.elapsed() < Duration::from_secs(10 * 60) {
            return Ok(());
        }
        for (i, email) in self.emails.iter().enumerate() {
            self.tokens[i] = api::login(http, &self.url, email, api::PASSWORD).await?;
        }
        self.issued = Instant::now();
        Ok(())
    }

    /// Waits until every `(transfer id, owner)` has a settled event. No
    /// fixed deadline (a backlog at 64 clients takes a while): it fails
    /// when settlement makes no progress for `STALL`. Transfers whose event
    /// never came are then looked up over HTTP: settled ones are counted as
    /// missed events (returned), pending ones fail the run.
    async fn wait_settled(
        &self,
        http: &reqwest::Client,
        ids: &[(String, usize)],
    ) -> anyhow::Result<usize> {
        const STALL: Duration = Duration::from_secs(30);
        let mut missing: Vec<&(String, usize)> = ids.iter().collect();
        let mut progress = Instant::now();
        while !missing.is_empty() && progress.elapsed() < STALL {
            let before = missing.len();
            {
                let done = self.tracker.done.lock().unwrap();
                missing.retain(|(id, _)| !done.contains_key(id));
            }
            if missing.len() < before {
                progress = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let done = self.tracker.done.lock().unwrap().clone();
        for (id, _) in ids {
            if let Some(s) = done.get(id)
                && s.status != "COMPLETED"
            {
                bail!(
                    "transfer {id} ended {}: {}",
                    s.status,
                    s.reason.as_deref().unwrap_or("")
                );
            }
        }
        let mut pending = 0;
        for (id, owner) in &missing {
            let d = gql(
                http,
                &self.url,
                Some(&self.tokens[*owner]),
                "query($id: ID!) { transfer(id: $id) { status } }",
                json!({"id": id}),
            )
            .await?;
            match d["transfer"]["status"].as_str() {
                Some("COMPLETED") => {}
                Some("PENDING") => pending += 1,
                other => bail!("transfer {id} is {other:?}"),
            }
        }
        if pending > 0 {
            bail!(
                "{pending} transfers still PENDING after {} s without progress",
                STALL.as_secs()
            );
        }
        Ok(missing.len())
    }
}

/// Records the first settled event of each transfer seen on one socket.
async fn listen(mut ws: api::Ws, tracker: Arc<Tracker>) {
    loop {
        let payload = match api::next_event(&mut ws).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                eprintln!("[bench] transferUpdated socket failed: {e}");
                return;
            }
        };
        let at = Instant::now();
        let t = &payload["data"]["transferUpdated"];
        let status = t["status"].as_str().unwrap_or_default();
        if status == "COMPLETED" || status == "FAILED" {
            let id = t["id"].as_str().unwrap_or_default().to_owned();
            let reason = t["failureReason"].as_str().map(str::to_owned);
            tracker.done.lock().unwrap().entry(id).or_insert(Settled {
                at,
                status: status.to_owned(),
                reason,
            });
        }
    }
}

/// What one (mode, clients) end-to-end run measured.
pub struct E2e {
    pub mode: Mode,
    pub clients: usize,
    pub accounts: usize,
    pub transfers: usize,
    /// Transfers ÷ (last settlement seen − first mutation sent).
    pub settled_per_s: f64,
    /// Mutation replies per second during the sending window.
    pub accepted_per_s: f64,
    /// Settled events that never came (transfer found COMPLETED by query).
    pub events_missed: usize,
    pub mutation_ms: Vec<f64>,
    /// Mutation sent → `COMPLETED` event at the client.
    pub completed_ms: Vec<f64>,
    /// Mutation reply → `COMPLETED` event at the client.
    pub reply_to_completed_ms: Vec<f64>,
}

/// A transfer the api accepted: its id, the sender (an index into the
/// bench users), and when the mutation was sent and answered.
struct Accepted {
    id: String,
    owner: usize,
    sent: Instant,
    replied: Instant,
}

/// One end-to-end run: `clients` send 0.01 USD transfers for `duration`.
pub async fn run(
    http: &reqwest::Client,
    pool: &Pool,
    mode: Mode,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<E2e> {
    let n = match mode {
        Mode::Uniform => pool.accounts.len(),
        Mode::Hot => HOT_ACCOUNTS,
    };
    let accounts: Arc<Vec<Account>> = Arc::new(pool.accounts[..n].to_vec());
    let tokens = Arc::new(pool.tokens.clone());
    let sent: Arc<Mutex<Vec<Accepted>>> = Arc::default();
    let (h, url, rec) = (http.clone(), pool.url.clone(), sent.clone());
    let run: Run = closed_loop(clients, duration, move |_, _| {
        let (http, url, accounts, tokens, rec) = (
            h.clone(),
            url.clone(),
            accounts.clone(),
            tokens.clone(),
            rec.clone(),
        );
        async move {
            let (f, t) = pick_pair(accounts.len());
            let (from, to) = (&accounts[f], &accounts[t]);
            let s = Instant::now();
            let d = gql(
                &http,
                &url,
                Some(&tokens[from.owner]),
                "mutation($f: ID!, $n: String!, $k: String!) { transfer(input: {fromAccountId: $f, toAccountNumber: $n, amount: \"0.01\", idempotencyKey: $k}) { id status } }",
                json!({"f": from.id, "n": to.number, "k": uuid::Uuid::new_v4().to_string()}),
            )
            .await?;
            let replied = Instant::now();
            let id = d["transfer"]["id"].as_str().context("transfer id")?.to_owned();
            rec.lock().unwrap().push(Accepted {
                id,
                owner: from.owner,
                sent: s,
                replied,
            });
            Ok(())
        }
    })
    .await?;
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let ids: Vec<(String, usize)> = sent.iter().map(|a| (a.id.clone(), a.owner)).collect();
    let events_missed = pool.wait_settled(http, &ids).await?;
    let waited = Instant::now();

    let done = pool.tracker.done.lock().unwrap();
    let mut last = run.started;
    let (mut completed_ms, mut reply_to_completed_ms) = (Vec::new(), Vec::new());
    for a in &sent {
        match done.get(&a.id) {
            Some(d) => {
                last = last.max(d.at);
                completed_ms.push(d.at.saturating_duration_since(a.sent).as_secs_f64() * 1000.0);
                reply_to_completed_ms
                    .push(d.at.saturating_duration_since(a.replied).as_secs_f64() * 1000.0);
            }
            // Settled, but we only know it by the time we asked.
            None => last = last.max(waited),
        }
    }
    completed_ms.sort_by(f64::total_cmp);
    reply_to_completed_ms.sort_by(f64::total_cmp);
    Ok(E2e {
        mode,
        clients,
        accounts: n,
        transfers: sent.len(),
        settled_per_s: sent.len() as f64 / last.duration_since(run.started).as_secs_f64(),
        accepted_per_s: run.per_second(),
        events_missed,
        mutation_ms: run.latencies_ms,
        completed_ms,
        reply_to_completed_ms,
    })
}
