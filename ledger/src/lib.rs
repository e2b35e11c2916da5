//! The banking rules of corebank, shared by the `api` and `worker` binaries.
//!
//! Everything that decides about money lives here: value types (`money`,
//! `account_number`, `idempotency`, `email`), identity (`auth`), accounts,
//! the hold-then-settle life of a transfer (`transfers`, `settlement`),
//! the recovery sweep's query, notifications, utility bills and the job
//! payloads that carry work to the workers. Pure decisions are plain functions unit-tested without
//! a database; the async functions take a SeaORM connection or transaction so
//! that the caller owns the transaction boundary.
//!
//! May depend on `entity`, SeaORM and an HTTP client (reqwest, for the
//! utility providers' API in `bills`); must not depend on axum,
//! async-graphql, apalis or lettre, so that the rules do not change with the
//! transport.

pub mod account_number;
pub mod accounts;
pub mod admin;
pub mod auth;
pub mod batch;
pub mod bills;
pub mod contacts;
pub mod db;
pub mod email;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod jobs;
pub mod money;
pub mod notify;
pub mod page;
pub mod settlement;
pub mod transfers;

pub use error::{LedgerError, LedgerResult};

/// Who is asking: resolved from a verified access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: uuid::Uuid,
    pub role: Role,
    pub email_verified: bool,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> LedgerResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(LedgerError::Forbidden(
                "this operation is for administrators".into(),
            ))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "CUSTOMER",
            Role::Admin => "ADMIN",
        }
    }

    pub fn parse(s: &str) -> Role {
        if s == "ADMIN" {
            Role::Admin
        } else {
            Role::Customer
        }
    }
}
