//! The corebank HTTP surface: GraphQL over HTTP and WebSocket, GraphiQL,
//! health, readiness and metrics, plus the process wiring of the `api`
//! binary (configuration, embedded mode, optional in-process workers).
//!
//! Resolvers are thin: they authenticate, convert between GraphQL types and
//! `ledger` types, and call `ledger`. Errors reach clients only through
//! `graphql::errors`, which maps `LedgerError` to the contract's codes.
//!
//! Layout: `config` (environment), `app` (start-up and serving), `http`
//! (routes), `graphql/` (one file per domain noun). Depends on `ledger`,
//! `queue`, `worker` (to host workers in-process) and `migration`.

pub mod app;
pub mod config;
pub mod graphql;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod ws;
