//! [`Brokers`]: the broker endpoints one client may use, and which of them it uses now
//! (client failover across the N brokers of DESIGN.md §8).
//!
//! Every worker is registered with every broker, so any broker can answer any request. A client
//! sends each request to its current broker and moves on to the next one in the list when that
//! broker fails it:
//!
//! - **Down**: a request that has not gone out because its connection did not come up within
//!   [`FAILOVER_AFTER`] moves to the next broker. Nothing was sent, so this is safe for any request
//!   and uses none of its attempts.
//! - **Dead or silent with the request sent**: the attempt failed (its connection dropped, or it
//!   timed out). Whether it is sent again is the [`RetryPolicy`](super::RetryPolicy)'s decision,
//!   as with one broker (a resend may run it twice); the resend goes to the next broker.
//!
//! The move is shared by every request of the client (and its clones): later requests go straight
//! to the broker that works. The client stays there until that one fails in turn (no moving back).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::ClientError;

/// How long a request waits for its broker's connection before it moves to the next broker
/// (when the client has several). A broker that is up connects in about a millisecond; this
/// leaves room for a loaded machine and a CURVE handshake, and for the authentication probe
/// (`probe.rs`) to speak first.
pub(crate) const FAILOVER_AFTER: Duration = Duration::from_secs(1);

/// The broker endpoints of one client, and the index of the one requests go to now.
#[derive(Debug)]
pub(crate) struct Brokers {
    endpoints: Vec<String>,
    current: AtomicUsize,
}

impl Brokers {
    /// The brokers `setting` names: one endpoint, or several separated by commas (the same form
    /// as a worker's `broker_endpoint`). Empty items are skipped; no endpoint at all is an error.
    pub(crate) fn parse(setting: &str) -> Result<Brokers, ClientError> {
        let endpoints = crate::config::broker_endpoints(setting);
        if endpoints.is_empty() {
            return Err(ClientError::InvalidEndpoint(format!(
                "{setting:?}: no broker endpoint"
            )));
        }
        Ok(Brokers {
            endpoints,
            current: AtomicUsize::new(0),
        })
    }

    /// Every endpoint, in the order failover walks them.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Whether there is another broker to move to.
    pub(crate) fn several(&self) -> bool {
        self.endpoints.len() > 1
    }

    /// The index of the broker requests go to now.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// The endpoint of the broker at `index`.
    pub(crate) fn endpoint(&self, index: usize) -> &str {
        &self.endpoints[index % self.endpoints.len()]
    }

    /// The broker at `index` failed a request: the client moves to the next one, unless another
    /// request moved it already (then it stays where that one put it). Returns the broker to use.
    pub(crate) fn failed(&self, index: usize) -> usize {
        let next = (index + 1) % self.endpoints.len();
        match self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => next,
            Err(now) => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_parses_and_failover_walks_it_round_once_per_failure() {
        let brokers = Brokers::parse(" tcp://a:1, tcp://b:1,,tcp://c:1").unwrap();
        assert_eq!(brokers.endpoints(), ["tcp://a:1", "tcp://b:1", "tcp://c:1"]);
        assert!(brokers.several());
        assert_eq!(brokers.current(), 0);
        assert_eq!(brokers.failed(0), 1);
        // A second request that also failed on broker 0 does not skip broker 1.
        assert_eq!(brokers.failed(0), 1);
        assert_eq!(brokers.failed(1), 2);
        assert_eq!(brokers.failed(2), 0);
        assert_eq!(brokers.endpoint(brokers.current()), "tcp://a:1");

        let one = Brokers::parse("tcp://a:1").unwrap();
        assert!(!one.several());
        assert_eq!(one.failed(0), 0);
        assert!(matches!(
            Brokers::parse(" , "),
            Err(ClientError::InvalidEndpoint(_))
        ));
    }
}
