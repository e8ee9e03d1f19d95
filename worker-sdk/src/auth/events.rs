//! Identity's events as verifiers read them: the topics, their payloads, and [`listen`], the
//! thread that subscribes to the `event` bus, applies revocations and permission changes to a
//! [`TokenVerifier`], catches up from identity's notice log what the bus lost, and keeps the
//! verifier's public keys fresh.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{AuthError, TokenVerifier};
use crate::bus::{Event, Subscriber};
use crate::curve::ClientCurve;
use crate::Shutdown;

/// Sessions ended: every token of them is refused from now on.
pub const REVOKED_TOPIC: &str = "org.plantd.identity.revoked";
/// Users whose roles or permissions changed.
pub const CHANGED_TOPIC: &str = "org.plantd.identity.changed";
/// Prefix of identity's audit events (`org.plantd.identity.audit.<action>`).
pub const AUDIT_TOPIC_PREFIX: &str = "org.plantd.identity.audit.";

/// The `data` of a [`REVOKED_TOPIC`] event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Every session ended.
    #[serde(default)]
    pub sessions: Vec<String>,
    /// Whose sessions they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// Why (`logout`, `refresh_reuse`, `deactivated`, `password_changed`, ...).
    #[serde(default)]
    pub reason: String,
}

/// The `data` of a [`CHANGED_TOPIC`] event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// Users whose grants changed.
    #[serde(default)]
    pub user_ids: Vec<u64>,
}

impl TokenVerifier {
    /// Applies one event from identity; other topics are ignored. Returns whether it applied.
    pub fn apply_event(&self, topic: &str, event: &Event) -> bool {
        self.apply_notice(topic, &event.data, event.time.timestamp())
            .is_some()
    }

    /// Applies a revocation or permission change (`data` of `topic`, made at Unix time `at`), as
    /// an event or a notice carries it: `None` if it is neither or malformed, else whether it was
    /// news.
    pub(super) fn apply_notice(
        &self,
        topic: &str,
        data: &serde_json::Value,
        at: i64,
    ) -> Option<bool> {
        if topic == REVOKED_TOPIC {
            match Revoked::deserialize(data) {
                Ok(revoked) => return Some(self.revoke_sessions(&revoked.sessions)),
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed revocation"),
            }
        } else if topic == CHANGED_TOPIC {
            match Changed::deserialize(data) {
                Ok(changed) => return Some(self.grants_changed(&changed.user_ids, at)),
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed permission change"),
            }
        }
        None
    }
}

/// How long the listener waits for an event before checking shutdown, connection and keys.
const POLL: Duration = Duration::from_millis(200);
/// Until keys are first obtained, the listener asks this often.
const FIRST_FETCH_RETRY: Duration = Duration::from_secs(1);
/// How often the listener reads identity's notice log: the longest a revocation the bus lost
/// stays unknown here.
pub const CATCH_UP_INTERVAL: Duration = Duration::from_secs(2);

/// Starts the thread that feeds `verifier` from the event bus backend at `endpoint` (empty: no
/// subscription; a CURVE client with `curve`), catches up from identity's notice log every
/// [`CATCH_UP_INTERVAL`] and refreshes its keys every `key_refresh`. Ends on `shutdown`.
pub fn listen(
    verifier: TokenVerifier,
    endpoint: &str,
    curve: Option<&ClientCurve>,
    key_refresh: Duration,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, AuthError> {
    let subscriber = if endpoint.is_empty() {
        None
    } else {
        let cannot = |e| AuthError::Unavailable(format!("cannot subscribe to {endpoint}: {e}"));
        let (subscriber, monitor) = Subscriber::connect_with(endpoint, 0, curve).map_err(cannot)?;
        subscriber
            .subscribe("org.plantd.identity.")
            .map_err(cannot)?;
        Some((subscriber, monitor))
    };
    std::thread::Builder::new()
        .name("auth-events".into())
        .spawn(move || run(verifier, subscriber, key_refresh, shutdown))
        .map_err(|e| AuthError::Unavailable(format!("cannot start the auth listener: {e}")))
}

fn run(
    verifier: TokenVerifier,
    mut subscriber: Option<(Subscriber, crate::monitor::ConnectionMonitor)>,
    key_refresh: Duration,
    shutdown: Shutdown,
) {
    let mut next_fetch = Instant::now();
    let mut next_catch_up = Instant::now();
    let mut warned = false;
    let mut catch_up_warned = false;
    while !shutdown.is_cancelled() {
        // Before the first key fetch, so no token is accepted before known revocations are.
        if Instant::now() >= next_catch_up {
            match verifier.catch_up() {
                Ok(0) => {}
                Ok(news) => tracing::debug!(news, "caught up on identity's notices"),
                Err(e) if !catch_up_warned => {
                    tracing::warn!(error = %e, "cannot read identity's notice log yet; will retry");
                    catch_up_warned = true;
                }
                Err(_) => {}
            }
            next_catch_up = Instant::now() + CATCH_UP_INTERVAL;
        }
        if Instant::now() >= next_fetch {
            match verifier.refresh_keys() {
                Ok(_) => next_fetch = Instant::now() + key_refresh,
                Err(e) => {
                    let loaded = verifier.stats().keys_loaded;
                    if !warned {
                        tracing::warn!(error = %e, "cannot fetch identity's public keys yet; will retry");
                        warned = true;
                    }
                    next_fetch = Instant::now()
                        + if loaded {
                            key_refresh
                        } else {
                            FIRST_FETCH_RETRY
                        };
                }
            }
        }
        let Some((sub, monitor)) = subscriber.as_mut() else {
            let until = next_fetch.min(next_catch_up).min(Instant::now() + POLL);
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            continue;
        };
        verifier.set_events_connected(monitor.is_connected());
        match sub.recv_timeout(POLL) {
            Ok(Some(message)) => match message.decode_body::<Event>() {
                Ok(event) => {
                    verifier.apply_event(&message.topic, &event);
                }
                Err(e) => {
                    tracing::warn!(topic = %message.topic, error = %e, "ignoring an undecodable identity event")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "auth event subscriber failed");
                std::thread::sleep(POLL);
            }
        }
    }
}
