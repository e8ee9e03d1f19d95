//! [`RetryPolicy`]: how many times a request is sent and how long each attempt waits (the
//! zguide's Lazy Pirate), and [`Attempts`], the count kept for one request in flight.
//!
//! An attempt ends in one of three ways: a reply (done), its timeout, or its connection dropping
//! (the broker died or restarted: the request can no longer be answered). In the last two cases
//! the attempt's socket is closed, so a late reply can reach nobody, and if attempts remain the
//! request is sent again on a fresh socket, which ZeroMQ connects as soon as the broker is back.

use std::time::Duration;

use super::{ClientError, DEFAULT_RETRIES, DEFAULT_TIMEOUT};
use crate::Frames;

/// How many times a request is sent, and how long each attempt waits for a reply.
///
/// The default is one attempt of [`DEFAULT_TIMEOUT`]: a resend may run a request twice, so
/// only opt in for idempotent requests. A plain request then fails after at most
/// [`worst_case`](Self::worst_case) = `attempts × attempt_timeout` (sooner when attempts end by
/// a dropped connection). A streamed request is never resent once a PARTIAL arrived (its
/// replies would repeat); each of its reply messages may take up to `attempt_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    attempts: u32,
    attempt_timeout: Duration,
}

impl RetryPolicy {
    /// `attempts` sends in all, the first included (0 counts as 1), each waiting up to
    /// `attempt_timeout` for a reply.
    pub fn new(attempts: u32, attempt_timeout: Duration) -> Self {
        RetryPolicy {
            attempts: attempts.max(1),
            attempt_timeout,
        }
    }

    /// One attempt: the request is never resent.
    pub fn once(attempt_timeout: Duration) -> Self {
        RetryPolicy::new(1, attempt_timeout)
    }

    /// This policy with `retries` resends after the first attempt.
    pub fn with_retries(self, retries: u32) -> Self {
        RetryPolicy::new(retries.saturating_add(1), self.attempt_timeout)
    }

    /// This policy with another per-attempt timeout.
    pub fn with_attempt_timeout(self, attempt_timeout: Duration) -> Self {
        RetryPolicy::new(self.attempts, attempt_timeout)
    }

    /// Sends in all, the first included (at least 1).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Resends after the first attempt.
    pub fn retries(&self) -> u32 {
        self.attempts - 1
    }

    /// How long one attempt waits for a reply (for a streamed request: for each reply message).
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// The longest a plain request can take before it fails: every attempt timing out.
    pub fn worst_case(&self) -> Duration {
        self.attempt_timeout.saturating_mul(self.attempts)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::once(DEFAULT_TIMEOUT).with_retries(DEFAULT_RETRIES)
    }
}

/// The attempts of one request in flight.
pub(crate) struct Attempts {
    resends_left: u32,
    replied: bool,
}

impl Attempts {
    /// The first attempt of a request under `policy` (about to be sent).
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        Attempts {
            resends_left: policy.retries(),
            replied: false,
        }
    }

    /// The body for the next send: a copy while a resend may follow, else `body` itself.
    pub(crate) fn body_to_send(&self, body: &mut Frames) -> Frames {
        if self.resends_left > 0 {
            body.clone()
        } else {
            std::mem::take(body)
        }
    }

    /// A PARTIAL arrived: the request is not resent from now on.
    pub(crate) fn replied(&mut self) {
        self.replied = true;
    }

    /// The current attempt failed with `error` (its socket already closed): `Ok` to send the
    /// request again, or `error` back when no attempt is left.
    pub(crate) fn retry_after(&mut self, error: ClientError) -> Result<(), ClientError> {
        if self.replied || self.resends_left == 0 {
            return Err(error);
        }
        self.resends_left -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_counts_attempts_and_bounds_the_worst_case() {
        let policy = RetryPolicy::new(3, Duration::from_millis(200));
        assert_eq!((policy.attempts(), policy.retries()), (3, 2));
        assert_eq!(policy.worst_case(), Duration::from_millis(600));
        assert_eq!(RetryPolicy::new(0, Duration::ZERO).attempts(), 1);
        let default = RetryPolicy::default();
        assert_eq!(
            (default.attempts(), default.attempt_timeout()),
            (1, DEFAULT_TIMEOUT)
        );
        assert_eq!(default.with_retries(2).attempts(), 3);
        assert_eq!(
            policy.with_attempt_timeout(Duration::from_secs(1)),
            RetryPolicy::new(3, Duration::from_secs(1))
        );
    }

    #[test]
    fn attempts_resend_until_used_up_and_never_after_a_partial() {
        let mut attempts = Attempts::new(&RetryPolicy::new(2, DEFAULT_TIMEOUT));
        let mut body = vec![b"x".to_vec()];
        assert_eq!(attempts.body_to_send(&mut body), vec![b"x".to_vec()]);
        assert_eq!(body.len(), 1, "kept for the resend");
        assert!(attempts.retry_after(ClientError::Timeout).is_ok());
        assert_eq!(attempts.body_to_send(&mut body), vec![b"x".to_vec()]);
        assert!(body.is_empty(), "the last attempt takes the body");
        assert!(matches!(
            attempts.retry_after(ClientError::BrokerDisconnected),
            Err(ClientError::BrokerDisconnected)
        ));

        let mut streamed = Attempts::new(&RetryPolicy::new(5, DEFAULT_TIMEOUT));
        streamed.replied();
        assert!(matches!(
            streamed.retry_after(ClientError::Timeout),
            Err(ClientError::Timeout)
        ));
    }
}
