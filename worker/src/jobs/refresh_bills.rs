//! Fetches one linked utility account's bills into the cache.
//!
//! Retried here with backoff (1 s, 2 s, 4 s); if the provider is still
//! down the cache keeps serving the last good bills with their `fetchedAt`,
//! and the periodic refresh tries again later.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};
use ledger::bills::{CachedBills, ProviderError};
use ledger::events::LedgerEvent;
use ledger::jobs::RefreshBills;
use tracing::Instrument;

use crate::Jobs;

const ATTEMPTS: u32 = 3;

pub async fn handle(job: RefreshBills, jobs: Data<Arc<Jobs>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("refresh_bills", utility_link.id = %job.link_id);
    async move {
        let Some(link) = ledger::bills::link_by_id(&jobs.db, job.link_id).await? else {
            return Ok(());
        };
        let provider = ledger::bills::provider(&jobs.db, link.provider_id).await?;
        for attempt in 1..=ATTEMPTS {
            match ledger::bills::fetch_bills(&provider.api_base_url, &link.customer_number).await {
                Ok(bills) => {
                    let cached = CachedBills {
                        fetched_at: chrono::Utc::now(),
                        bills,
                    };
                    jobs.bills.put(link.id, &cached).await;
                    jobs.events
                        .publish(vec![LedgerEvent::BillsChanged {
                            user_id: link.user_id,
                        }])
                        .await;
                    return Ok(());
                }
                Err(ProviderError::NotFound) => {
                    tracing::warn!("provider no longer knows this customer number");
                    return Ok(());
                }
                Err(ProviderError::Unavailable(e) | ProviderError::Rejected(e)) => {
                    tracing::warn!(attempt, error = %e, "bill refresh failed");
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                    }
                }
            }
        }
        // Still notify: subscribers learn the refresh ended (with old data).
        jobs.events
            .publish(vec![LedgerEvent::BillsChanged {
                user_id: link.user_id,
            }])
            .await;
        Ok(())
    }
    .instrument(span)
    .await
    .inspect_err(|_| crate::jobs::count_job_error(queue::BILLS_QUEUE))
}
