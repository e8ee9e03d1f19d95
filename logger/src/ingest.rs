//! Bus ingest: one thread per configured bus reads its subscriber, turns each message into a
//! [`Record`] and hands it to the writer. Also keeps the `subscribed` health check true to the
//! subscribers' actual connections.
//!
//! Classification: a single-frame payload that decodes as a [`Metric`] (MessagePack or JSON) is a
//! metric; anything else is an event. A payload that is neither MessagePack nor JSON is stored as
//! an event with its bytes in base64 and `malformed = 1`, and counted; nothing on a bus can stop
//! the logger.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine;
use plantd_worker_sdk::bus::{BusMessage, ConnectionMonitor, Metric, Subscriber};
use plantd_worker_sdk::health::Check;
use plantd_worker_sdk::protocol::bus::{decode_typed, parse_payload, PayloadEncoding};
use serde_json::{json, Value};

use crate::config::LoggerConfig;
use crate::error::LoggerError;
use crate::metrics::{BusCounters, LoggerMetrics};
use crate::store::{EventRow, MetricRow, Record};

/// How long a subscriber waits for a message before checking for shutdown and connectivity.
const POLL: Duration = Duration::from_millis(100);
/// Connectivity is also re-checked every this many messages under load.
const CHECK_EVERY: u32 = 4096;

/// Turns one bus message into the row to store. Returns the record and whether it is malformed.
pub fn classify(bus: &str, msg: BusMessage, received_us: i64) -> (Record, bool) {
    let BusMessage { topic, payload } = msg;
    if let [body] = payload.as_slice() {
        if let Ok(metric) = decode_typed::<Metric>(body) {
            return (Record::Metric(metric_row(bus, topic, metric)), false);
        }
        let (encoding, value, malformed) = read_frame(body);
        let time_us = event_time(&value).unwrap_or(received_us);
        let row = EventRow {
            time_us,
            bus: bus.to_owned(),
            topic,
            encoding,
            payload_json: value.to_string(),
            malformed,
        };
        return (Record::Event(row), malformed);
    }
    let (encoding, value, malformed) = if payload.is_empty() {
        ("none", Value::Null, false)
    } else {
        let mut malformed = false;
        let frames: Vec<Value> = payload
            .iter()
            .map(|frame| {
                let (encoding, value, bad) = read_frame(frame);
                malformed |= bad;
                json!({"encoding": encoding, "value": value})
            })
            .collect();
        ("multipart", Value::Array(frames), malformed)
    };
    let row = EventRow {
        time_us: received_us,
        bus: bus.to_owned(),
        topic,
        encoding,
        payload_json: value.to_string(),
        malformed,
    };
    (Record::Event(row), malformed)
}

fn metric_row(bus: &str, topic: String, metric: Metric) -> MetricRow {
    let tags_json = if metric.tags.is_empty() {
        "{}".to_owned()
    } else {
        // A map of strings always serializes.
        serde_json::to_string(&metric.tags).unwrap_or_else(|_| "{}".to_owned())
    };
    MetricRow {
        time_us: metric.time.timestamp_micros(),
        bus: bus.to_owned(),
        topic,
        source: metric.source,
        channel: metric.channel,
        value: metric.value.is_finite().then_some(metric.value),
        units: metric.units,
        tags_json,
    }
}

/// One payload frame as (encoding, JSON value, malformed).
fn read_frame(bytes: &[u8]) -> (&'static str, Value, bool) {
    match parse_payload(bytes) {
        Some((PayloadEncoding::Msgpack, value)) => ("msgpack", value, false),
        Some((PayloadEncoding::Json, value)) => ("json", value, false),
        None => (
            "base64",
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            true,
        ),
    }
}

/// The `time` field of an event payload (RFC 3339 or Unix seconds), in microseconds.
fn event_time(value: &Value) -> Option<i64> {
    match value.get("time")? {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_micros()),
        Value::Number(n) => n
            .as_f64()
            .filter(|secs| secs.is_finite() && secs.abs() < 1e11)
            .map(|secs| (secs * 1e6).round() as i64),
        _ => None,
    }
}

/// Which buses are connected, shared by the ingest threads to drive the `subscribed` check.
struct Connectivity {
    check: Check,
    gauge: prometheus::IntGauge,
    connected: Mutex<BTreeMap<String, bool>>,
}

impl Connectivity {
    fn set(&self, bus: &str, up: bool) {
        let mut connected = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        match connected.get_mut(bus) {
            Some(state) if *state == up => return,
            Some(state) => *state = up,
            None => return,
        }
        let down: Vec<&str> = connected
            .iter()
            .filter(|(_, up)| !**up)
            .map(|(name, _)| name.as_str())
            .collect();
        self.gauge.set((connected.len() - down.len()) as i64);
        if down.is_empty() {
            self.check.up();
        } else {
            self.check
                .down(format!("not connected to bus {}", down.join(", ")));
        }
    }
}

