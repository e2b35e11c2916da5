//! The client side of the corebank API that the scenarios share: GraphQL
//! over HTTP, bench users, and graphql-transport-ws sockets.

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

pub const PASSWORD: &str = "correct horse battery";

/// One GraphQL request; any `errors` entry is a failure.
pub async fn gql(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    vars: Value,
) -> anyhow::Result<Value> {
    let mut req = http
        .post(format!("{url}/graphql"))
        .json(&json!({"query": query, "variables": vars}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .with_context(|| format!("HTTP {status} without a JSON body"))?;
    if let Some(e) = v.get("errors") {
        bail!("graphql error (HTTP {status}): {e}");
    }
    Ok(v["data"].clone())
}

/// Registers a fresh user; returns its email and access token.
pub async fn register(
    http: &reqwest::Client,
    url: &str,
    tag: &str,
) -> anyhow::Result<(String, String)> {
    let email = format!("bench-{tag}-{}@example.test", uuid::Uuid::new_v4().simple());
    let d = gql(
        http,
        url,
        None,
        "mutation($e: String!, $p: String!) { register(input: {email: $e, password: $p, fullName: \"Bench\"}) { accessToken } }",
        json!({"e": email, "p": PASSWORD}),
    )
    .await?;
    let token = d["register"]["accessToken"]
        .as_str()
        .context("register: no accessToken")?
        .to_owned();
    Ok((email, token))
}

pub async fn login(
    http: &reqwest::Client,
    url: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let d = gql(
        http,
        url,
        None,
        "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }",
        json!({"e": email, "p": password}),
    )
    .await?;
    Ok(d["login"]["accessToken"]
        .as_str()
        .context("login: no accessToken")?
        .to_owned())
}

/// An account as the bench uses it: its owner (an index into the bench
/// users), id and number, and the id of the deposit that funded it.
#[derive(Clone)]
pub struct Account {
    pub owner: usize,
    pub id: String,
    pub number: String,
    pub funding: String,
}

/// Opens a USD checking account for `token`'s user and deposits `amount`.
pub async fn funded_account(
    http: &reqwest::Client,
    url: &str,
    owner: usize,
    token: &str,
    amount: &str,
) -> anyhow::Result<Account> {
    let d = gql(
        http,
        url,
        Some(token),
        "mutation { openAccount(input: {kind: CHECKING, currency: \"USD\"}) { id number } }",
        json!({}),
    )
    .await?;
    let id = d["openAccount"]["id"].as_str().context("id")?.to_owned();
    let number = d["openAccount"]["number"]
        .as_str()
        .context("number")?
        .to_owned();
    let d = gql(
        http,
        url,
        Some(token),
        "mutation($a: ID!, $m: Decimal!, $k: String!) { deposit(input: {accountId: $a, amount: $m, idempotencyKey: $k}) { id } }",
        // Idempotency keys are per user, and a user owns several accounts.
        json!({"a": id, "m": amount, "k": format!("bench-fund-{id}")}),
    )
    .await?;
    let funding = d["deposit"]["id"]
        .as_str()
        .context("deposit id")?
        .to_owned();
    Ok(Account {
        owner,
        id,
        number,
        funding,
    })
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a graphql-transport-ws socket and waits for `connection_ack`.
pub async fn connect(url: &str, token: &str) -> anyhow::Result<Ws> {
    let ws_url = url.replacen("http", "ws", 1) + "/graphql/ws";
    let mut req = ws_url.into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    ws.send(Message::Text(init.to_string().into())).await?;
    loop {
        let m = ws.next().await.context("closed before connection_ack")??;
        if let Message::Text(t) = m {
            if t.contains("connection_ack") {
                return Ok(ws);
            }
            bail!("unexpected message before connection_ack: {t}");
        }
    }
}

pub async fn subscribe(ws: &mut Ws, id: &str, query: &str, vars: Value) -> anyhow::Result<()> {
    let sub =
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": vars}});
    ws.send(Message::Text(sub.to_string().into())).await?;
    Ok(())
}

/// The next `next` payload on the socket, answering server pings on the way.
/// `None` when the socket closed; an `error` or `complete` is a failure.
pub async fn next_event(ws: &mut Ws) -> anyhow::Result<Option<Value>> {
    while let Some(m) = ws.next().await {
        let Message::Text(t) = m? else { continue };
        let v: Value = serde_json::from_str(&t)?;
        match v["type"].as_str() {
            Some("ping") => ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await?,
            Some("next") => return Ok(Some(v["payload"].clone())),
            Some("error") | Some("complete") => bail!("subscription ended: {t}"),
            _ => {}
        }
    }
    Ok(None)
}
