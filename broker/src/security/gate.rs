//! [`Gate`]: the broker loop's per-message security checks, from the ZAP `User-Id` that libzmq
//! attaches to every message of a CURVE connection: may this key call this service, register
//! this service, is this worker message from the key that registered the worker; and the rate
//! limit. Without CURVE only the rate limit applies (per routing id).
//!
//! Cost per message with CURVE: reading the `User-Id` (a lookup in the message's metadata) and
//! one hash-map lookup of the 40-character key; nothing is allocated unless a check fails.

use plantd_worker_sdk::curve::user_id;
use plantd_worker_sdk::protocol::{ErrorCode, Frame};

use super::allow_list::View;
use super::audit::{Action, Audit, Refusal};
use super::policy::Right;
use super::rate::RequestLimiter;

/// Why a request was refused: the error reply to send.
pub struct Denied {
    /// `403` or `429`.
    pub code: ErrorCode,
    /// The reply's message.
    pub message: String,
}

/// A registration the key's policy does not allow (already audited).
#[derive(Debug)]
pub struct Refused;

/// The key a worker registered with, kept in its record (`None` without CURVE).
pub type BoundKey = Option<Box<str>>;

/// The loop's security state.
pub struct Gate {
    /// The allow list, when CURVE is on.
    allow: Option<View>,
    audit: Option<Audit>,
    limiter: RequestLimiter,
}

impl Gate {
    /// A gate enforcing `allow` (CURVE on) or nothing but `limiter` (CURVE off).
    pub fn new(allow: Option<View>, audit: Option<Audit>, limiter: RequestLimiter) -> Self {
        Gate {
            allow,
            audit,
            limiter,
        }
    }

    /// Whether CURVE is on.
    pub fn curve(&self) -> bool {
        self.allow.is_some()
    }

    /// Checks a client request for `service` that arrived with routing-id frame `id`.
    pub fn check_call(&mut self, id: &Frame, service: &[u8]) -> Result<(), Denied> {
        let Some(allow) = self.allow.as_mut() else {
            return self.rate(&id[..]);
        };
        let key = user_id(id);
        let entry = key.and_then(|k| allow.current().get(k));
        let Some(entry) = entry else {
            let refusal = unlisted(Action::Call, key, service);
            return Err(self.deny(refusal, ErrorCode::Forbidden));
        };
        if !entry.policy.allows(Right::Call, service) {
            let name = entry.name.to_string();
            let refusal = Refusal {
                action: Action::Call,
                reason: format!("key {name} may not call {}", lossy(service)),
                name: Some(name),
                key: key.map(str::to_owned),
                target: lossy(service),
            };
            return Err(self.deny(refusal, ErrorCode::Forbidden));
        }
        self.rate(key.unwrap_or_default().as_bytes())
    }

    /// Checks a READY for `service` from routing-id frame `id`: `Ok` with the key to bind the
    /// worker record to, or `Err` (audited) if the key may not register it.
    pub fn check_register(&mut self, id: &Frame, service: &[u8]) -> Result<BoundKey, Refused> {
        let Some(allow) = self.allow.as_mut() else {
            return Ok(None);
        };
        let key = user_id(id);
        let refusal = match key.and_then(|k| allow.current().get(k)) {
            Some(entry) if entry.policy.allows(Right::Register, service) => {
                return Ok(key.map(Into::into));
            }
            Some(entry) => Refusal {
                action: Action::Register,
                reason: format!("key {} may not register {}", entry.name, lossy(service)),
                name: Some(entry.name.to_string()),
                key: key.map(str::to_owned),
                target: lossy(service),
            },
            None => unlisted(Action::Register, key, service),
        };
        self.audit(refusal);
        Err(Refused)
    }

    /// Whether a message from routing-id frame `id` to a worker registered with `bound` comes
    /// from that same key (always true without CURVE). A mismatch is audited as a takeover.
    pub fn same_worker_key(&mut self, id: &Frame, bound: &BoundKey, service: &[u8]) -> bool {
        let Some(allow) = self.allow.as_mut() else {
            return true;
        };
        let key = user_id(id);
        // Still listed, too: a key removed from the list loses its workers.
        if key.is_some()
            && key == bound.as_deref()
            && key.and_then(|k| allow.current().get(k)).is_some()
        {
            return true;
        }
        let name = key
            .and_then(|k| allow.current().get(k))
            .map(|e| e.name.to_string());
        let (action, reason) = if key == bound.as_deref() {
            (
                Action::Register,
                "the key of this worker is no longer on the allow list".to_owned(),
            )
        } else {
            (
                Action::Takeover,
                format!(
                    "message on the routing id of a worker of {} registered by another key",
                    lossy(service)
                ),
            )
        };
        self.audit(Refusal {
            action,
            name,
            key: key.map(str::to_owned),
            target: lossy(service),
            reason,
        });
        false
    }

    /// Forgets rate-limit state of idle clients (on the heartbeat tick).
    pub fn prune(&self) {
        self.limiter.prune();
    }

    fn rate(&self, client: &[u8]) -> Result<(), Denied> {
        if self.limiter.admit(client) {
            Ok(())
        } else {
            Err(Denied {
                code: ErrorCode::RateLimited,
                message: "too many requests: over the broker's rate_limit".into(),
            })
        }
    }

    fn deny(&self, refusal: Refusal, code: ErrorCode) -> Denied {
        let message = refusal.reason.clone();
        self.audit(refusal);
        Denied { code, message }
    }

    fn audit(&self, refusal: Refusal) {
        if let Some(audit) = &self.audit {
            audit.refused(refusal);
        }
    }
}

fn unlisted(action: Action, key: Option<&str>, target: &[u8]) -> Refusal {
    Refusal {
        action,
        name: None,
        key: key.map(str::to_owned),
        target: lossy(target),
        reason: "this key is not (or no longer) on the broker's allow list".into(),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
