//! `plant bus`, `plant metrics`, `plant events` and `plant logger` against a real broker with its
//! buses and a real logger (SQLite in a tempdir), all started in this process on free loopback
//! ports, driving the built `plant` binary.
//!
//! PUB/SUB drops messages published before a subscription has reached the publisher (the slow
//! joiner), so every test that waits for a message publishes in a loop until it arrives instead of
//! guessing how long a subscription takes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use plantd_broker::bus::{BusConfig, BusSettings};
use plantd_broker::BrokerConfig;
use plantd_logger::{BusSubscription, LoggerConfig};
use plantd_worker_sdk::bus::{Event, Metric, Publisher};
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::free_port;
use plantd_worker_sdk::Shutdown;
use serde_json::{json, Value};

/// Generous for a loaded 2-core machine; never waited for on success.
const DEADLINE: Duration = Duration::from_secs(30);
const LOGGER: &str = "org.plantd.Logger";

/// A broker hosting `state`, `event` and `metric` buses and a logger subscribed to all three,
/// shared by every test and kept until the process ends. The `event` bus binds wildcard
/// addresses (`tcp://*:port`), so `mmi.broker` lists endpoints the CLI must translate.
struct System {
    endpoint: String,
    buses: Vec<BusConfig>,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl System {
    fn bus(&self, name: &str) -> &BusConfig {
        self.buses.iter().find(|b| b.name == name).expect("bus")
    }
}

/// The port of a `tcp://host:port` endpoint.
fn port(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').expect("host:port").1
}

fn wait_for_service(endpoint: &str, service: &str) {
    let client = Client::connect(endpoint)
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let deadline = Instant::now() + DEADLINE;
    while !client.service_available(service).unwrap_or(false) {
        assert!(Instant::now() < deadline, "{service} never registered");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn system() -> &'static System {
    static SYSTEM: OnceLock<System> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let shutdown = Shutdown::new();
        let buses: Vec<BusConfig> = ["state", "event", "metric"]
            .into_iter()
            .map(|name| {
                let host = if name == "event" { "*" } else { "127.0.0.1" };
                BusConfig {
                    name: name.into(),
                    frontend: format!("tcp://{host}:{}", free_port()),
                    backend: format!("tcp://{host}:{}", free_port()),
                    capture: None,
                }
            })
            .collect();
        let broker = BrokerConfig {
            endpoint: format!("tcp://127.0.0.1:{}", free_port()),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            bus: BusSettings {
                buses: buses.clone(),
                ..BusSettings::default()
            },
            // The event bus binds every interface on purpose (above), which protected mode
            // allows without CURVE only when told so.
            security: plantd_broker::security::SecuritySettings { insecure: true },
            ..BrokerConfig::default()
        };
        let endpoint = broker.endpoint.clone();
        let logger = LoggerConfig {
            broker_endpoint: endpoint.clone(),
            db: dir.path().join("logger.db"),
            buses: buses
                .iter()
                .map(|b| BusSubscription {
                    name: b.name.clone(),
                    endpoint: format!("tcp://127.0.0.1:{}", port(&b.backend)),
                })
                .collect(),
            flush_interval_ms: 20,
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            auth: plantd_worker_sdk::auth::AuthConfig::off(),
            ..LoggerConfig::default()
        };
        runtime.spawn(plantd_broker::run(broker, shutdown.clone()));
        runtime.spawn(plantd_logger::run(logger, shutdown));
        wait_for_service(&endpoint, LOGGER);
        System {
            endpoint,
            buses,
            _dir: dir,
            _runtime: runtime,
        }
    })
}

