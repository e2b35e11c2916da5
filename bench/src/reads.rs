//! Reads: the query a customer's home screen makes, one account with its
//! balances plus the viewer's latest 20 transfers, from `clients`
//! concurrent clients, each request as a random bench account's owner.
//! Its ceiling is `GET /healthz` at the same concurrency (see baseline.rs):
//! the ratio says how much of the HTTP stack's capacity one authenticated
//! GraphQL read with two database-backed fields leaves.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use rand::Rng;
use serde_json::json;

use crate::api::gql;
use crate::load::{Run, closed_loop};
use crate::transfers::Pool;

const HOME_SCREEN: &str = "query($a: ID!) { \
    account(id: $a) { id number balance availableBalance status } \
    transfers(first: 20) { edges { node { id kind status amount currency createdAt } } } }";

pub async fn run(
    http: &reqwest::Client,
    pool: &Pool,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let targets: Arc<Vec<(String, String)>> = Arc::new(
        pool.accounts
            .iter()
            .map(|a| (pool.tokens[a.owner].clone(), a.id.clone()))
            .collect(),
    );
    let (http, url) = (http.clone(), pool.url.clone());
    closed_loop(clients, duration, move |_, _| {
        let (http, url, targets) = (http.clone(), url.clone(), targets.clone());
        async move {
            let (token, id) = &targets[rand::rng().random_range(0..targets.len())];
            let d = gql(&http, &url, Some(token), HOME_SCREEN, json!({"a": id})).await?;
            if d["account"]["id"] != json!(id) || !d["transfers"]["edges"].is_array() {
                bail!("unexpected read result: {d}");
            }
            Ok(())
        }
    })
    .await
}
