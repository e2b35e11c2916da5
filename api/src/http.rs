//! Routes: GraphQL over HTTP and WebSocket, GraphiQL, health, metrics.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::graphql::{Auth, errors::assign_codes, loaders};

/// Largest request body accepted; real GraphQL documents are far smaller.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|State(state): State<AppState>| async move {
                if state.graphiql {
                    graphiql().await.into_response()
                } else {
                    StatusCode::NOT_FOUND.into_response()
                }
            }),
        )
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/assets/graphiql/{file}", get(asset))
        .route("/verify-email", get(verify_email_link))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn authenticate(state: &AppState, authorization: Option<&str>) -> Auth {
    let Some(raw) = authorization else {
        return Auth::Anonymous;
    };
    let Some(token) = raw
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Auth::Invalid("Authorization must be `Bearer <accessToken>`".into());
    };
    match ledger::auth::authenticate(&state.db, &state.keys, token).await {
        Ok(v) => Auth::Viewer(v),
        Err(e) => {
            if let ledger::LedgerError::Internal(cause) = &e {
                tracing::error!(error = %cause, "authentication failed internally");
            }
            Auth::Invalid("invalid or expired access token".into())
        }
    }
}

fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn graphql_post(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Only JSON: text/plain and form bodies are how cross-site requests sneak in.
    if !content_type.starts_with("application/json")
        && !content_type.starts_with("application/graphql-response+json")
    {
        return error_body(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_USER_INPUT",
            "Content-Type must be application/json",
        );
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "request body is not valid JSON",
            );
        }
    };
    if value.is_array() {
        return error_body(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "batched requests are not supported",
        );
    }
    let request: async_graphql::Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(_) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "request must be {\"query\": ..., \"variables\": {...}}",
            );
        }
    };
    let parsed = async_graphql::parser::parse_query(&request.query);
    let document_parses = parsed.is_ok();
    if let Ok(doc) = &parsed {
        let (aliases, operations) = crate::limits::document_shape(doc);
        if !state.introspection && crate::limits::uses_introspection(doc) {
            return error_body(
                StatusCode::BAD_REQUEST,
                "GRAPHQL_VALIDATION_FAILED",
                "introspection is disabled on this server",
            );
        }
        if aliases > crate::limits::MAX_ALIASES || operations > crate::limits::MAX_OPERATIONS {
            return error_body(
                StatusCode::BAD_REQUEST,
                "GRAPHQL_VALIDATION_FAILED",
                &format!(
                    "document too large: at most {} aliases and {} operations per request",
                    crate::limits::MAX_ALIASES,
                    crate::limits::MAX_OPERATIONS
                ),
            );
        }
    }
    let auth = authenticate(
        &state,
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
    .await;
    let bucket = match &auth {
        Auth::Viewer(v) => format!("req:user:{}", v.user_id),
        _ => format!("req:ip:{}", peer.ip()),
    };
    if state
        .limiter
        .hit(&bucket, std::time::Duration::from_secs(60))
        .await
        > state.requests_per_minute
    {
        return error_body(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many requests; try again in a minute",
        );
    }
    let (accounts, users) = loaders::for_request(&state.db);
    let request = request
        .data(state.clone())
        .data(auth)
        .data(accounts)
        .data(users)
        .data(crate::graphql::ClientIp(peer.ip()));
    let operation = request
        .operation_name
        .clone()
        .or_else(|| {
            parsed.as_ref().ok().and_then(|d| {
                d.operations
                    .iter()
                    .next()
                    .and_then(|(n, _)| n.map(|n| n.to_string()))
            })
        })
        .unwrap_or_else(|| "anonymous".into());
    let started = std::time::Instant::now();
    let mut response = state.schema.execute(request).await;
    assign_codes(&mut response.errors, document_parses);
    let outcome = if response.errors.is_empty() {
        "ok"
    } else {
        "error"
    };
    let labels = format!(
        "operation=\"{}\",outcome=\"{outcome}\"",
        queue::metrics::label(&operation)
    );
    queue::metrics::observe(
        "corebank_graphql_request_duration_seconds",
        &labels,
        started.elapsed().as_secs_f64(),
    );
    let body = serde_json::to_string(&response).unwrap_or_else(|_| "{}".into());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn graphql_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html && state.graphiql {
        graphiql().await.into_response()
    } else {
        // Queries over GET would put tokens and inputs in URLs and logs.
        error_body(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_USER_INPUT",
            "use POST /graphql with a JSON body",
        )
    }
}