/// Subscribes to every configured bus and starts one ingest thread per bus. The threads stop when
/// `stop` is set (within ~100 ms) or the writer is gone.
pub fn spawn_ingest(
    config: &LoggerConfig,
    records: SyncSender<Record>,
    metrics: &LoggerMetrics,
    subscribed: Check,
    stop: Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, LoggerError> {
    if config.buses.is_empty() {
        subscribed.up();
    } else {
        subscribed.down("not connected to any bus yet");
    }
    let connectivity = Arc::new(Connectivity {
        check: subscribed,
        gauge: metrics.connected_buses.clone(),
        connected: Mutex::new(
            config
                .buses
                .iter()
                .map(|b| (b.name.clone(), false))
                .collect(),
        ),
    });
    let curve = config
        .curve
        .client()
        .map_err(|e| LoggerError::Config(format!("curve: {e}")))?;
    let mut threads = Vec::new();
    for bus in &config.buses {
        let (subscriber, monitor) =
            Subscriber::connect_with(&bus.endpoint, config.high_water_mark, curve.as_ref())?;
        subscriber.subscribe(&config.topic_prefix)?;
        let ingest = Ingest {
            bus: bus.name.clone(),
            subscriber,
            monitor,
            records: records.clone(),
            counters: metrics.bus(&bus.name),
            connectivity: connectivity.clone(),
            stop: stop.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("logger-bus-{}", bus.name))
                .spawn(move || ingest.run())?,
        );
        tracing::info!(bus = %bus.name, endpoint = %bus.endpoint, prefix = %config.topic_prefix, "subscribed");
    }
    Ok(threads)
}

struct Ingest {
    bus: String,
    subscriber: Subscriber,
    monitor: ConnectionMonitor,
    records: SyncSender<Record>,
    counters: BusCounters,
    connectivity: Arc<Connectivity>,
    stop: Arc<AtomicBool>,
}

impl Ingest {
    fn run(mut self) {
        let mut since_check = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            match self.subscriber.recv_timeout(POLL) {
                Ok(Some(msg)) => {
                    self.counters.received.inc();
                    let now = chrono::Utc::now().timestamp_micros();
                    let (record, malformed) = classify(&self.bus, msg, now);
                    if malformed {
                        self.counters.malformed.inc();
                    }
                    if self.records.send(record).is_err() {
                        break; // The writer is gone: shutting down.
                    }
                    since_check += 1;
                    if since_check < CHECK_EVERY {
                        continue;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(bus = %self.bus, error = %e, "bus subscriber failed");
                    self.connectivity.set(&self.bus, false);
                    return;
                }
            }
            since_check = 0;
            let up = self.monitor.is_connected();
            self.connectivity.set(&self.bus, up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plantd_worker_sdk::protocol::bus::encode_msgpack;

    fn msg(topic: &str, frames: &[&[u8]]) -> BusMessage {
        BusMessage {
            topic: topic.into(),
            payload: frames.iter().map(|f| f.to_vec()).collect(),
        }
    }

    #[test]
    fn a_metric_payload_becomes_a_metric_row() {
        let m = Metric::new("h1", "load1", 0.5)
            .with_units("load")
            .with_tag("a", "b");
        let bytes = encode_msgpack(&m).unwrap();
        let (record, malformed) = classify("metric", msg(&m.topic(), &[&bytes]), 0);
        assert!(!malformed);
        let Record::Metric(row) = record else {
            panic!("not a metric: {record:?}")
        };
        assert_eq!(row.time_us, m.time.timestamp_micros());
        assert_eq!((row.source.as_str(), row.channel.as_str()), ("h1", "load1"));
        assert_eq!(row.value, Some(0.5));
        assert_eq!(row.tags_json, r#"{"a":"b"}"#);
        assert_eq!(row.topic, "org.plantd.metric.h1.load1");
    }

    #[test]
    fn other_payloads_become_events_and_garbage_is_flagged() {
        let (record, malformed) = classify("event", msg("t", &[br#"{"time":1.5,"x":1}"#]), 7);
        assert!(!malformed);
        let Record::Event(row) = record else { panic!() };
        assert_eq!((row.encoding, row.time_us), ("json", 1_500_000));

        let (record, malformed) = classify("event", msg("t", &[&[0xc1, 0xff, 0x00]]), 7);
        assert!(malformed);
        let Record::Event(row) = record else { panic!() };
        assert_eq!(row.encoding, "base64");
        assert_eq!(row.payload_json, "\"wf8A\"");
        assert_eq!(row.time_us, 7);

        let (record, malformed) = classify("state", msg("t", &[b"{\"a\":1}", b"\xc1"]), 7);
        assert!(malformed);
        let Record::Event(row) = record else { panic!() };
        assert_eq!(row.encoding, "multipart");
        assert_eq!(
            row.payload_json,
            r#"[{"encoding":"json","value":{"a":1}},{"encoding":"base64","value":"wQ=="}]"#
        );

        let (record, malformed) = classify("state", msg("t", &[]), 7);
        assert!(!malformed);
        let Record::Event(row) = record else { panic!() };
        assert_eq!((row.encoding, row.payload_json.as_str()), ("none", "null"));
    }

    #[test]
    fn nan_values_are_stored_as_null() {
        let mut m = Metric::new("h", "c", f64::NAN);
        m.value = f64::NAN;
        let bytes = encode_msgpack(&m).unwrap();
        let (Record::Metric(row), _) = classify("metric", msg("t", &[&bytes]), 0) else {
            panic!()
        };
        assert_eq!(row.value, None);
    }
}
