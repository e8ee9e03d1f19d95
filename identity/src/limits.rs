//! Abuse limits: a per-source token bucket ([`governor`]) on `auth/login`, `auth/refresh` and
//! `auth/token`, and the lockout of identifiers that name no account.
//!
//! The lockout of real accounts lives in the database (it survives restarts). Failed logins for
//! identifiers that match no user are counted here with the same rule, so a locked "account"
//! looks the same whether or not it exists and the lockout does not reveal which names are real.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{LockoutConfig, RateLimitConfig};

/// Forget idle sources (and expired unknown-identifier records) every this many checks.
const SWEEP_EVERY: u64 = 4096;
/// Most unknown identifiers remembered; beyond this the oldest records are dropped.
const MAX_UNKNOWN: usize = 100_000;

/// The per-source rate limit.
pub struct SourceLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
}

impl SourceLimiter {
    /// A limiter for `config` (`per_minute` 0 disables it).
    pub fn new(config: &RateLimitConfig) -> Self {
        let limiter = NonZeroU32::new(config.per_minute).map(|per_minute| {
            let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst))
        });
        SourceLimiter {
            limiter,
            checks: AtomicU64::new(0),
        }
    }

    /// True if `source` may make one more request now.
    pub fn allow(&self, source: &str) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&source.to_owned()).is_ok()
    }
}

/// Failure times (ms) within the window, and the lock's end (ms), of one identifier.
type Record = (Vec<i64>, Option<i64>);

/// Failed logins of identifiers that name no account.
pub struct UnknownLockout {
    config: LockoutConfig,
    /// Keyed by the lowercase identifier.
    records: Mutex<HashMap<String, Record>>,
}

impl UnknownLockout {
    /// Counts with the same rule as real accounts.
    pub fn new(config: LockoutConfig) -> Self {
        UnknownLockout {
            config,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// The end of the lock on `identifier` (ms) if it is locked at `now_ms`.
    pub fn locked_until(&self, identifier: &str, now_ms: i64) -> Option<i64> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .get(identifier)
            .and_then(|(_, until)| *until)
            .filter(|&until| until > now_ms)
    }

    /// Records a failure; returns the lock's end if this failure locks the identifier.
    pub fn failed(&self, identifier: &str, now_ms: i64) -> Option<i64> {
        if self.config.max_failures == 0 {
            return None;
        }
        let window = ms(self.config.window_secs);
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_UNKNOWN {
            records.retain(|_, (times, until)| {
                until.is_some_and(|u| u > now_ms) || times.iter().any(|&t| t > now_ms - window)
            });
            if records.len() >= MAX_UNKNOWN {
                records.clear();
            }
        }
        let (times, until) = records.entry(identifier.to_owned()).or_default();
        times.retain(|&t| t > now_ms - window);
        times.push(now_ms);
        if times.len() >= self.config.max_failures as usize {
            times.clear();
            *until = Some(now_ms + ms(self.config.duration_secs));
            return *until;
        }
        None
    }
}

/// Seconds as milliseconds, saturating.
pub fn ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_is_limited_and_others_are_not() {
        let limiter = SourceLimiter::new(&RateLimitConfig {
            per_minute: 1,
            burst: 3,
        });
        assert!((0..3).all(|_| limiter.allow("a")));
        assert!(!limiter.allow("a"));
        assert!(limiter.allow("b"));
        let off = SourceLimiter::new(&RateLimitConfig {
            per_minute: 0,
            burst: 0,
        });
        assert!((0..100).all(|_| off.allow("a")));
    }

    #[test]
    fn unknown_identifiers_lock_like_accounts_and_unlock_after_the_duration() {
        let lockout = UnknownLockout::new(LockoutConfig {
            max_failures: 3,
            window_secs: 60,
            duration_secs: 10,
        });
        assert_eq!(lockout.failed("x", 0), None);
        assert_eq!(lockout.failed("x", 1), None);
        assert_eq!(lockout.failed("x", 2), Some(10_002));
        assert_eq!(lockout.locked_until("x", 5_000), Some(10_002));
        assert_eq!(lockout.locked_until("x", 10_002), None);
        assert_eq!(lockout.locked_until("y", 5_000), None);
    }
}
