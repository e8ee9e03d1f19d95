//! Rate-limited `warn` summaries of input the broker dropped, so a flood of garbage shows in the
//! log as one line a minute instead of one line per message (or none at all).

use std::time::{Duration, Instant};

use tracing::warn;

use crate::metrics::Metrics;

/// How often at most a summary is logged.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// Counts already reported, and when the next summary may be logged.
#[derive(Debug)]
pub struct DropSummary {
    malformed: u64,
    unknown_worker: u64,
    next_at: Instant,
}

impl DropSummary {
    /// A summary that reports nothing before `now + SUMMARY_INTERVAL`.
    pub fn new(now: Instant) -> Self {
        DropSummary {
            malformed: 0,
            unknown_worker: 0,
            next_at: now + SUMMARY_INTERVAL,
        }
    }

    /// Logs what was dropped since the last summary, if anything was and the interval is over.
    /// Returns whether it logged.
    pub fn maybe_log(&mut self, metrics: &Metrics, now: Instant) -> bool {
        if now < self.next_at {
            return false;
        }
        let malformed = metrics.malformed.get();
        let unknown_worker = metrics.unknown_worker_messages.get();
        let (new_malformed, new_unknown) = (
            malformed - self.malformed,
            unknown_worker - self.unknown_worker,
        );
        if new_malformed == 0 && new_unknown == 0 {
            return false;
        }
        warn!(
            malformed = new_malformed,
            unknown_worker = new_unknown,
            "dropped {new_malformed} malformed messages and {new_unknown} worker messages from \
             unregistered peers in the last {} s (counters: plantd_broker_malformed_messages_total, \
             plantd_broker_unknown_worker_messages_total)",
            SUMMARY_INTERVAL.as_secs()
        );
        self.malformed = malformed;
        self.unknown_worker = unknown_worker;
        self.next_at = now + SUMMARY_INTERVAL;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_at_most_once_per_interval_and_only_when_something_was_dropped() {
        let metrics = Metrics::new().unwrap();
        let start = Instant::now();
        let mut summary = DropSummary::new(start);
        metrics.malformed.inc_by(1000);
        assert!(
            !summary.maybe_log(&metrics, start),
            "not before the interval"
        );
        let later = start + SUMMARY_INTERVAL;
        assert!(summary.maybe_log(&metrics, later));
        metrics.malformed.inc();
        assert!(!summary.maybe_log(&metrics, later), "once per interval");
        let quiet = later + SUMMARY_INTERVAL;
        assert!(summary.maybe_log(&metrics, quiet), "the one new drop");
        assert!(
            !summary.maybe_log(&metrics, quiet + SUMMARY_INTERVAL),
            "nothing new, nothing logged"
        );
    }
}
