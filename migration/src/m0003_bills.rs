use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("utility_providers")
                .if_not_exists()
                .col(ColumnDef::new("id").uuid().not_null().primary_key())
                .col(ColumnDef::new("name").string().not_null())
                .col(ColumnDef::new("kind").string().not_null())
                .col(ColumnDef::new("currency").string().not_null())
                .col(ColumnDef::new("api_base_url").string().not_null())
                .col(ColumnDef::new("settlement_account_id").uuid().not_null())
                .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("utility_links")
                .if_not_exists()
                .col(ColumnDef::new("id").uuid().not_null().primary_key())
                .col(ColumnDef::new("user_id").uuid().not_null())
                .col(ColumnDef::new("provider_id").uuid().not_null())
                .col(ColumnDef::new("customer_number").string().not_null())
                .col(ColumnDef::new("nickname").string().null())
                .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("ux_utility_links_customer")
                .table("utility_links")
                .col("user_id")
                .col("provider_id")
                .col("customer_number")
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("bill_payments")
                .if_not_exists()
                .col(ColumnDef::new("id").uuid().not_null().primary_key())
                .col(ColumnDef::new("provider_id").uuid().not_null())
                .col(ColumnDef::new("link_id").uuid().not_null())
                .col(ColumnDef::new("reference").string().not_null())
                .col(ColumnDef::new("transfer_id").uuid().not_null())
                .col(ColumnDef::new("amount_minor").big_integer().not_null())
                .col(ColumnDef::new("currency").string().not_null())
                .col(ColumnDef::new("reported_at").timestamp_with_time_zone().null())
                .col(ColumnDef::new("report_attempts").integer().not_null().default(0))
                .col(ColumnDef::new("next_report_at").timestamp_with_time_zone().null())
                .col(ColumnDef::new("last_error").string().null())
                .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        // A bill is paid at most once: the second payBill fails on this index.
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("ux_bill_payments_bill")
                .table("bill_payments")
                .col("provider_id")
                .col("reference")
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("ux_bill_payments_transfer")
                .table("bill_payments")
                .col("transfer_id")
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["bill_payments", "utility_links", "utility_providers"] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
