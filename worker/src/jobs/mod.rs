//! One module per job, named verb_noun.

pub mod recover_pending;
pub mod send_email;
pub mod settle_transfer;
