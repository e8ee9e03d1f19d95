//! The two directions of the bridge.
//!
//! **Export** (bus → NATS): one task per bus reads the bus subscription ([`export_bus`]), drops
//! what it imported itself ([`RecentImports`]), maps the topic to a subject and queues the
//! message in one bounded queue; one task ([`export_to_nats`]) publishes the queue in order, with
//! the `plantd-origin`, `plantd-hops` and `plantd-time` headers. Core NATS: while NATS is down a
//! message is dropped and counted (`nats_down`) rather than buffered. JetStream: up to
//! [`ACK_WINDOW`] messages are published ahead of their acks; on a failed ack the window is
//! published again in order (each has a `Nats-Msg-Id`, so what the stream had is not stored
//! twice); the task waits for the connection while the bounded queue absorbs what arrives
//! meanwhile; beyond it `buffer_full`.
//!
//! **Import** (NATS → bus): one source task per imported prefix (a core subscription, or a
//! durable JetStream pull consumer) feeds one task per bus ([`import_bus`]) that owns the bus
//! publisher: it ignores its own origin and messages over the hop limit, records each message in
//! [`RecentImports`] and publishes it on the bus (then acks it, with JetStream).

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use plantd_worker_sdk::bus::{ConnectionMonitor, Publisher, SubscriberStream};
use plantd_worker_sdk::health::Check;
use plantd_worker_sdk::Shutdown;
use tokio::sync::mpsc;

use crate::error::BridgeError;
use crate::mapping::{
    decode_frames, encode_frames, RecentImports, SubjectMap, Unmappable, FRAMES_HEADER,
    HOPS_HEADER, ORIGIN_HEADER, TIME_HEADER,
};
use crate::metrics::{BridgeMetrics, EXPORT, IMPORT};

/// How often a bus socket's connection is re-checked for `/healthz`.
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(250);
/// Pause before a NATS subscription or consumer that failed is set up again.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);
/// Least time between two warnings about dropped messages of one kind.
const WARN_INTERVAL: Duration = Duration::from_secs(5);

/// What every task of one bridge shares.
#[derive(Clone)]
pub struct Shared {
    /// The origin id in `plantd-origin`.
    pub origin: Arc<str>,
    /// Topic ↔ subject.
    pub map: Arc<SubjectMap>,
    /// The metrics.
    pub metrics: BridgeMetrics,
    /// Imports over this many hops are dropped.
    pub max_hops: u32,
    /// Stops every task.
    pub shutdown: Shutdown,
}

/// One message on its way to NATS.
pub struct Outbound {
    bus: Arc<str>,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    received: Instant,
}

/// Logs a warning at most every [`WARN_INTERVAL`], with the number held back meanwhile.
struct Throttled {
    last: Option<Instant>,
    held: u64,
}

impl Throttled {
    fn new() -> Self {
        Throttled {
            last: None,
            held: 0,
        }
    }

    /// Whether to log now, and how many were held back since the last one.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_INTERVAL)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn set_check(check: &Check, monitor: &mut ConnectionMonitor, endpoint: &str) {
    if monitor.is_connected() {
        check.up();
    } else if let Some(failure) = monitor.handshake_failure() {
        check.down(format!(
            "{endpoint} refused the CURVE handshake: {failure:?}"
        ));
    } else {
        check.down(format!("not connected to {endpoint}"));
    }
}

