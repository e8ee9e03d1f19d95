//! The broker's security audit trail: every refusal (handshake, registration, call, bus publish
//! or subscribe, routing-id takeover) is counted in `/metrics`, logged with the key's name, and
//! published on the `event` bus as `org.plantd.broker.audit.<action>` (a `worker_sdk::bus::Event`,
//! MessagePack), so the logger keeps one trail (DESIGN.md §9).
//!
//! Events enter the `event` bus's proxy directly, over an inproc PUSH to [`AUDIT_INJECT`] that the
//! proxy forwards to subscribers (`bus::secure`): no PUB connection that might not be up yet when
//! the first refusal happens, and no key of the broker's own on its allow list.
//!
//! Refusals happen on the broker loop, the bus proxies and the ZAP handler, all of which must not
//! block: [`Audit::refused`] counts and hands the event to the audit thread through a bounded
//! channel (dropped, and counted, when full). The thread logs and publishes. A peer that keeps
//! being refused would flood the log and the bus, so each (key, action, target) is reported once
//! per [`LOG_WINDOW`], then once more with how many repeats followed (`repeats` in the event);
//! the metric counts every refusal.
//!
//! Events carry key names and public keys, never a secret.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use plantd_worker_sdk::bus::Event;
use plantd_worker_sdk::protocol::bus::encode_msgpack;
use prometheus::{IntCounter, IntCounterVec};
use serde_json::json;
use tracing::warn;

/// Events waiting for the audit thread at most.
const QUEUE: usize = 4096;
/// How often one (key, action, target) is logged at most.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);
/// Topic prefix of audit events.
pub const AUDIT_TOPIC_PREFIX: &str = "org.plantd.broker.audit";
/// Where the `event` bus's proxy takes audit events in (inproc, in the buses' context).
pub const AUDIT_INJECT: &str = "inproc://plantd-broker-audit";

/// What was refused (label `action` of `plantd_broker_security_refusals_total`, and the last
/// topic segment of the audit event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A CURVE handshake by a key not on the allow list.
    Handshake,
    /// A worker READY for a service the key may not register.
    Register,
    /// A request for a service the key may not call.
    Call,
    /// A bus message the key may not publish.
    Publish,
    /// A bus subscription the key may not make.
    Subscribe,
    /// A message from one key on a worker registered by another (a routing-id takeover).
    Takeover,
}

impl Action {
    /// The label and topic segment.
    pub fn name(self) -> &'static str {
        match self {
            Action::Handshake => "handshake",
            Action::Register => "register",
            Action::Call => "call",
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Takeover => "takeover",
        }
    }

    /// Every action, in label order.
    pub const ALL: [Action; 6] = [
        Action::Handshake,
        Action::Register,
        Action::Call,
        Action::Publish,
        Action::Subscribe,
        Action::Takeover,
    ];
}

/// One refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused.
    pub action: Action,
    /// The key's name on the allow list (`None`: not listed).
    pub name: Option<String>,
    /// The key, Z85 (public).
    pub key: Option<String>,
    /// What it asked for: a service, a bus, a ZAP domain.
    pub target: String,
    /// Why, in a few words.
    pub reason: String,
}

/// Hands refusals to the audit thread; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: SyncSender<Refusal>,
    counters: [IntCounter; Action::ALL.len()],
    dropped: IntCounter,
}

impl Audit {
    /// Counts `refusal` and queues it for the log and the event bus, without blocking.
    pub fn refused(&self, refusal: Refusal) {
        self.count(refusal.action);
        if let Err(TrySendError::Full(_)) = self.tx.try_send(refusal) {
            self.dropped.inc();
        }
    }

    /// Only counts a refusal of `action` (for a repeat its caller already reported).
    pub fn count(&self, action: Action) {
        self.counters[Action::ALL.iter().position(|a| *a == action).unwrap_or(0)].inc();
    }
}

/// The audit thread; stops when every [`Audit`] is dropped, or on [`AuditThread::stop`].
pub struct AuditThread {
    thread: Option<JoinHandle<()>>,
    stop: std::sync::mpsc::Sender<()>,
}

