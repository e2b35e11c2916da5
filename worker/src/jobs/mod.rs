//! One module per job, named verb_noun.

pub mod recover_pending;
pub mod refresh_bills;
pub mod report_bill_payment;
pub mod send_email;
pub mod settle_transfer;

/// `corebank_job_errors_total{queue}`: a handler returned an error, so
/// apalis will retry the job (Redis: up to attempt 25, then its dead set).
pub fn count_job_error(name: &str) {
    queue::metrics::count("corebank_job_errors_total", &format!("queue=\"{name}\""));
}
