//! Database rows of corebank, one module per table.
//!
//! These are storage models only: they derive SeaORM traits and nothing from
//! the GraphQL layer, because the database columns are not the public schema.
//! Enumerations are stored as upper-case text so that SQLite and PostgreSQL
//! hold the same values. Depends on sea-orm only.

pub mod account;
pub mod audit_entry;
pub mod bill_payment;
pub mod contact;
pub mod email_verification;
pub mod ledger_entry;
pub mod notification;
pub mod refresh_token;
pub mod setting;
pub mod transfer;
pub mod user;
pub mod utility_link;
pub mod utility_provider;
