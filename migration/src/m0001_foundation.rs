use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn id() -> ColumnDef {
    ColumnDef::new("id")
        .uuid()
        .not_null()
        .primary_key()
        .to_owned()
}
fn uuid_col(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).uuid().not_null().to_owned()
}
fn uuid_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).uuid().null().to_owned()
}
fn text(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).string().not_null().to_owned()
}
fn text_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).string().null().to_owned()
}
fn minor(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}
fn at(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}
fn at_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

async fn index(
    m: &SchemaManager<'_>,
    name: &str,
    table: &'static str,
    cols: &[&'static str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut idx = Index::create();
    idx.if_not_exists().name(name).table(table);
    for c in cols {
        idx.col(*c);
    }
    if unique {
        idx.unique();
    }
    m.create_index(idx).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("users")
                .if_not_exists()
                .col(id())
                .col(text("email"))
                .col(text("password_hash"))
                .col(text("full_name"))
                .col(text("role"))
                .col(
                    ColumnDef::new("email_verified")
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .col(
                    ColumnDef::new("token_version")
                        .integer()
                        .not_null()
                        .default(0),
                )
                .col(at("created_at"))
                .to_owned(),
        )
        .await?;
        index(m, "ux_users_email", "users", &["email"], true).await?;
        index(m, "ix_users_created", "users", &["created_at"], false).await?;

        m.create_table(
            Table::create()
                .table("refresh_tokens")
                .if_not_exists()
                .col(id())
                .col(uuid_col("user_id"))
                .col(uuid_col("family_id"))
                .col(text("token_hash"))
                .col(at("expires_at"))
                .col(at_null("used_at"))
                .col(at_null("revoked_at"))
                .col(at("created_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ux_refresh_tokens_hash",
            "refresh_tokens",
            &["token_hash"],
            true,
        )
        .await?;
        index(
            m,
            "ix_refresh_tokens_family",
            "refresh_tokens",
            &["family_id"],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table("email_verifications")
                .if_not_exists()
                .col(id())
                .col(uuid_col("user_id"))
                .col(text("token_hash"))
                .col(at("expires_at"))
                .col(at_null("used_at"))
                .col(at("created_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ux_email_verifications_hash",
            "email_verifications",
            &["token_hash"],
            true,
        )
        .await?;

        m.create_table(
            Table::create()
                .table("accounts")
                .if_not_exists()
                .col(id())
                .col(text("number"))
                .col(uuid_null("owner_id"))
                .col(
                    ColumnDef::new("is_system")
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .col(text_null("name"))
                .col(text("kind"))
                .col(text("currency"))
                .col(text("status"))
                .col(minor("balance_minor"))
                .col(minor("held_minor"))
                .col(minor("version"))
                .col(at("created_at"))
                .col(at("updated_at"))
                .check(Expr::col("held_minor").gte(0))
                .to_owned(),
        )
        .await?;
        index(m, "ux_accounts_number", "accounts", &["number"], true).await?;
        index(
            m,
            "ix_accounts_owner",
            "accounts",
            &["owner_id", "created_at"],
            false,
        )
        .await?;
        index(
            m,
            "ix_accounts_status",
            "accounts",
            &["status", "created_at"],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table("transfers")
                .if_not_exists()
                .col(id())
                .col(text("kind"))
                .col(text("status"))
                .col(ColumnDef::new("amount_minor").big_integer().not_null())
                .col(text("currency"))
                .col(uuid_null("source_account_id"))
                .col(uuid_null("destination_account_id"))
                .col(uuid_col("initiated_by"))
                .col(text_null("idempotency_key"))
                .col(text_null("request_fingerprint"))
                .col(text_null("memo"))
                .col(text_null("failure_reason"))
                .col(minor("hold_minor"))
                .col(uuid_null("reversal_of"))
                .col(at("enqueued_at"))
                .col(at("created_at"))
                .col(at_null("settled_at"))
                .check(Expr::col("amount_minor").gt(0))
                .to_owned(),
        )
        .await?;
        // The idempotency decision is made by this index: a concurrent
        // duplicate blocks on it until the original commits, then fails.
        index(
            m,
            "ux_transfers_idempotency",
            "transfers",
            &["initiated_by", "idempotency_key"],
            true,
        )
        .await?;
        index(
            m,
            "ix_transfers_source",
            "transfers",
            &["source_account_id", "created_at"],
            false,
        )
        .await?;
        index(
            m,
            "ix_transfers_destination",
            "transfers",
            &["destination_account_id", "created_at"],
            false,
        )
        .await?;
        index(
            m,
            "ix_transfers_status",
            "transfers",
            &["status", "enqueued_at"],
            false,
        )
        .await?;
        index(
            m,
            "ix_transfers_created",
            "transfers",
            &["created_at"],
            false,
        )
        .await?;
        index(
            m,
            "ux_transfers_reversal",
            "transfers",
            &["reversal_of"],
            true,
        )
        .await?;

        m.create_table(
            Table::create()
                .table("ledger_entries")
                .if_not_exists()
                .col(id())
                .col(uuid_col("transfer_id"))
                .col(text("leg"))
                .col(uuid_col("account_id"))
                .col(ColumnDef::new("amount_minor").big_integer().not_null())
                .col(text("currency"))
                .col(at("created_at"))
                .to_owned(),
        )
        .await?;
        // Posting twice for one transfer is impossible, whatever the queue does.
        index(
            m,
            "ux_ledger_entries_leg",
            "ledger_entries",
            &["transfer_id", "leg"],
            true,
        )
        .await?;
        index(
            m,
            "ix_ledger_entries_account",
            "ledger_entries",
            &["account_id", "created_at"],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table("notifications")
                .if_not_exists()
                .col(id())
                .col(uuid_col("user_id"))
                .col(text("kind"))
                .col(text("subject"))
                .col(ColumnDef::new("body").text().not_null())
                .col(text("email_status"))
                .col(text("dedup_key"))
                .col(
                    ColumnDef::new("email_attempts")
                        .integer()
                        .not_null()
                        .default(0),
                )
                .col(at("created_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ux_notifications_dedup",
            "notifications",
            &["user_id", "dedup_key"],
            true,
        )
        .await?;
        index(
            m,
            "ix_notifications_user",
            "notifications",
            &["user_id", "created_at"],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table("settings")
                .if_not_exists()
                .col(ColumnDef::new("key").string().not_null().primary_key())
                .col(ColumnDef::new("value").text().not_null())
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("audit_log")
                .if_not_exists()
                .col(id())
                .col(uuid_col("actor_id"))
                .col(text("action"))
                .col(uuid_null("target_id"))
                .col(text_null("reason"))
                .col(at("created_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_audit_log_created",
            "audit_log",
            &["created_at"],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table("contacts")
                .if_not_exists()
                .col(id())
                .col(uuid_col("owner_id"))
                .col(text("name"))
                .col(text("account_number"))
                .col(at("created_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_contacts_owner",
            "contacts",
            &["owner_id", "created_at"],
            false,
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "contacts",
            "audit_log",
            "settings",
            "notifications",
            "ledger_entries",
            "transfers",
            "accounts",
            "email_verifications",
            "refresh_tokens",
            "users",
        ] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
