//! The WebSocket side of GraphQL: subscriptions over `graphql-transport-ws`
//! and the legacy `graphql-ws` protocol.
//!
//! async-graphql implements the message exchange; this module owns the
//! connection around it, because the protocol's close codes and timers are
//! not all covered there: 4403 for a refused `connection_init`, 4401 for a
//! `subscribe` before the ack, 4408 when no `connection_init` arrives, a
//! close when the access token expires, server pings, a bounded wait for
//! slow clients, and a clean close on shutdown.

use std::str::FromStr;
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::app::AppState;
use crate::graphql::{Auth, loaders};

/// A client must send `connection_init` this soon after connecting.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Server keepalive interval.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// A client that cannot take a message for this long is disconnected, so it
/// never holds memory or a subscription slot hostage.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Incoming messages buffered before the reader waits for the executor.
const INBOX: usize = 32;

pub async fn serve(socket: WebSocket, state: AppState, peer: std::net::IpAddr) {
    let protocol = socket
        .protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(|p| WebSocketProtocols::from_str(p).ok())
        .unwrap_or(WebSocketProtocols::GraphQLWS);
    let modern = matches!(protocol, WebSocketProtocols::GraphQLWS);
    let (mut sink, mut source) = socket.split();
    let (inbox_tx, inbox_rx) = mpsc::channel::<Vec<u8>>(INBOX);
    let (expiry_tx, mut expiry_rx) = watch::channel::<Option<chrono::DateTime<chrono::Utc>>>(None);
    let (viewer_tx, viewer_rx) = watch::channel::<Option<uuid::Uuid>>(None);

    let init_state = state.clone();
    let inbox = futures::stream::unfold(inbox_rx, |mut rx| async move {
        rx.recv().await.map(|m| (m, rx))
    });
    let mut exchange = Box::pin(
        async_graphql::http::WebSocket::new(state.schema.clone(), inbox, protocol).on_connection_init(move |payload| async move {
            let authorization = payload
                .get("Authorization")
                .or_else(|| payload.get("authorization"))
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let Some(raw) = authorization else {
                return Err("Forbidden: connection_init needs {\"Authorization\": \"Bearer <accessToken>\"}".into());
            };
            let token = raw.strip_prefix("Bearer ").unwrap_or(&raw).trim().to_owned();
            let (viewer, expires_at) = ledger::auth::authenticate_until(&init_state.db, &init_state.keys, &token)
                .await
                .map_err(|_| async_graphql::Error::new("Forbidden: invalid or expired access token"))?;
            let _ = expiry_tx.send(Some(expires_at));
            let _ = viewer_tx.send(Some(viewer.user_id));
            let (accounts, users) = loaders::for_request(&init_state.db);
            let mut data = Data::default();
            data.insert(init_state.clone());
            data.insert(Auth::Viewer(viewer));
            data.insert(accounts);
            data.insert(users);
            data.insert(crate::graphql::ClientIp(peer));
            Ok(data)
        }),
    );

    let mut failed_ids = std::collections::HashSet::<String>::new();
    let mut init_received = false;
    let mut acked = false;
    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    tokio::pin!(init_deadline);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut shutdown = state.shutdown.clone();
    if *shutdown.borrow() {
        return;
    }
    crate::metrics::SUBSCRIPTION_SOCKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    let mut expiry_open = true;
    let close: Option<(u16, String)> = loop {
        let expiry = *expiry_rx.borrow_and_update();
        let token_expired = async move {
            match expiry {
                Some(at) => {
                    let left = (at - chrono::Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(left).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            incoming = source.next() => {
                let bytes = match incoming {
                    Some(Ok(Message::Text(t))) => t.as_str().as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                };
                match message_type(&bytes).as_deref() {
                    Some("connection_init") => init_received = true,
                    Some("subscribe") | Some("start") if !acked && modern => break Some((4401, "Unauthorized".into())),
                    Some("subscribe") | Some("start") => {
                        // The same document caps and request limit as over HTTP.
                        let viewer = *viewer_rx.borrow();
                        if let Some(refusal) = refuse_operation(&state, &bytes, viewer, peer, modern).await {
                            if sink.send(Message::Text(refusal.into())).await.is_err() {
                                break None;
                            }
                            continue;
                        }
                    }
                    _ => {}
                }
                if inbox_tx.send(bytes).await.is_err() {
                    break None;
                }
            }
            outgoing = exchange.next() => match outgoing {
                Some(WsMessage::Text(text)) => {
                    if !acked && message_type(text.as_bytes()).as_deref() == Some("connection_ack") {
                        acked = true;
                    }
                    let text = if modern {
                        match as_subscription_error(&text) {
                            Some((id, error)) => {
                                failed_ids.insert(id);
                                error
                            }
                            None => match completed_id(&text) {
                                // The `error` message already ended it.
                                Some(id) if failed_ids.remove(&id) => continue,
                                _ => text,
                            },
                        }
                    } else {
                        text
                    };
                    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text.into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break None,
                        Err(_) => break Some((1008, "client too slow to receive events; reconnect and re-query".into())),
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    // async-graphql answers a refused init with 1002; the
                    // protocol says 4403.
                    let code = if modern && code == 1002 && init_received && !acked { 4403 } else { code };
                    break Some((code, reason));
                }
                None => break if modern { None } else { Some((4403, "Forbidden".into())) },
            },
            _ = &mut init_deadline, if !init_received => {
                break Some((4408, "Connection initialisation timeout".into()));
            }
            _ = token_expired, if acked => {
                break Some((4403, "Forbidden: access token expired; reconnect with a fresh token".into()));
            }
            // The sender lives in the init callback, which async-graphql
            // drops after the handshake; a closed channel is ready at once
            // forever, so it must leave the select or the socket spins.
            changed = expiry_rx.changed(), if expiry_open => {
                if changed.is_err() {
                    expiry_open = false;
                }
            }
            _ = ping.tick() => {
                let ping = if modern { r#"{"type":"ping"}"# } else { r#"{"type":"ka"}"# };
                if (modern || acked) && sink.send(Message::Text(ping.into())).await.is_err() {
                    break None;
                }
            }
            _ = shutdown.changed() => {
                break Some((1001, "server shutting down".into()));
            }
        }
    };
    crate::metrics::SUBSCRIPTION_SOCKETS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
    let _ = sink.close().await;
}

fn message_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Envelope>(bytes)
        .ok()
        .map(|e| e.kind)
}

/// async-graphql reports a subscription that fails at its start (say, an
/// account that is not the viewer's) as `next` with `data: null` and then
/// `complete`; graphql-transport-ws says `error` with the list of errors.
fn as_subscription_error(text: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v.get("type")?.as_str()? != "next" {
        return None;
    }
    let payload = v.get("payload")?;
    if !payload.get("data").is_none_or(|d| d.is_null()) {
        return None;
    }
    let errors = payload.get("errors")?.as_array()?;
    if errors.is_empty() {
        return None;
    }
    let id = v.get("id")?.as_str()?.to_owned();
    let msg = serde_json::json!({"type": "error", "id": id, "payload": errors});
    Some((id, msg.to_string()))
}

fn completed_id(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v.get("type")?.as_str()? != "complete" {
        return None;
    }
    Some(v.get("id")?.as_str()?.to_owned())
}

/// An `error` message refusing an operation over the limits, if it is.
async fn refuse_operation(
    state: &AppState,
    bytes: &[u8],
    viewer: Option<uuid::Uuid>,
    peer: std::net::IpAddr,
    modern: bool,
) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let id = v
        .get("id")
        .and_then(|i| i.as_str())
        .unwrap_or_default()
        .to_owned();
    let query = v
        .get("payload")
        .and_then(|p| p.get("query"))
        .and_then(|q| q.as_str())
        .unwrap_or_default();
    let refusal = |code: &str, message: &str| {
        let errors = serde_json::json!([{"message": message, "extensions": {"code": code}}]);
        let msg = if modern {
            serde_json::json!({"type": "error", "id": id, "payload": errors})
        } else {
            serde_json::json!({"type": "error", "id": id, "payload": errors[0]})
        };
        Some(msg.to_string())
    };
    if let Ok(doc) = async_graphql::parser::parse_query(query) {
        let (aliases, operations) = crate::limits::document_shape(&doc);
        if aliases > crate::limits::MAX_ALIASES || operations > crate::limits::MAX_OPERATIONS {
            return refusal(
                "GRAPHQL_VALIDATION_FAILED",
                "document too large: too many aliases or operations",
            );
        }
    }
    let bucket = match viewer {
        Some(u) => format!("req:user:{u}"),
        None => format!("req:ip:{peer}"),
    };
    if state.limiter.hit(&bucket, Duration::from_secs(60)).await > state.requests_per_minute {
        return refusal("RATE_LIMITED", "too many requests; try again in a minute");
    }
    None
}
