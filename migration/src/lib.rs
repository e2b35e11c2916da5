//! Schema migrations of corebank, runnable on PostgreSQL and SQLite.
//!
//! Hand-written rather than derived from the entities so that every index
//! and constraint the money path relies on is visible here: the unique
//! idempotency key per user, the unique ledger leg per transfer, and the
//! indexes behind every list the API serves. Depends on sea-orm-migration only.

pub use sea_orm_migration::prelude::*;

mod m0001_foundation;
mod m0002_email_delivery;
mod m0003_bills;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_foundation::Migration),
            Box::new(m0002_email_delivery::Migration),
            Box::new(m0003_bills::Migration),
        ]
    }
}

/// Brings the schema up to date; safe when several processes start at once.
///
/// On PostgreSQL the migrations run inside one transaction holding an
/// advisory lock, so a second process waits and then finds nothing to do.
/// On SQLite the database file is local to one process group and the
/// migrations' `IF NOT EXISTS` clauses make a repeat harmless.
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> Result<(), DbErr> {
    use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};
    if db.get_database_backend() == DbBackend::Postgres {
        let txn = db.begin().await?;
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7242019001)")
            .await?;
        Migrator::up(&txn, None).await?;
        txn.commit().await
    } else {
        Migrator::up(db, None).await
    }
}
