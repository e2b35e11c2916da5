//! Reports a settled bill payment to its provider (`POST /payments`).
//!
//! The payment row carries a stable `paymentId`, so repeating the report is
//! harmless; failures are rescheduled in the row and found again by the
//! sweep until the provider accepts.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use ledger::events::LedgerEvent;
use ledger::jobs::ReportBillPayment;
use tracing::Instrument;

use crate::Jobs;

pub async fn handle(job: ReportBillPayment, jobs: Data<Arc<Jobs>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("report_bill_payment", bill_payment.id = %job.payment_id);
    async move {
        let Some(p) = ledger::bills::payment(&jobs.db, job.payment_id).await? else {
            return Ok(());
        };
        if p.reported_at.is_some() {
            return Ok(());
        }
        let provider = ledger::bills::provider(&jobs.db, p.provider_id).await?;
        match ledger::bills::report_payment(&provider.api_base_url, &p).await {
            Ok(()) => {
                ledger::bills::mark_reported(&jobs.db, p.id).await?;
                count_report("reported");
                tracing::info!("bill payment reported");
                if let Some(link) = ledger::bills::link_by_id(&jobs.db, p.link_id).await? {
                    jobs.events
                        .publish(vec![LedgerEvent::BillsChanged {
                            user_id: link.user_id,
                        }])
                        .await;
                }
            }
            Err(e) => {
                let msg = format!("{e:?}");
                tracing::warn!(error = %msg, "bill payment report failed; rescheduled");
                ledger::bills::report_failed(&jobs.db, &p, &msg).await?;
                count_report("retry");
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
    .inspect_err(|_| crate::jobs::count_job_error(queue::REPORTS_QUEUE))
}

/// `corebank_bill_reports_total{outcome}`: reported, or retry (rescheduled
/// in the payment row; reports are retried until the provider accepts).
fn count_report(outcome: &str) {
    queue::metrics::count(
        "corebank_bill_reports_total",
        &format!("outcome=\"{outcome}\""),
    );
}
