//! [`Events`]: what identity tells the `event` bus. Revocations
//! (`org.plantd.identity.revoked`), permission changes (`org.plantd.identity.changed`) and every
//! audit row (`org.plantd.identity.audit.<action>`), as the SDK's [`Event`] in MessagePack with
//! `source` `org.plantd.Identity`; the payload types are the SDK verifier's own.
//!
//! A publishing thread owns the PUB socket (sockets are not `Sync`); requests hand it events over
//! a bounded queue and never wait for the bus. A full queue drops and counts.

use std::sync::mpsc::{self, SyncSender, TrySendError};

use plantd_worker_sdk::auth::events::{
    Changed, Revoked, AUDIT_TOPIC_PREFIX, CHANGED_TOPIC, REVOKED_TOPIC,
};
use plantd_worker_sdk::bus::{BusError, Event, Publisher, DEFAULT_HIGH_WATER_MARK};
use plantd_worker_sdk::curve::ClientCurve;
use prometheus::IntCounter;

use crate::ops::SERVICE_NAME;
use crate::store::audit::AuditRecord;

/// Events the hand-over queue holds before dropping.
const QUEUE_CAPACITY: usize = 65_536;

/// Publishes identity's events; cheap to clone. Disabled when no endpoint is configured.
#[derive(Clone)]
pub struct Events {
    queue: Option<SyncSender<(String, Event)>>,
    dropped: Option<IntCounter>,
}

impl Events {
    /// Connects to the bus frontend `endpoint` (empty: publishing disabled; a CURVE client with
    /// `curve`) and starts the publishing thread, which ends when every clone is dropped.
    pub fn connect(
        endpoint: &str,
        curve: Option<&ClientCurve>,
        published: IntCounter,
        dropped: IntCounter,
    ) -> Result<Self, BusError> {
        if endpoint.is_empty() {
            return Ok(Events {
                queue: None,
                dropped: None,
            });
        }
        let (publisher, _monitor) =
            Publisher::connect_with(endpoint, DEFAULT_HIGH_WATER_MARK, curve)?;
        let (tx, rx) = mpsc::sync_channel::<(String, Event)>(QUEUE_CAPACITY);
        let thread_dropped = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("identity-events".into())
            .spawn(move || {
                for (topic, event) in rx {
                    match publisher.publish_msgpack(&topic, &event) {
                        Ok(()) => published.inc(),
                        Err(e) => {
                            thread_dropped.inc();
                            tracing::debug!(error = %e, "identity event not published");
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the event thread; events will not be published");
        }
        Ok(Events {
            queue: Some(tx),
            dropped: Some(dropped),
        })
    }

    /// Events that go nowhere (tests, tools).
    pub fn disabled() -> Self {
        Events {
            queue: None,
            dropped: None,
        }
    }

    fn send(&self, topic: String, kind: &str, data: serde_json::Value) {
        let Some(queue) = &self.queue else {
            return;
        };
        let event = Event::new(SERVICE_NAME, kind, data);
        match queue.try_send((topic, event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if let Some(dropped) = &self.dropped {
                    dropped.inc();
                }
            }
        }
    }

    /// Sessions ended: verifiers refuse every token of them from now on.
    pub fn revoked(&self, sessions: Vec<String>, user_id: i64, reason: &str) {
        if sessions.is_empty() {
            return;
        }
        let data = Revoked {
            sessions,
            user_id: u64::try_from(user_id).ok(),
            reason: reason.to_owned(),
        };
        self.send(
            REVOKED_TOPIC.to_owned(),
            "identity.revoked",
            serde_json::to_value(data).unwrap_or_default(),
        );
    }

    /// The grants of these users changed: verifiers stop trusting their tokens' claims.
    pub fn changed(&self, user_ids: Vec<i64>) {
        let user_ids: Vec<u64> = user_ids
            .into_iter()
            .filter_map(|id| u64::try_from(id).ok())
            .collect();
        if user_ids.is_empty() {
            return;
        }
        self.send(
            CHANGED_TOPIC.to_owned(),
            "identity.changed",
            serde_json::to_value(Changed { user_ids }).unwrap_or_default(),
        );
    }

    /// One audit row, on `org.plantd.identity.audit.<action>`.
    pub fn audit(&self, record: &AuditRecord) {
        self.send(
            format!("{AUDIT_TOPIC_PREFIX}{}", record.action),
            "identity.audit",
            serde_json::to_value(record).unwrap_or_default(),
        );
    }
}
