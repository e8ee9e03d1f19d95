//! The logger end to end: real broker and buses, real metric module, real SQLite or PostgreSQL,
//! queries over MDP. The query suite runs against both backends (issue 17, test 4): module
//! `sqlite` and module `postgres` hold the same tests; the PostgreSQL ones skip with a message
//! where PostgreSQL is not installed, unless `PLANTD_REQUIRE_POSTGRES` is set.

mod common;

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use common::{metric_value, wait_until, Backend, System, DEADLINE};
use plantd_worker_sdk::bus::{Event, Metric, Publisher, Subscriber};
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::protocol::Dialect;
use serde_json::{json, Value};

/// Runs each named test once per backend: `sqlite::<name>` and `postgres::<name>`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(super::Backend::Postgres) } )*
        }
    };
}

on_both_backends!(
    metric_module_readings_reach_the_logger_and_metrics_query_returns_them,
    summary_buckets_are_right_for_a_known_series,
    garbage_is_stored_flagged_and_counted_and_the_logger_keeps_working,
    retention_deletes_rows_older_than_the_maximum_age,
    retention_keeps_only_the_newest_rows_when_capped,
);

/// PUB/SUB's slow joiner: publishes probe events from `publisher` until the logger has stored one,
/// so everything this publisher sends afterwards reaches the logger.
fn wait_until_the_logger_hears(system: &System, publisher: &Publisher, bus: &str) {
    wait_until("the logger stores a probe", || {
        publisher
            .publish("org.plantd.probe", br#"{"probe":true}"#)
            .unwrap();
        let data = system.data(
            "events-query",
            json!({"bus": bus, "topic_prefix": "org.plantd.probe", "limit": 1}),
        );
        data["count"].as_u64() == Some(1)
    });
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// How the logger returns a time: it stores microseconds.
fn stored_time(t: DateTime<Utc>) -> String {
    plantd_logger::store::query::format_time(t.timestamp_micros())
}

fn metric_module_readings_reach_the_logger_and_metrics_query_returns_them(backend: Backend) {
    let Some(mut system) = System::start_on(backend, |_| {}) else {
        return;
    };
    let module_health = system.start_metric_producer("e2e-host", 100);

    // Catch one reading on the bus ourselves, then find exactly it in the logger.
    let subscriber = Subscriber::connect(&system.bus("metric").backend).unwrap();
    subscriber
        .subscribe("org.plantd.metric.e2e-host.memory.total")
        .unwrap();
    let (topic, published): (String, Metric) = subscriber.recv_typed().unwrap();
    assert_eq!(topic, "org.plantd.metric.e2e-host.memory.total");
    assert!(published.value > 0.0);
    let mut stored = Value::Null;
    wait_until("the logger stored the reading we saw", || {
        let data = system.data(
            "metrics-query",
            json!({
                "topic_prefix": topic,
                "since": rfc3339(published.time),
                "until": rfc3339(published.time + chrono::Duration::microseconds(1)),
            }),
        );
        stored = data["metrics"][0].clone();
        data["count"] == json!(1)
    });
    assert_eq!(stored["time"], json!(stored_time(published.time)));
    assert_eq!(stored["value"], json!(published.value));
    assert_eq!(stored["source"], json!("e2e-host"));
    assert_eq!(stored["channel"], json!("memory.total"));
    assert_eq!(stored["units"], json!("bytes"));
    assert_eq!(stored["bus"], json!("metric"));

    // Every channel of a sample arrives; listings are newest first.
    let mut data = Value::Null;
    wait_until("a full sample is stored", || {
        data = system.data(
            "metrics-query",
            json!({"topic_prefix": "org.plantd.metric.e2e-host.", "limit": 1000}),
        );
        let channels: Vec<&str> = data["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["channel"].as_str())
            .collect();
        [
            "load1",
            "load5",
            "load15",
            "memory.used",
            "memory.available",
            "cpu.usage",
        ]
        .iter()
        .all(|c| channels.contains(c))
            && channels
                .iter()
                .any(|c| c.starts_with("net.") && c.ends_with(".rx_bytes"))
    });
    let times: Vec<DateTime<Utc>> = data["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["time"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let limited = system.data(
        "metrics-query",
        json!({"topic_prefix": "org.plantd.metric.e2e-host.", "limit": 2}),
    );
    assert_eq!(limited["count"], json!(2));

    let stats = system.data("stats", json!({}));
    assert!(stats["metrics"]["rows"].as_u64().unwrap() >= 7, "{stats}");
    assert!(
        stats["buses"]["metric"]["metrics"].as_u64().unwrap() >= 7,
        "{stats}"
    );
    assert!(stats["oldest"].is_string() && stats["newest"].is_string());

    // Health is real: every check UP, and the module's too.
    let (status, body) = system.http(system.logger.health_port, "/healthz");
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    let checks: Vec<(&str, &str)> = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    for name in ["database", "subscribed", "broker_connection"] {
        assert!(checks.contains(&(name, "UP")), "{checks:?}");
    }
    let (status, body) = system.http(module_health, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("bus_connection"), "{body}");
    let (_, text) = system.http(system.logger.health_port, "/metrics");
    assert!(
        metric_value(
            &text,
            r#"plantd_logger_messages_received_total{bus="metric"}"#
        ) >= 7.0
    );
    assert!(metric_value(&text, "plantd_logger_metric_rows_total") >= 7.0);
    system.stop();
}

fn summary_buckets_are_right_for_a_known_series(backend: Backend) {
    let Some(system) = System::start_on(backend, |_| {}) else {
        return;
    };
    let publisher = Publisher::connect(&system.bus("metric").frontend).unwrap();
    wait_until_the_logger_hears(&system, &publisher, "metric");

    // Six readings 10 s apart, starting on a minute boundary ten minutes ago: values 0..=5.
    let t0 = (Utc::now().timestamp() / 60) * 60 - 600;
    let t0 = Utc.timestamp_opt(t0, 0).unwrap();
    for i in 0..6 {
        let mut m = Metric::new("series", "temp", i as f64).with_units("C");
        m.time = t0 + chrono::Duration::seconds(10 * i);
        publisher.publish_metric(&m).unwrap();
    }
    // A neighbouring topic in the same prefix forms its own series.
    let mut other = Metric::new("series", "temp2", 100.0);
    other.time = t0;
    publisher.publish_metric(&other).unwrap();
    let prefix = "org.plantd.metric.series.temp";
    wait_until("the series is stored", || {
        system.data("metrics-query", json!({"topic_prefix": prefix}))["count"] == json!(7)
    });

    let window = json!({
        "topic_prefix": prefix,
        "since": rfc3339(t0),
        "until": rfc3339(t0 + chrono::Duration::seconds(60)),
        "bucket": "30s",
    });
    let data = system.data("metrics-summary", window.clone());
    assert_eq!(data["bucket_secs"], json!(30.0));
    assert_eq!(
        data["series"],
        json!([
            {"topic": "org.plantd.metric.series.temp", "buckets": [
                {"start": rfc3339(t0), "count": 3, "min": 0.0, "max": 2.0, "avg": 1.0},
                {"start": rfc3339(t0 + chrono::Duration::seconds(30)), "count": 3, "min": 3.0, "max": 5.0, "avg": 4.0},
            ]},
            {"topic": "org.plantd.metric.series.temp2", "buckets": [
                {"start": rfc3339(t0), "count": 1, "min": 100.0, "max": 100.0, "avg": 100.0},
            ]},
        ])
    );
    let mut one_minute = window.clone();
    one_minute["bucket"] = json!(60);
    one_minute["topic_prefix"] = json!("org.plantd.metric.series.temp.");
    // `.temp.` matches nothing: the channel is the last segment.
    assert_eq!(
        system.data("metrics-summary", one_minute.clone())["series"],
        json!([])
    );
    one_minute["topic_prefix"] = json!("org.plantd.metric.series.temp");
    let data = system.data("metrics-summary", one_minute);
    assert_eq!(
        data["series"][0]["buckets"],
        json!([{"start": rfc3339(t0), "count": 6, "min": 0.0, "max": 5.0, "avg": 2.5}])
    );
    // `until` is exclusive and listings are newest first.
    let newest = system.data(
        "metrics-query",
        json!({"topic_prefix": "org.plantd.metric.series.temp", "until": rfc3339(t0 + chrono::Duration::seconds(50)), "limit": 2}),
    );
    let values: Vec<&Value> = newest["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["value"])
        .collect();
    assert_eq!(values, [&json!(4.0), &json!(3.0)]);
    system.stop();
}

fn garbage_is_stored_flagged_and_counted_and_the_logger_keeps_working(backend: Backend) {
    let Some(system) = System::start_on(backend, |_| {}) else {
        return;
    };
    let publisher = Publisher::connect(&system.bus("event").frontend).unwrap();
    wait_until_the_logger_hears(&system, &publisher, "event");

    let garbage: &[u8] = &[0xc1, 0xff, 0x00, 0x80, b'{'];
    publisher
        .publish("org.plantd.event.garbage", garbage)
        .unwrap();
    let mixed: [&[u8]; 2] = [br#"{"ok":1}"#, &[0xc1]];
    publisher
        .publish_frames("org.plantd.event.mixed", &mixed)
        .unwrap();
    publisher
        .publish("org.plantd.event.door", br#"{"door":"open"}"#)
        .unwrap();
    let event = Event::new("plc-1", "alarm", json!({"level": 3}));
    publisher
        .publish_msgpack("org.plantd.event.alarm", &event)
        .unwrap();

    let mut data = Value::Null;
    wait_until("all four events are stored", || {
        data = system.data(
            "events-query",
            json!({"bus": "event", "topic_prefix": "org.plantd.event."}),
        );
        data["count"] == json!(4)
    });
    let by_topic = |topic: &str| -> Value {
        data["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["topic"] == json!(topic))
            .cloned()
            .unwrap_or_else(|| panic!("no {topic} in {data}"))
    };
    let stored = by_topic("org.plantd.event.garbage");
    assert_eq!(stored["malformed"], json!(true));
    assert_eq!(stored["encoding"], json!("base64"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(stored["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, garbage, "the raw bytes are kept exactly");
    let stored = by_topic("org.plantd.event.mixed");
    assert_eq!(stored["malformed"], json!(true));
    assert_eq!(
        stored["payload"][0],
        json!({"encoding": "json", "value": {"ok": 1}})
    );
    assert_eq!(stored["payload"][1]["encoding"], json!("base64"));
    let stored = by_topic("org.plantd.event.door");
    assert_eq!(
        (&stored["encoding"], &stored["malformed"]),
        (&json!("json"), &json!(false))
    );
    assert_eq!(stored["payload"], json!({"door": "open"}));
    let stored = by_topic("org.plantd.event.alarm");
    assert_eq!(stored["encoding"], json!("msgpack"));
    assert_eq!(stored["payload"]["kind"], json!("alarm"));
    assert_eq!(
        stored["time"],
        json!(stored_time(event.time)),
        "an event's own time is kept"
    );

    let malformed = system.data("events-query", json!({"malformed": true}));
    assert_eq!(malformed["count"], json!(2));
    let stats = system.data("stats", json!({}));
    assert_eq!(stats["events"]["malformed"], json!(2), "{stats}");
    let (_, text) = system.http(system.logger.health_port, "/metrics");
    assert_eq!(
        metric_value(&text, r#"plantd_logger_malformed_total{bus="event"}"#),
        2.0
    );

    // Still healthy and still storing.
    assert_eq!(system.http(system.logger.health_port, "/healthz").0, 200);
    publisher.publish("org.plantd.event.after", b"[1]").unwrap();
    wait_until("an event after the garbage is stored", || {
        system.data(
            "events-query",
            json!({"topic_prefix": "org.plantd.event.after"}),
        )["count"]
            == json!(1)
    });

    // Bad requests get error envelopes, not silence.
    let reply = system.query("drop-tables", json!({}));
    assert_eq!(
        reply["error"]["code"],
        json!("UNKNOWN_OPERATION"),
        "{reply}"
    );
    let reply = system.query("events-query", json!({"since": "last tuesday"}));
    assert_eq!(reply["error"]["code"], json!("INVALID_REQUEST"), "{reply}");
    let reply = system.query("metrics-query", json!({"limit": -1}));
    assert_eq!(reply["error"]["code"], json!("INVALID_REQUEST"), "{reply}");
    let client = plantd_worker_sdk::client::Client::connect(&system.broker_endpoint)
        .unwrap()
        .with_timeout(DEADLINE);
    let reply = client
        .request(
            plantd_logger::SERVICE,
            vec![b"stats".to_vec(), b"{not json".to_vec()],
        )
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply[0]).unwrap();
    assert_eq!(reply["error"]["code"], json!("INVALID_REQUEST"), "{reply}");
    system.stop();
}

fn retention_deletes_rows_older_than_the_maximum_age(backend: Backend) {
    let Some(system) = System::start_on(backend, |c| {
        c.retention_max_age_secs = 3600;
        c.retention_interval_secs = 1;
    }) else {
        return;
    };
    let publisher = Publisher::connect(&system.bus("metric").frontend).unwrap();
    wait_until_the_logger_hears(&system, &publisher, "metric");
    let mut old = Metric::new("ret", "old", 1.0);
    old.time = Utc::now() - chrono::Duration::hours(2);
    publisher.publish_metric(&old).unwrap();
    publisher
        .publish_metric(&Metric::new("ret", "new", 2.0))
        .unwrap();
    wait_until("the old row is deleted and the new one kept", || {
        let (_, text) = system.http(system.logger.health_port, "/metrics");
        let deleted = metric_value(
            &text,
            r#"plantd_logger_retention_deleted_total{table="metrics"}"#,
        );
        let rows = system.data(
            "metrics-query",
            json!({"topic_prefix": "org.plantd.metric.ret."}),
        );
        deleted >= 1.0 && rows["count"] == json!(1) && rows["metrics"][0]["channel"] == json!("new")
    });
    system.stop();
}

fn retention_keeps_only_the_newest_rows_when_capped(backend: Backend) {
    let Some(system) = System::start_on(backend, |c| {
        c.retention_max_age_secs = 0;
        c.retention_max_rows = 5;
        c.retention_interval_secs = 1;
    }) else {
        return;
    };
    let publisher = Publisher::connect(&system.bus("event").frontend).unwrap();
    wait_until_the_logger_hears(&system, &publisher, "event");
    for n in 0..20 {
        publisher
            .publish(
                "org.plantd.event.count",
                json!({"n": n}).to_string().as_bytes(),
            )
            .unwrap();
    }
    wait_until("only the newest five rows remain", || {
        let data = system.data("events-query", json!({"limit": 100}));
        let ns: Vec<&Value> = data["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["payload"]["n"])
            .collect();
        ns == [&json!(19), &json!(18), &json!(17), &json!(16), &json!(15)]
    });
    system.stop();
}

#[test]
fn the_protocol_setting_is_the_dialect_the_logger_registers_and_serves_in() {
    let system = System::start(|c| c.protocol = Dialect::V01);
    let client = Client::connect(&system.broker_endpoint).unwrap();
    // The broker reports the dialect each worker registered in.
    let workers = client
        .workers(plantd_logger::SERVICE)
        .expect("logger registered");
    assert!(
        !workers.is_empty() && workers.iter().all(|w| w.dialect == "0.1"),
        "{workers:?}"
    );
    assert!(system.data("stats", json!({})).is_object());
    system.stop();
}
