use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{PollSnapshot, PollStrategy};

/// Wakes an idle worker every `period` so it fetches again.
///
/// apalis only re-fetches on its heartbeat (30 s by default) unless a poll
/// strategy wakes it. The stock interval strategy can stall because it does
/// not poll its next delay; this one drains its interval until it is pending,
/// which registers the waker for the next tick.
pub struct Tick {
    interval: tokio::time::Interval,
}

impl Tick {
    pub fn every(period: Duration) -> Tick {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Tick { interval }
    }
}

impl PollStrategy for Tick {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut fired = false;
        while self.interval.poll_tick(cx).is_ready() {
            fired = true;
        }
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