/// A broker with its buses turned off and no logger. Its queue time stays the default 30 s, far
/// longer than the CLI waits: "no such service" must come from the CLI's own probe.
fn bare_broker() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let runtime = Box::leak(Box::new(tokio::runtime::Runtime::new().unwrap()));
        let config = BrokerConfig {
            endpoint: format!("tcp://127.0.0.1:{}", free_port()),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            bus: BusSettings::disabled(),
            ..BrokerConfig::default()
        };
        let endpoint = config.endpoint.clone();
        runtime.spawn(plantd_broker::run(config, Shutdown::new()));
        let client = Client::connect(&endpoint)
            .unwrap()
            .with_timeout(Duration::from_millis(500));
        let deadline = Instant::now() + DEADLINE;
        while client.broker_info().is_err() {
            assert!(Instant::now() < deadline, "the bare broker never answered");
            std::thread::sleep(Duration::from_millis(10));
        }
        endpoint
    })
}

/// `plant --endpoint <endpoint> args...`, free of the caller's PLANTD_CLIENT_* settings.
fn command(endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plant"));
    command.arg("--endpoint").arg(endpoint).args(args);
    for var in [
        "PLANTD_CLIENT_OUTPUT",
        "PLANTD_CLIENT_TIMEOUT",
        "PLANTD_CLIENT_RETRIES",
    ] {
        command.env_remove(var);
    }
    command
}

fn plant_at(endpoint: &str, args: &[&str]) -> Output {
    command(endpoint, args).output().unwrap()
}

fn plant(args: &[&str]) -> Output {
    plant_at(&system().endpoint, args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "plant failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(output)
}

fn json_of(output: &Output) -> Value {
    serde_json::from_str(&succeeded(output)).expect("stdout is JSON")
}

/// Asserts exit code 1 and exactly one `error:` line on stderr; returns that line.
fn failed(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "stdout: {}", stdout(output));
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    lines[0].to_owned()
}

/// A running `plant bus sub`, its stdout lines arriving on a channel. Killed on drop.
struct Sub {
    child: Child,
    lines: Receiver<String>,
}