async fn graphql_ws(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    // Small, bounded buffers: an idle subscription should cost kilobytes, and
    // a client that stops reading is cut off instead of growing memory.
    ws.protocols(["graphql-transport-ws", "graphql-ws"])
        .max_message_size(64 * 1024)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .on_upgrade(move |socket| crate::ws::serve(socket, state, peer.ip()))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The link in the verification email lands here.
async fn verify_email_link(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<TokenQuery>,
) -> Response {
    let page = |status: StatusCode, title: &str, text: &str| {
        let html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body style=\"font-family:sans-serif;max-width:32em;margin:4em auto\"><h1>{title}</h1><p>{text}</p></body></html>"
        );
        (status, Html(html)).into_response()
    };
    let Some(token) = q.token.filter(|t| !t.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Link incomplete",
            "This verification link has no token.",
        );
    };
    match ledger::auth::verify_email(&state.db, &token).await {
        Ok(_) => page(
            StatusCode::OK,
            "Email verified",
            "Your email address is verified. You can close this page.",
        ),
        Err(ledger::LedgerError::Internal(cause)) => {
            tracing::error!(error = %cause, "email verification failed internally");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Please try again later.",
            )
        }
        Err(_) => page(
            StatusCode::BAD_REQUEST,
            "Link expired",
            "This link is invalid, expired or already used. Ask for a new one in the app.",
        ),
    }
}

const GRAPHIQL_HTML: &str = include_str!("../assets/graphiql/index.html");

async fn graphiql() -> Html<&'static str> {
    Html(GRAPHIQL_HTML)
}

/// GraphiQL's pinned assets, compiled into the binary: the playground works
/// offline and loads nothing from a CDN.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match file.as_str() {
        "graphiql.min.js" => (
            include_bytes!("../assets/graphiql/graphiql.min.js"),
            "text/javascript",
        ),
        "graphiql.min.css" => (
            include_bytes!("../assets/graphiql/graphiql.min.css"),
            "text/css",
        ),
        "react.production.min.js" => (
            include_bytes!("../assets/graphiql/react.production.min.js"),
            "text/javascript",
        ),
        "react-dom.production.min.js" => (
            include_bytes!("../assets/graphiql/react-dom.production.min.js"),
            "text/javascript",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    r
}

async fn readyz(State(state): State<AppState>) -> Response {
    let db_ok = matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), state.db.ping()).await,
        Ok(Ok(()))
    );
    let queue_ok = state.queues.ping().await;
    let body = serde_json::json!({"database": db_ok, "queue": queue_ok}).to_string();
    let status = if db_ok && queue_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let statements = worker::process::API_DB_STATEMENTS.load(Ordering::Relaxed);
    let worker_statements = worker::process::WORKER_DB_STATEMENTS.load(Ordering::Relaxed);
    let sockets = crate::metrics::SUBSCRIPTION_SOCKETS.load(Ordering::Relaxed);
    let body = format!(
        "# HELP corebank_db_statements_total SQL statements sent for API requests by this process.\n\
         # TYPE corebank_db_statements_total counter\n\
         corebank_db_statements_total {statements}\n\
         # HELP corebank_worker_db_statements_total SQL statements sent by in-process workers.\n\
         # TYPE corebank_worker_db_statements_total counter\n\
         corebank_worker_db_statements_total {worker_statements}\n\
         # HELP corebank_subscription_sockets Open subscription WebSockets.\n\
         # TYPE corebank_subscription_sockets gauge\n\
         corebank_subscription_sockets {sockets}\n\
         # HELP corebank_up 1 while the process serves.\n\
         # TYPE corebank_up gauge\n\
         corebank_up 1\n"
    );
    let body = body + &crate::metrics::render_scrape_time(&state).await + &queue::metrics::render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
