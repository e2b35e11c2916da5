//! One module per job, named verb_noun.

pub mod recover_pending;
pub mod refresh_bills;
pub mod report_bill_payment;
pub mod send_email;
pub mod settle_transfer;