impl Sub {
    fn spawn(args: &[&str]) -> Sub {
        let mut child = command(&system().endpoint, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Sub { child, lines }
    }

    /// The lines printed so far, parsed.
    fn take_lines(&self) -> Vec<Value> {
        self.lines
            .try_iter()
            .map(|l| serde_json::from_str(&l).expect("a JSON line"))
            .collect()
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits for the exit; returns the status, the lines not taken yet and everything on stderr.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<Value>, String) {
        let status = self.child.wait().unwrap();
        // The reader thread ends (dropping its sender) at the end of the closed stdout.
        let lines = self
            .lines
            .iter()
            .map(|l| serde_json::from_str(&l).expect("a JSON line"))
            .collect();
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut err).unwrap();
        }
        (status, lines, err)
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bus_sub_prints_matching_messages_as_json_lines_from_endpoints_found_via_mmi() {
    let system = system();
    // No --backend/--frontend anywhere: every endpoint comes from mmi.broker.
    let mut counted = Sub::spawn(&[
        "bus",
        "sub",
        "event",
        "org.plantd.clitest.a",
        "--count",
        "2",
    ]);
    let both = Sub::spawn(&[
        "bus",
        "sub",
        "event",
        "org.plantd.clitest.b",
        "org.plantd.clitest.c",
    ]);
    let expected_a = json!({"topic": "org.plantd.clitest.a.json", "encoding": "msgpack",
                            "payload": {"n": 1, "s": "x", "list": [true, null, 1.5]}});
    let expected_b = json!({"topic": "org.plantd.clitest.b.text", "encoding": "text",
                            "payload": "hello world"});
    let expected_c =
        json!({"topic": "org.plantd.clitest.c.json", "encoding": "json", "payload": [1, 2]});

    let mut from_counted = Vec::new();
    let mut from_both = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let seen = |lines: &[Value], line: &Value| lines.contains(line);
    while !(counted.exited() && seen(&from_both, &expected_b) && seen(&from_both, &expected_c)) {
        assert!(
            Instant::now() < deadline,
            "subscribers did not get everything: {from_counted:?} {from_both:?}"
        );
        // Filtered out by every subscriber.
        succeeded(&plant(&[
            "bus",
            "pub",
            "event",
            "org.plantd.clitest.z",
            "{}",
        ]));
        let published = json_of(&plant(&[
            "-o",
            "json",
            "bus",
            "pub",
            "event",
            "org.plantd.clitest.a.json",
            r#"{"n":1,"s":"x","list":[true,null,1.5]}"#,
        ]));
        // The wildcard frontend was reached at the broker's host.
        let frontend = &system.bus("event").frontend;
        assert_eq!(
            published,
            json!({"bus": "event", "topic": "org.plantd.clitest.a.json", "encoding": "msgpack",
                   "endpoint": format!("tcp://127.0.0.1:{}", port(frontend)), "bytes": 25})
        );
        succeeded(&plant(&[
            "bus",
            "pub",
            "--raw",
            "event",
            "org.plantd.clitest.b.text",
            "hello world",
        ]));
        succeeded(&plant(&[
            "bus",
            "pub",
            "event",
            "org.plantd.clitest.c.json",
            "[1,2]",
            "--raw",
        ]));
        from_counted.extend(counted.take_lines());
        from_both.extend(both.take_lines());
    }
    let (status, rest, err) = counted.finish();
    from_counted.extend(rest);
    assert!(status.success(), "{status}: {err}");
    let backend = &system.bus("event").backend;
    assert!(
        err.contains(&format!("tcp://127.0.0.1:{}", port(backend))),
        "the wildcard backend is reached at the broker's host: {err}"
    );
    assert_eq!(from_counted, vec![expected_a.clone(), expected_a]);
    for line in from_both.iter().chain(&both.take_lines()) {
        assert!(
            *line == expected_b || *line == expected_c,
            "only the subscribed prefixes arrive: {line}"
        );
    }
}

#[test]
fn bus_sub_for_ends_after_the_time_and_fails_when_count_is_not_reached() {
    let started = Instant::now();
    let output = plant(&[
        "bus",
        "sub",
        "metric",
        "org.plantd.nobody",
        "--for",
        "300ms",
    ]);
    assert_eq!(succeeded(&output), "");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let output = plant(&[
        "bus",
        "sub",
        "metric",
        "org.plantd.nobody",
        "--count",
        "1",
        "--for",
        "300ms",
    ]);
    // Besides the one-line error, stderr holds only the note saying where sub listened.
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("listening on bus metric at tcp://127.0.0.1:"),
        "{err}"
    );
    assert_eq!(
        lines[1],
        "error: received 0 of 1 messages on bus metric within 300ms"
    );
}

