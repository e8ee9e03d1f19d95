//! The request rate limit (`rate_limit.*`): each CURVE key (each connection, by routing id, when
//! CURVE is off) may send `requests_per_second` requests on average, in bursts of up to `burst`;
//! beyond that the broker answers `429` without queueing anything. GCRA from `governor`.
//!
//! The limiter is keyed by a 64-bit hash of the key (or routing id) so checking costs no
//! allocation; two keys sharing a hash would share a bucket, which 64 bits make a non-event.
//! Keys idle long enough to be back at a full bucket are forgotten on every heartbeat tick.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;

use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// The `rate_limit` section of the broker configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitSettings {
    /// Requests per second each client key (or connection) may send on average; `0`: no limit.
    pub requests_per_second: u32,
    /// Requests it may send at once above the average; `0`: the same as `requests_per_second`.
    pub burst: u32,
}

impl RateLimitSettings {
    fn quota(&self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.requests_per_second)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(rate);
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

type Keyed =
    RateLimiter<u64, governor::state::keyed::HashMapStateStore<u64>, governor::clock::DefaultClock>;

/// The limiter of the broker loop.
pub struct RequestLimiter {
    limiter: Option<Keyed>,
}

impl RequestLimiter {
    /// A limiter with `settings` (one that admits everything when the rate is 0).
    pub fn new(settings: &RateLimitSettings) -> Self {
        RequestLimiter {
            limiter: settings.quota().map(RateLimiter::hashmap),
        }
    }

    /// Whether a request from `client` (its key, or its routing id) may go on now.
    pub fn admit(&self, client: &[u8]) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let mut hasher = DefaultHasher::new();
        client.hash(&mut hasher);
        limiter.check_key(&hasher.finish()).is_ok()
    }

    /// Forgets clients whose bucket is full again.
    pub fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_pass_then_the_rate_holds_per_client() {
        let limiter = RequestLimiter::new(&RateLimitSettings {
            requests_per_second: 1,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(limiter.admit(b"a"));
        }
        assert!(!limiter.admit(b"a"), "burst used up");
        assert!(limiter.admit(b"b"), "per client");
        limiter.prune();
        let off = RequestLimiter::new(&RateLimitSettings::default());
        assert!((0..10_000).all(|_| off.admit(b"a")));
    }
}
