//! Process-wide counters exported on `/metrics`.

use std::sync::atomic::AtomicI64;

/// Open subscription WebSockets on this process.
pub static SUBSCRIPTION_SOCKETS: AtomicI64 = AtomicI64::new(0);
