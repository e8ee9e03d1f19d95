//! The payload types shared by producers and the logger: [`Metric`] and [`Event`].
//!
//! Both travel as named MessagePack maps. `time` is an RFC 3339 string on the wire; readers also
//! accept a number of Unix seconds (integer or fractional) from other producers, and a missing
//! `time` means "now" (the moment of decoding).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Topic prefix of metrics: `org.plantd.metric.<source>.<channel>`.
pub const METRIC_TOPIC_PREFIX: &str = "org.plantd.metric";
/// Topic prefix of events: `org.plantd.event.<source>.<kind>`.
pub const EVENT_TOPIC_PREFIX: &str = "org.plantd.event";

/// One reading of one channel of one source (device, host, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// When the reading was taken.
    #[serde(with = "wire_time", default = "Utc::now")]
    pub time: DateTime<Utc>,
    /// What produced it (a host or device name). The Go system called this `device`.
    #[serde(alias = "device")]
    pub source: String,
    /// What was measured, e.g. `load1`, `memory.used`, `net.eth0.rx_bytes`.
    pub channel: String,
    /// The reading.
    pub value: f64,
    /// Units of `value` (`bytes`, `percent`, ...); may be empty.
    #[serde(default)]
    pub units: String,
    /// Free-form labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl Metric {
    /// A metric taken now, without units or tags.
    pub fn new(source: impl Into<String>, channel: impl Into<String>, value: f64) -> Self {
        Metric {
            time: Utc::now(),
            source: source.into(),
            channel: channel.into(),
            value,
            units: String::new(),
            tags: BTreeMap::new(),
        }
    }

    /// Sets the units.
    pub fn with_units(mut self, units: impl Into<String>) -> Self {
        self.units = units.into();
        self
    }

    /// Adds one tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// The canonical topic, `org.plantd.metric.<source>.<channel>` ([`metric_topic`]).
    pub fn topic(&self) -> String {
        metric_topic(&self.source, &self.channel)
    }
}

/// Anything that happened: a state change, an alarm, a log line. `data` is free-form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened.
    #[serde(with = "wire_time", default = "Utc::now")]
    pub time: DateTime<Utc>,
    /// Who reports it.
    #[serde(default)]
    pub source: String,
    /// What kind of event (`state.changed`, `alarm`, ...).
    #[serde(default)]
    pub kind: String,
    /// Details.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Event {
    /// An event happening now.
    pub fn new(
        source: impl Into<String>,
        kind: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        Event {
            time: Utc::now(),
            source: source.into(),
            kind: kind.into(),
            data,
        }
    }
}

/// `org.plantd.metric.<source>.<channel>`, with the source made safe as one topic segment (dots in
/// host names would otherwise read as extra topic levels). The channel keeps its dots: they are
/// meant as levels (`net.eth0.rx_bytes`).
pub fn metric_topic(source: &str, channel: &str) -> String {
    format!("{METRIC_TOPIC_PREFIX}.{}.{channel}", topic_segment(source))
}

/// Makes `s` usable as a single topic segment: `.`, whitespace and control characters become `_`.
pub fn topic_segment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '.' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Serde for `time`: RFC 3339 out; RFC 3339 or Unix seconds in.
mod wire_time {
    use super::*;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_any(TimeVisitor)
    }

    struct TimeVisitor;

    impl<'de> Visitor<'de> for TimeVisitor {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp or Unix seconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| E::custom(format!("bad time {v:?}: {e}")))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Utc.timestamp_opt(v, 0)
                .single()
                .ok_or_else(|| E::custom(format!("time {v} out of range")))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            let v = i64::try_from(v).map_err(|_| E::custom("time out of range"))?;
            self.visit_i64(v)
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if !v.is_finite() {
                return Err(E::custom("time is not a finite number"));
            }
            let micros = (v * 1e6).round();
            if micros.abs() > i64::MAX as f64 {
                return Err(E::custom("time out of range"));
            }
            DateTime::from_timestamp_micros(micros as i64)
                .ok_or_else(|| E::custom(format!("time {v} out of range")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::bus::{decode_typed, encode_msgpack};

    #[test]
    fn metric_round_trips_through_msgpack_and_json() {
        let m = Metric::new("host-1", "load1", 0.25)
            .with_units("load")
            .with_tag("k", "v");
        let back: Metric = decode_typed(&encode_msgpack(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let back: Metric = decode_typed(serde_json::to_string(&m).unwrap().as_bytes()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn metric_accepts_numeric_time_the_go_device_name_and_defaults() {
        let m: Metric =
            decode_typed(br#"{"time":1700000000.5,"device":"d","channel":"c","value":3}"#).unwrap();
        assert_eq!(m.time.timestamp_millis(), 1_700_000_000_500);
        assert_eq!(
            (m.source.as_str(), m.value, m.units.as_str()),
            ("d", 3.0, "")
        );
        assert!(decode_typed::<Metric>(br#"{"source":"d","channel":"c"}"#).is_err());
        assert!(decode_typed::<Metric>(
            br#"{"time":"yesterday","source":"d","channel":"c","value":1}"#
        )
        .is_err());
    }

    #[test]
    fn event_round_trip_keeps_free_form_data() {
        let e = Event::new(
            "state",
            "changed",
            serde_json::json!({"key": "a", "n": [1, 2]}),
        );
        let back: Event = decode_typed(&encode_msgpack(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn topics_keep_the_source_in_one_segment() {
        assert_eq!(
            metric_topic("web.example.com", "net.eth0.rx_bytes"),
            "org.plantd.metric.web_example_com.net.eth0.rx_bytes"
        );
    }
}
