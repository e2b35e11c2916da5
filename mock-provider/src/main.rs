//! A utility provider for demos and tests, speaking exactly the provider API
//! of the corebank contract (section 7):
//!
//! - `GET /customers/{n}` → 200 `{customerNumber, name}` or 404
//! - `GET /customers/{n}/bills` → 200 `[{reference, amount, currency, dueDate, status}]`
//! - `POST /payments` `{paymentId, reference, amount, currency}` → 201 once
//!   recorded, 200 for a repeated `paymentId`; the bill becomes PAID.
//!
//! Seeded customers: `100001` (two bills), `100002` (one bill), `100003`
//! (no bills). Switches, by flag or at run time through `POST /_control`
//! (`{"latencyMs": 5000, "errorRate": 0.5, "failNextPayments": 2,
//! "down": true}`); `GET /_payments` lists what was recorded, with how many
//! times each `paymentId` was received. Flags: `--addr 127.0.0.1:9100`,
//! `--currency USD`, `--latency-ms N`, `--error-rate 0.0..1.0`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
struct World {
    latency_ms: u64,
    error_rate: f64,
    fail_next_payments: u32,
    down: bool,
    customers: HashMap<String, (String, Vec<Value>)>,
    /// paymentId → (payment, times received)
    payments: HashMap<String, (Value, u32)>,
}

type Shared = Arc<Mutex<World>>;

fn seed(currency: &str) -> HashMap<String, (String, Vec<Value>)> {
    let bill = |r: &str, a: &str, due: &str, status: &str| json!({"reference": r, "amount": a, "currency": currency, "dueDate": due, "status": status});
    HashMap::from([
        (
            "100001".to_string(),
            (
                "Alice Example".to_string(),
                vec![
                    bill("INV-100001-11", "123.45", "2026-12-01", "UNPAID"),
                    bill("INV-100001-10", "98.10", "2026-11-01", "PAID"),
                ],
            ),
        ),
        (
            "100002".to_string(),
            (
                "Bob Example".to_string(),
                vec![bill("INV-100002-11", "42.00", "2026-12-05", "UNPAID")],
            ),
        ),
        ("100003".to_string(), ("Carol Example".to_string(), vec![])),
    ])
}

/// Applies latency and random failures; returns an error response if this
/// request should fail.
async fn weather(world: &Shared) -> Option<Response> {
    let (latency, error_rate, down) = {
        let w = world.lock().unwrap_or_else(|p| p.into_inner());
        (w.latency_ms, w.error_rate, w.down)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if down || (error_rate > 0.0 && rand::random::<f64>() < error_rate) {
        return Some((StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response());
    }
    None
}

async fn customer(State(world): State<Shared>, Path(n): Path<String>) -> Response {
    if let Some(r) = weather(&world).await {
        return r;
    }
    let w = world.lock().unwrap_or_else(|p| p.into_inner());
    match w.customers.get(&n) {
        Some((name, _)) => Json(json!({"customerNumber": n, "name": name})).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn bills(State(world): State<Shared>, Path(n): Path<String>) -> Response {
    if let Some(r) = weather(&world).await {
        return r;
    }
    let w = world.lock().unwrap_or_else(|p| p.into_inner());
    match w.customers.get(&n) {
        Some((_, bills)) => Json(Value::Array(bills.clone())).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn payment(State(world): State<Shared>, Json(body): Json<Value>) -> Response {
    if let Some(r) = weather(&world).await {
        return r;
    }
    let mut w = world.lock().unwrap_or_else(|p| p.into_inner());
    if w.fail_next_payments > 0 {
        w.fail_next_payments -= 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, "temporary failure").into_response();
    }
    let Some(id) = body
        .get("paymentId")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return (StatusCode::BAD_REQUEST, "paymentId required").into_response();
    };
    if let Some((_, times)) = w.payments.get_mut(&id) {
        *times += 1;
        return StatusCode::OK.into_response();
    }
    let reference = body
        .get("reference")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    for (_, bills) in w.customers.values_mut() {
        for b in bills.iter_mut() {
            if b["reference"] == reference.as_str() {
                b["status"] = json!("PAID");
            }
        }
    }
    w.payments.insert(id, (body, 1));
    StatusCode::CREATED.into_response()
}

async fn control(State(world): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let mut w = world.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = body.get("latencyMs").and_then(Value::as_u64) {
        w.latency_ms = v;
    }
    if let Some(v) = body.get("errorRate").and_then(Value::as_f64) {
        w.error_rate = v.clamp(0.0, 1.0);
    }
    if let Some(v) = body.get("failNextPayments").and_then(Value::as_u64) {
        w.fail_next_payments = v as u32;
    }
    if let Some(v) = body.get("down").and_then(Value::as_bool) {
        w.down = v;
    }
    Json(
        json!({"latencyMs": w.latency_ms, "errorRate": w.error_rate, "failNextPayments": w.fail_next_payments, "down": w.down}),
    )
}

async fn list_payments(State(world): State<Shared>) -> Json<Value> {
    let w = world.lock().unwrap_or_else(|p| p.into_inner());
    Json(Value::Array(
        w.payments
            .values()
            .map(|(p, times)| json!({"payment": p, "timesReceived": times}))
            .collect(),
    ))
}

#[tokio::main]
async fn main() {
    let mut addr = "127.0.0.1:9100".to_string();
    let mut currency = "USD".to_string();
    let mut world = World::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--addr" => addr = value,
            "--currency" => currency = value,
            "--latency-ms" => world.latency_ms = value.parse().unwrap_or(0),
            "--error-rate" => world.error_rate = value.parse().unwrap_or(0.0),
            other => {
                eprintln!("mock-provider: unknown flag {other}");
                std::process::exit(2);
            }
        }
    }
    world.customers = seed(&currency);
    let shared: Shared = Arc::new(Mutex::new(world));
    let app = Router::new()
        .route("/customers/{n}", get(customer))
        .route("/customers/{n}/bills", get(bills))
        .route("/payments", post(payment))
        .route("/_control", post(control))
        .route("/_payments", get(list_payments))
        .with_state(shared);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mock-provider: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "mock-provider listening on http://{}",
        listener.local_addr().map(|a| a.to_string()).unwrap_or(addr)
    );
    let _ = axum::serve(listener, app).await;
}
