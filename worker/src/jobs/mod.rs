//! One module per job, named verb_noun.

pub mod recover_pending;
pub mod settle_transfer;