impl AuditThread {
    /// Starts the thread: it logs refusals and pushes them to `sink` (a PUSH connected to
    /// [`AUDIT_INJECT`], if the `event` bus runs).
    /// `refusals` is `plantd_broker_security_refusals_total{action}`; `dropped` counts events
    /// the full queue turned away.
    pub fn start(
        sink: Option<zmq::Socket>,
        refusals: &IntCounterVec,
        dropped: IntCounter,
    ) -> std::io::Result<(Audit, AuditThread)> {
        let (tx, rx) = sync_channel(QUEUE);
        let (stop, stopped) = std::sync::mpsc::channel();
        let counters = Action::ALL.map(|a| refusals.with_label_values(&[a.name()]));
        let thread = std::thread::Builder::new()
            .name("plantd-broker-audit".into())
            .spawn(move || run(rx, stopped, sink))?;
        Ok((
            Audit {
                tx,
                counters,
                dropped,
            },
            AuditThread {
                thread: Some(thread),
                stop,
            },
        ))
    }

    /// Stops the thread after it has reported what it holds, even while [`Audit`] handles live.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AuditThread {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reported (key, action, target): when, the refusal, and the repeats since.
type Seen = HashMap<(Option<String>, Action, String), (Instant, Refusal, u64)>;

/// How often the thread looks for its stop signal while no refusal arrives.
const STOP_POLL: Duration = Duration::from_millis(100);

fn run(rx: Receiver<Refusal>, stopped: Receiver<()>, sink: Option<zmq::Socket>) {
    let publisher = sink;
    let mut seen: Seen = HashMap::new();
    loop {
        if stopped.try_recv().is_ok() {
            while let Ok(refusal) = rx.try_recv() {
                if first_in_window(&mut seen, &refusal) {
                    log(&refusal);
                }
            }
            flush(&mut seen, Instant::now() + LOG_WINDOW, publisher.as_ref());
            return;
        }
        match rx.recv_timeout(STOP_POLL) {
            Ok(refusal) => {
                if first_in_window(&mut seen, &refusal) {
                    log(&refusal);
                    if let Some(publisher) = &publisher {
                        publish(publisher, &refusal, 0);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                flush(&mut seen, Instant::now() + LOG_WINDOW, publisher.as_ref());
                return;
            }
        }
        flush(&mut seen, Instant::now(), publisher.as_ref());
    }
}

/// Whether `r` is the first of its (key, action, target) in the current window; repeats are
/// counted for [`flush`].
fn first_in_window(seen: &mut Seen, r: &Refusal) -> bool {
    let id = (r.key.clone(), r.action, r.target.clone());
    if let Some((_, _, repeats)) = seen.get_mut(&id) {
        *repeats += 1;
        return false;
    }
    seen.insert(id, (Instant::now(), r.clone(), 0));
    true
}

fn log(r: &Refusal) {
    warn!(
        action = r.action.name(),
        key_name = r.name.as_deref().unwrap_or("(not listed)"),
        key = r.key.as_deref().unwrap_or("-"),
        target = %r.target,
        "refused: {}",
        r.reason
    );
}

/// Reports the repeats of entries older than the window (log and bus) and forgets them.
fn flush(seen: &mut Seen, now: Instant, publisher: Option<&zmq::Socket>) {
    seen.retain(|_, (since, refusal, repeats)| {
        if now.duration_since(*since) < LOG_WINDOW {
            return true;
        }
        if *repeats > 0 {
            warn!(
                action = refusal.action.name(),
                key_name = refusal.name.as_deref().unwrap_or("(not listed)"),
                key = refusal.key.as_deref().unwrap_or("-"),
                target = %refusal.target,
                repeats = *repeats,
                "refused {} more times within {} s",
                repeats,
                LOG_WINDOW.as_secs()
            );
            if let Some(publisher) = publisher {
                publish(publisher, refusal, *repeats);
            }
        }
        false
    });
}

/// Publishes `r`; `repeats` > 0 for the summary of a window's repeats.
fn publish(sink: &zmq::Socket, r: &Refusal, repeats: u64) {
    let event = Event::new(
        "plantd-broker",
        format!("audit.{}", r.action.name()),
        json!({
            "action": r.action.name(),
            "outcome": "refused",
            "key_name": r.name,
            "key": r.key,
            "target": r.target,
            "reason": r.reason,
            "repeats": repeats,
        }),
    );
    let topic = format!("{AUDIT_TOPIC_PREFIX}.{}", r.action.name());
    if let Ok(payload) = encode_msgpack(&event) {
        // Dropped rather than block when the proxy falls behind.
        let _ = sink.send_multipart([topic.into_bytes(), payload], zmq::DONTWAIT);
    }
}
