//! [`BusPublisher`]: change notifications on the `state` bus.
//!
//! The writer thread hands each commit's changes over a bounded queue to a publishing thread, which
//! owns the PUB socket, encodes each change as a named MessagePack map and publishes it under
//! `org.plantd.state.<scope>`. When the queue is full the changes are dropped and counted: a slow or
//! absent bus never slows or fails a write. PUB itself drops at its high-water mark.

use std::sync::mpsc::{self, SyncSender, TrySendError};

use plantd_worker_sdk::bus::{BusError, Publisher};
use prometheus::IntCounter;
use serde::Serialize;

use crate::changes::{ChangePublisher, StateChange};

/// Commits (not changes) the hand-over queue holds before dropping.
const QUEUE_CAPACITY: usize = 4096;
/// Messages the PUB socket queues towards the broker before dropping.
const HIGH_WATER_MARK: i32 = 100_000;

/// The MessagePack payload of one change.
#[derive(Debug, Serialize)]
pub struct ChangeMessage<'a> {
    /// Scope that changed.
    pub scope: &'a str,
    /// Key that changed; absent (nil) for `create-scope` / `delete-scope`.
    pub key: Option<&'a str>,
    /// The new value (any JSON value, as native MessagePack); nil for deletions.
    pub value: Option<serde_json::Value>,
    /// True for `delete` and `delete-scope`.
    pub deleted: bool,
    /// Commit time, RFC 3339 UTC with milliseconds.
    pub time: String,
}

impl<'a> ChangeMessage<'a> {
    /// The payload for `change`.
    pub fn of(change: &'a StateChange) -> Self {
        let time = chrono::DateTime::from_timestamp_millis(change.time_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        ChangeMessage {
            scope: &change.scope,
            key: change.key.as_deref(),
            // Values were validated as JSON on the way in.
            value: change
                .value_json
                .as_deref()
                .and_then(|v| serde_json::from_str(v).ok()),
            deleted: change.deleted,
            time,
        }
    }
}

/// Publishes committed changes on a bus frontend without ever blocking the writer.
pub struct BusPublisher {
    queue: SyncSender<Vec<StateChange>>,
    dropped: IntCounter,
}

impl BusPublisher {
    /// Connects to the bus frontend `endpoint` (ZeroMQ reconnects by itself if the broker is not up
    /// yet) and starts the publishing thread, which ends when this publisher is dropped.
    pub fn connect(
        endpoint: &str,
        curve: Option<&plantd_worker_sdk::curve::ClientCurve>,
        published: IntCounter,
        dropped: IntCounter,
    ) -> Result<Self, BusError> {
        let (publisher, _monitor) = Publisher::connect_with(endpoint, HIGH_WATER_MARK, curve)?;
        let (tx, rx) = mpsc::sync_channel::<Vec<StateChange>>(QUEUE_CAPACITY);
        let thread_dropped = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("state-bus".into())
            .spawn(move || {
                for changes in rx {
                    for change in &changes {
                        let sent =
                            publisher.publish_msgpack(&change.topic(), &ChangeMessage::of(change));
                        match sent {
                            Ok(()) => published.inc(),
                            Err(_) => thread_dropped.inc(),
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the state bus thread; changes will not be published");
        }
        Ok(BusPublisher { queue: tx, dropped })
    }
}

impl ChangePublisher for BusPublisher {
    fn publish(&self, changes: Vec<StateChange>) {
        match self.queue.try_send(changes) {
            Ok(()) => {}
            Err(TrySendError::Full(changes)) | Err(TrySendError::Disconnected(changes)) => {
                self.dropped.inc_by(changes.len() as u64);
            }
        }
    }
}