/// Reads one bus's subscription and queues what it should export.
#[allow(clippy::too_many_arguments)]
pub async fn export_bus(
    shared: Shared,
    bus: Arc<str>,
    endpoint: String,
    mut messages: SubscriberStream,
    mut monitor: ConnectionMonitor,
    check: Check,
    recent: Option<Arc<Mutex<RecentImports>>>,
    queue: mpsc::Sender<Outbound>,
) -> Result<(), BridgeError> {
    let metrics = &shared.metrics;
    let mut ticker = tokio::time::interval(MONITOR_INTERVAL);
    let mut invalid_warn = Throttled::new();
    let mut full_warn = Throttled::new();
    loop {
        let message = tokio::select! {
            _ = shared.shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                set_check(&check, &mut monitor, &endpoint);
                continue;
            }
            next = messages.next() => match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    check.down(format!("bus subscription failed: {e}"));
                    return Err(e.into());
                }
                None => return Ok(()),
            },
        };
        let received = Instant::now();
        if let Some(recent) = &recent {
            let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
            let digest = recent.digest(&message.topic, &message.payload);
            if recent.take(digest, received) {
                metrics
                    .loop_suppressed
                    .with_label_values(&["own_import"])
                    .inc();
                continue;
            }
        }
        let subject = match shared.map.subject(&message.topic) {
            Ok(subject) => subject,
            Err(Unmappable::OutsidePrefix) => {
                metrics.drop_one(EXPORT, "unmapped");
                continue;
            }
            Err(Unmappable::InvalidSubject(why)) => {
                metrics.drop_one(EXPORT, "invalid_subject");
                if let Some(held) = invalid_warn.due() {
                    tracing::warn!(
                        bus = %bus, topic = %message.topic.escape_debug(), why, also_dropped = held,
                        "topic is not a valid NATS subject: dropped"
                    );
                }
                continue;
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN_HEADER, &*shared.origin);
        headers.insert(HOPS_HEADER, "1");
        headers.insert(TIME_HEADER, unix_micros().to_string());
        let (count, body) = encode_frames(message.payload);
        if let Some(count) = count {
            headers.insert(FRAMES_HEADER, count.to_string());
        }
        let outbound = Outbound {
            bus: bus.clone(),
            subject,
            headers,
            payload: Bytes::from(body),
            received,
        };
        match queue.try_send(outbound) {
            Ok(()) => metrics.pending.inc(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics.drop_one(EXPORT, "buffer_full");
                if let Some(held) = full_warn.due() {
                    tracing::warn!(bus = %bus, also_dropped = held, "export queue full: dropped");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
        }
    }
}

/// How exports are published.
pub enum ExportMode {
    /// Core NATS: fire and forget, dropped while disconnected.
    Core,
    /// JetStream: publish with ack, retried.
    JetStream(Box<jetstream::Context>),
}

/// Publishes the export queue on NATS, in order.
pub async fn export_to_nats(
    shared: Shared,
    client: async_nats::Client,
    mode: ExportMode,
    queue: mpsc::Receiver<Outbound>,
) -> Result<(), BridgeError> {
    match mode {
        ExportMode::Core => export_to_core(shared, client, queue).await,
        ExportMode::JetStream(context) => {
            export_to_jetstream(shared, client, *context, queue).await
        }
    }
}

/// Core NATS: each message is published once, or dropped while NATS is down.
async fn export_to_core(
    shared: Shared,
    client: async_nats::Client,
    mut queue: mpsc::Receiver<Outbound>,
) -> Result<(), BridgeError> {
    let metrics = &shared.metrics;
    let mut down_warn = Throttled::new();
    let mut error_warn = Throttled::new();
    loop {
        let out = tokio::select! {
            _ = shared.shutdown.cancelled() => return Ok(()),
            next = queue.recv() => match next {
                Some(out) => out,
                None => return Ok(()),
            },
        };
        metrics.pending.dec();
        if client.connection_state() != async_nats::connection::State::Connected {
            metrics.drop_one(EXPORT, "nats_down");
            if let Some(held) = down_warn.due() {
                tracing::warn!(
                    also_dropped = held,
                    "NATS is down: exported messages are dropped"
                );
            }
            continue;
        }
        let published = client
            .publish_with_headers(
                out.subject.clone(),
                out.headers.clone(),
                out.payload.clone(),
            )
            .await;
        match published {
            Ok(()) => exported(&shared.metrics, &out),
            Err(e) => {
                metrics.drop_one(EXPORT, "publish_error");
                if let Some(held) = error_warn.due() {
                    tracing::warn!(error = %e, also_dropped = held, "cannot publish on NATS: dropped");
                }
            }
        }
        if shared.shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// Most JetStream publishes awaiting their acks at once. One at a time, the stream's round trip
/// bounds the rate (about 1,500 messages/s on loopback, below what one busy metric bus carries);
/// the ids make a re-sent window harmless.
const ACK_WINDOW: usize = 256;
/// Times a message the stream refuses while connected is tried before it is dropped.
const ATTEMPTS: u32 = 5;

/// A message in the ack window.
struct Unacked {
    out: Outbound,
    /// Its ack, once published (`None`: to be published, or again after a failure).
    ack: Option<jetstream::context::PublishAckFuture>,
    /// Refusals while connected.
    failures: u32,
}

/// JetStream: up to [`ACK_WINDOW`] messages are published ahead of their acks, which are taken
/// in order. When an ack fails, everything from that message on is published again, in order
/// (each has its `Nats-Msg-Id`, so the stream stores what it had already once); while NATS is
/// down the window and then the bounded queue hold what arrives.
async fn export_to_jetstream(
    shared: Shared,
    client: async_nats::Client,
    context: jetstream::Context,
    mut queue: mpsc::Receiver<Outbound>,
) -> Result<(), BridgeError> {
    let metrics = &shared.metrics;
    let mut error_warn = Throttled::new();
    // Message ids for JetStream de-duplication: unique per bridge run.
    let run_id = unix_micros();
    let mut sequence: u64 = 0;
    let mut window: std::collections::VecDeque<Unacked> =
        std::collections::VecDeque::with_capacity(ACK_WINDOW);
    let mut take = |mut out: Outbound| {
        sequence += 1;
        out.headers.insert(
            "Nats-Msg-Id",
            format!("{}-{run_id}-{sequence}", shared.origin),
        );
        // Still pending (counted in `plantd_bridge_nats_pending`) until acked or dropped.
        Unacked {
            out,
            ack: None,
            failures: 0,
        }
    };
    loop {
        if window.is_empty() {
            let next = tokio::select! {
                _ = shared.shutdown.cancelled() => return Ok(()),
                next = queue.recv() => next,
            };
            match next {
                Some(out) => window.push_back(take(out)),
                None => return Ok(()),
            }
        }
        while window.len() < ACK_WINDOW {
            match queue.try_recv() {
                Ok(out) => window.push_back(take(out)),
                Err(_) => break,
            }
        }
        // Publish, in order, what has no ack yet: always a suffix of the window, since messages
        // are published in order and a failure resets every ack.
        let mut failure = None;
        let published = window.partition_point(|e| e.ack.is_some());
        for (index, entry) in window.iter_mut().enumerate().skip(published) {
            wait_connected(&client, &shared.shutdown).await;
            if shared.shutdown.is_cancelled() {
                return Ok(());
            }
            let out = &entry.out;
            let sent = context
                .publish_with_headers(
                    out.subject.clone(),
                    out.headers.clone(),
                    out.payload.clone(),
                )
                .await;
            match sent {
                Ok(ack) => entry.ack = Some(ack),
                Err(e) => {
                    failure = Some((index, e.to_string()));
                    break;
                }
            }
        }
        // Then the oldest ack; on a failure everything from the oldest on goes again, in order.
        if failure.is_none() {
            let ack = window.front_mut().and_then(|e| e.ack.take());
            let ack = ack.expect("the oldest message was just published");
            let acked = tokio::select! {
                _ = shared.shutdown.cancelled() => return Ok(()),
                acked = ack => acked,
            };
            match acked {
                Ok(_) => {
                    let entry = window.pop_front().expect("the acked message");
                    metrics.pending.dec();
                    exported(metrics, &entry.out);
                    continue;
                }
                Err(e) => {
                    for entry in window.iter_mut() {
                        entry.ack = None;
                    }
                    failure = Some((0, e.to_string()));
                }
            }
        }
        let Some((index, e)) = failure else {
            continue;
        };
        // A failure while the connection was lost is the outage, not the message.
        if client.connection_state() == async_nats::connection::State::Connected {
            window[index].failures += 1;
        }
        if window[index].failures >= ATTEMPTS {
            // Nothing behind it holds an ack now (unpublished, or reset): the order holds.
            window.remove(index);
            metrics.pending.dec();
            metrics.drop_one(EXPORT, "publish_error");
            if let Some(held) = error_warn.due() {
                tracing::warn!(error = %e, also_dropped = held, "JetStream refused a message: dropped");
            }
            continue;
        }
        tracing::debug!(error = %e, "JetStream publish failed; retrying");
        tokio::select! {
            _ = shared.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Counts `out` as exported, with its lag.
fn exported(metrics: &BridgeMetrics, out: &Outbound) {
    metrics.bridged.with_label_values(&[EXPORT, &out.bus]).inc();
    metrics
        .lag
        .with_label_values(&[EXPORT])
        .observe(out.received.elapsed().as_secs_f64());
}

/// Returns once `client` is connected or `shutdown` is cancelled.
pub async fn wait_connected(client: &async_nats::Client, shutdown: &Shutdown) {
    while client.connection_state() != async_nats::connection::State::Connected {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// One NATS message on its way to a bus.
pub enum Inbound {
    /// From a core subscription.
    Core(async_nats::Message, Instant),
    /// From a JetStream consumer: acked once published on the bus.
    JetStream(Box<jetstream::Message>, Instant),
}

impl Inbound {
    fn message(&self) -> &async_nats::Message {
        match self {
            Inbound::Core(m, _) => m,
            Inbound::JetStream(m, _) => &m.message,
        }
    }

    fn received(&self) -> Instant {
        match self {
            Inbound::Core(_, at) | Inbound::JetStream(_, at) => *at,
        }
    }

    async fn ack(&self) {
        if let Inbound::JetStream(m, _) = self {
            if let Err(e) = m.ack().await {
                tracing::debug!(error = %e, "cannot ack a JetStream message");
            }
        }
    }
}

/// Feeds `tx` from a core subscription to `<prefix>>`, subscribing again if it ends.
pub async fn core_source(
    client: async_nats::Client,
    prefix: String,
    tx: mpsc::Sender<Inbound>,
    shutdown: Shutdown,
) {
    let subject = format!("{prefix}>");
    while !shutdown.is_cancelled() {
        match client.subscribe(subject.clone()).await {
            Ok(mut subscriber) => {
                tracing::info!(subject = %subject, "subscribed on NATS");
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        next = subscriber.next() => next,
                    };
                    let Some(message) = next else { break };
                    if tx
                        .send(Inbound::Core(message, Instant::now()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(subject = %subject, error = %e, "cannot subscribe on NATS"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
        }
    }
}

/// What a JetStream source needs to find its consumer.
pub struct ConsumerSpec {
    /// The stream.
    pub stream: String,
    /// The durable consumer's name.
    pub durable: String,
    /// The subjects it filters (`<prefix>>`).
    pub filter: String,
    /// How long the stream waits for an ack before redelivering.
    pub ack_wait: Duration,
}

/// Feeds `tx` from a durable pull consumer, creating it if needed (delivering only messages
/// stored after its creation) and setting it up again after errors.
pub async fn jetstream_source(
    client: async_nats::Client,
    context: jetstream::Context,
    spec: ConsumerSpec,
    tx: mpsc::Sender<Inbound>,
    shutdown: Shutdown,
) {
    while !shutdown.is_cancelled() {
        wait_connected(&client, &shutdown).await;
        match consume(&context, &spec, &tx, &shutdown).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(
                consumer = %spec.durable, error = %e,
                "JetStream consumer failed; setting it up again"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
        }
    }
}

/// Reads the consumer until shutdown (`Ok`) or an error.
async fn consume(
    context: &jetstream::Context,
    spec: &ConsumerSpec,
    tx: &mpsc::Sender<Inbound>,
    shutdown: &Shutdown,
) -> Result<(), String> {
    let stream = context
        .get_stream(&spec.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", spec.stream))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &spec.durable,
            jetstream::consumer::pull::Config {
                durable_name: Some(spec.durable.clone()),
                filter_subject: spec.filter.clone(),
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: spec.ack_wait,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {}: {e}", spec.durable))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| format!("consumer {}: {e}", spec.durable))?;
    let mut messages = pin!(messages);
    tracing::info!(consumer = %spec.durable, filter = %spec.filter, "reading JetStream consumer");
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                if tx
                    .send(Inbound::JetStream(Box::new(message), Instant::now()))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            // Missed heartbeats during an outage and the like: the stream carries on.
            Some(Err(e)) => tracing::debug!(consumer = %spec.durable, error = %e, "consumer"),
            None => return Err("the message stream ended".into()),
        }
    }
}

/// Publishes what the sources of one bus deliver, once the bus publisher is connected.
#[allow(clippy::too_many_arguments)]
pub async fn import_bus(
    shared: Shared,
    bus: Arc<str>,
    endpoint: String,
    publisher: Publisher,
    mut monitor: ConnectionMonitor,
    check: Check,
    settle: Duration,
    recent: Option<(Arc<Mutex<RecentImports>>, Vec<String>)>,
    mut rx: mpsc::Receiver<Inbound>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), BridgeError> {
    let metrics = &shared.metrics;
    let mut ticker = tokio::time::interval(MONITOR_INTERVAL);
    // PUB/SUB's slow joiner: publish nothing before the broker's subscriptions can have arrived.
    while !monitor.is_connected() {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => set_check(&check, &mut monitor, &endpoint),
        }
    }
    check.up();
    tokio::select! {
        _ = shared.shutdown.cancelled() => return Ok(()),
        _ = tokio::time::sleep(settle) => {}
    }
    let _ = ready.send(());
    let mut malformed_warn = Throttled::new();
    loop {
        let inbound = tokio::select! {
            _ = shared.shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                set_check(&check, &mut monitor, &endpoint);
                continue;
            }
            next = rx.recv() => match next {
                Some(inbound) => inbound,
                None => return Ok(()),
            },
        };
        let message = inbound.message();
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str())
        };
        if header(ORIGIN_HEADER) == Some(&*shared.origin) {
            metrics
                .loop_suppressed
                .with_label_values(&["own_origin"])
                .inc();
            inbound.ack().await;
            continue;
        }
        let hops: u32 = header(HOPS_HEADER)
            .and_then(|h| h.trim().parse().ok())
            .unwrap_or(0);
        if hops >= shared.max_hops {
            metrics.drop_one(IMPORT, "hop_limit");
            inbound.ack().await;
            continue;
        }
        let Ok(topic) = shared.map.topic(message.subject.as_str()) else {
            metrics.drop_one(IMPORT, "unmapped");
            inbound.ack().await;
            continue;
        };
        let frames = match decode_frames(header(FRAMES_HEADER), &message.payload) {
            Ok(frames) => frames,
            Err(e) => {
                metrics.drop_one(IMPORT, "malformed");
                if let Some(held) = malformed_warn.due() {
                    tracing::warn!(subject = %message.subject, error = %e, also_dropped = held, "malformed NATS message: dropped");
                }
                inbound.ack().await;
                continue;
            }
        };
        let sent_at = header(TIME_HEADER).and_then(|t| t.trim().parse::<u64>().ok());
        if let Some((recent, exported)) = &recent {
            // Only what this bridge's own subscription will hand back is remembered.
            if exported.iter().any(|p| topic.starts_with(p.as_str())) {
                let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
                let digest = recent.digest(&topic, &frames);
                recent.insert(digest, Instant::now());
            }
        }
        match publisher.publish_frames(&topic, &frames) {
            Ok(()) => {
                metrics.bridged.with_label_values(&[IMPORT, &bus]).inc();
                let lag = match sent_at {
                    Some(t) => Duration::from_micros(unix_micros().saturating_sub(t)),
                    None => inbound.received().elapsed(),
                };
                metrics
                    .lag
                    .with_label_values(&[IMPORT])
                    .observe(lag.as_secs_f64());
            }
            Err(e) => {
                metrics.drop_one(IMPORT, "bus_error");
                tracing::warn!(bus = %bus, error = %e, "cannot publish on the bus");
            }
        }
        inbound.ack().await;
    }
}
