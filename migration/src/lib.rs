//! Schema migrations of corebank, runnable on PostgreSQL and SQLite.
//!
//! Hand-written rather than derived from the entities so that every index
//! and constraint the money path relies on is visible here: the unique
//! idempotency key per user, the unique ledger leg per transfer, and the
//! indexes behind every list the API serves. Depends on sea-orm-migration only.

pub use sea_orm_migration::prelude::*;

mod m0001_foundation;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m0001_foundation::Migration)]
    }
}