/// Publishes `probe` (on a fresh publisher of `bus`) until `plant <query>` returns a row, so the
/// logger's subscription is known to be live; returns the publisher for what follows.
fn publisher_the_logger_hears(
    bus: &str,
    publish: impl Fn(&Publisher),
    query: &[&str],
) -> Publisher {
    let publisher =
        Publisher::connect(&system().bus(bus).frontend.replace('*', "127.0.0.1")).unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        publish(&publisher);
        if json_of(&plant(query))["count"].as_u64().unwrap() > 0 {
            return publisher;
        }
        assert!(
            Instant::now() < deadline,
            "the logger never stored {query:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the JSON query until `done` accepts its data.
fn query_until(args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let data = json_of(&plant(args));
        if done(&data) {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} never satisfied: {data}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(time: &str, value: f64) -> Metric {
    serde_json::from_value(json!({"time": time, "source": "clitest", "channel": "temp",
                                  "value": value, "units": "C"}))
    .unwrap()
}

#[test]
fn metrics_query_and_summary_return_what_was_published() {
    let publisher = publisher_the_logger_hears(
        "metric",
        |p| {
            p.publish_metric(&Metric::new("clitest", "probe", 1.0))
                .unwrap()
        },
        &[
            "-o",
            "json",
            "metrics",
            "query",
            "--prefix",
            "org.plantd.metric.clitest.probe",
        ],
    );
    for (time, value) in [
        ("2024-01-01T00:00:10Z", 1.0),
        ("2024-01-01T00:00:50Z", 2.0),
        ("2024-01-01T00:01:30Z", 4.0),
    ] {
        publisher.publish_metric(&metric(time, value)).unwrap();
    }
    let prefix = "org.plantd.metric.clitest.temp";
    let data = query_until(
        &["-o", "json", "metrics", "query", "--prefix", prefix],
        |d| d["count"] == 3,
    );
    let rows = data["metrics"].as_array().unwrap();
    let values: Vec<&Value> = rows.iter().map(|m| &m["value"]).collect();
    assert_eq!(
        values,
        [&json!(4.0), &json!(2.0), &json!(1.0)],
        "newest first"
    );
    assert_eq!(rows[0]["time"], "2024-01-01T00:01:30Z");
    assert_eq!(
        (
            &rows[0]["bus"],
            &rows[0]["topic"],
            &rows[0]["source"],
            &rows[0]["units"]
        ),
        (
            &json!("metric"),
            &json!(prefix),
            &json!("clitest"),
            &json!("C")
        )
    );

    let limited = json_of(&plant(&[
        "-o", "json", "metrics", "query", "--prefix", prefix, "--limit", "1",
    ]));
    assert_eq!(limited["metrics"][0]["value"], 4.0);
    assert_eq!(limited["count"], 1);
    let window = json_of(&plant(&[
        "-o",
        "json",
        "metrics",
        "query",
        "--prefix",
        prefix,
        "--bus",
        "metric",
        "--since",
        "2024-01-01T00:00:30Z",
        "--until",
        "1704067260", // 00:01:00 as Unix seconds
    ]));
    assert_eq!(window["count"], 1);
    assert_eq!(window["metrics"][0]["value"], 2.0);
    let other_bus = json_of(&plant(&[
        "-o", "json", "metrics", "query", "--prefix", prefix, "--bus", "state",
    ]));
    assert_eq!(other_bus["count"], 0);

    let summary = json_of(&plant(&[
        "-o", "json", "metrics", "summary", "--prefix", prefix, "--bucket", "1m",
    ]));
    assert_eq!(
        summary,
        json!({"bucket_secs": 60.0, "series": [{"topic": prefix, "buckets": [
            {"start": "2024-01-01T00:00:00Z", "count": 2, "min": 1.0, "max": 2.0, "avg": 1.5},
            {"start": "2024-01-01T00:01:00Z", "count": 1, "min": 4.0, "max": 4.0, "avg": 4.0},
        ]}]})
    );

    let text = succeeded(&plant(&["metrics", "query", "--prefix", prefix]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("TIME"), "{text}");
    assert!(
        lines[1].contains("2024-01-01T00:01:30Z") && lines[1].contains(prefix),
        "{text}"
    );
    let text = succeeded(&plant(&[
        "metrics", "summary", "--prefix", prefix, "--bucket", "60",
    ]));
    assert!(text.starts_with("bucket 60s\nTOPIC"), "{text}");
    assert!(text.contains("2024-01-01T00:00:00Z"), "{text}");

    let invalid = failed(&plant(&["metrics", "query", "--since", "yesterday"]));
    assert!(
        invalid.starts_with("error: INVALID_REQUEST: since must be"),
        "{invalid}"
    );
}

#[test]
fn events_query_and_stats_show_events_and_flagged_garbage() {
    let probe = "org.plantd.event.clitest.probe";
    let publisher = publisher_the_logger_hears(
        "event",
        |p| p.publish(probe, b"{}").unwrap(),
        &["-o", "json", "events", "query", "--prefix", probe],
    );
    let event = Event::new("door-1", "opened", json!({"door": 1}));
    publisher
        .publish_msgpack("org.plantd.event.clitest.door", &event)
        .unwrap();
    publisher
        .publish("org.plantd.event.clitest.junk", &[0xc1, 0xff, 0x00])
        .unwrap();
    let query = [
        "-o",
        "json",
        "events",
        "query",
        "--bus",
        "event",
        "--prefix",
        "org.plantd.event.clitest.",
    ];
    let has = |data: &Value, topic: &str| {
        data["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["topic"] == topic)
    };
    let data = query_until(&query, |d| {
        has(d, "org.plantd.event.clitest.door") && has(d, "org.plantd.event.clitest.junk")
    });
    let find = |topic: &str| {
        data["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["topic"] == topic)
            .unwrap()
            .clone()
    };
    let door = find("org.plantd.event.clitest.door");
    assert_eq!(
        (&door["encoding"], &door["malformed"], &door["bus"]),
        (&json!("msgpack"), &json!(false), &json!("event"))
    );
    assert_eq!(door["payload"]["data"], json!({"door": 1}));
    assert_eq!(door["payload"]["kind"], "opened");
    let junk = find("org.plantd.event.clitest.junk");
    assert_eq!(
        (&junk["encoding"], &junk["malformed"], &junk["payload"]),
        (&json!("base64"), &json!(true), &json!("wf8A"))
    );

    let mut malformed_only = query.to_vec();
    malformed_only.push("--malformed");
    let data = json_of(&plant(&malformed_only));
    let topics: Vec<&Value> = data["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["topic"])
        .collect();
    assert_eq!(topics, [&json!("org.plantd.event.clitest.junk")]);

    let text = succeeded(&plant(&[
        "events",
        "query",
        "--prefix",
        "org.plantd.event.clitest.junk",
    ]));
    assert!(text.contains("base64 (malformed)"), "{text}");

    let stats = json_of(&plant(&["logger", "stats"]));
    assert!(
        stats["events"]["malformed"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        stats["buses"]["event"]["events"].as_u64().unwrap() >= 3,
        "{stats}"
    );
    assert!(stats["rows"].as_u64().unwrap() >= 3, "{stats}");
}

#[test]
fn an_unknown_bus_is_refused_naming_the_known_ones() {
    for args in [
        &["bus", "pub", "nope", "t", "{}"][..],
        &["bus", "sub", "nope", "--count", "1"][..],
    ] {
        let line = failed(&plant(args));
        assert!(line.contains("no bus \"nope\""), "{line}");
        assert!(
            line.ends_with("its buses are: state, event, metric"),
            "{line}"
        );
    }
}

#[test]
fn a_bad_json_payload_is_refused_before_any_traffic() {
    // The broker endpoint is never contacted: nothing listens on it.
    let nowhere = format!("tcp://127.0.0.1:{}", free_port());
    let line = failed(&plant_at(&nowhere, &["bus", "pub", "event", "t", "{nope"]));
    assert!(
        line.starts_with("error: payload is not valid JSON") && line.contains("--raw"),
        "{line}"
    );
    let line = failed(&plant(&["bus", "pub", "event", "", "{}"]));
    assert!(line.contains("topic must not be empty"), "{line}");
}

#[test]
fn an_unreachable_frontend_fails_within_the_timeout() {
    let frontend = format!("tcp://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let line = failed(&plant(&[
        "--timeout",
        "300ms",
        "bus",
        "pub",
        "metric",
        "t",
        "1",
        "--frontend",
        &frontend,
    ]));
    assert_eq!(
        line,
        format!("error: cannot reach bus metric at {frontend}: no connection within 300ms")
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_broker_without_buses_or_logger_gives_clear_errors() {
    let endpoint = bare_broker();
    let line = failed(&plant_at(endpoint, &["bus", "sub", "event"]));
    assert_eq!(
        line,
        format!(
            "error: the broker at {endpoint} hosts no buses (they are turned off in its \
             configuration); give --backend to use a bus elsewhere"
        )
    );
    for args in [
        &["metrics", "query"][..],
        &["metrics", "summary"][..],
        &["events", "query"][..],
        &["logger", "stats"][..],
    ] {
        let args = [&["--timeout", "500ms"][..], args].concat();
        let error = failed(&plant_at(endpoint, &args));
        assert!(
            error.starts_with(
                "error: no such service: org.plantd.Logger (no worker is registered for it; the \
                 request stays queued"
            ),
            "{args:?}: {error}"
        );
    }
}
