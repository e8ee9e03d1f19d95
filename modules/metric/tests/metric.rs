//! The metric module against a real broker bus: the producer publishes real host readings, the
//! consumer prints what is on the bus as JSON lines.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plantd_broker::bus::{BusConfig, BusSettings};
use plantd_broker::BrokerConfig;
use plantd_module_metric::{MetricModuleConfig, Mode};
use plantd_worker_sdk::bus::{Metric, Publisher, Subscriber};
use plantd_worker_sdk::testing::free_port;
use plantd_worker_sdk::Shutdown;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

use plantd_worker_sdk::testing::wait_until;

fn healthz(port: u16) -> Option<(u16, Value)> {
    let response = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().ok()?))
}

/// A broker with one `metric` bus on free ports, in `runtime`.
fn start_broker(runtime: &tokio::runtime::Runtime, shutdown: &Shutdown) -> BusConfig {
    let bus = BusConfig {
        name: "metric".into(),
        frontend: format!("tcp://127.0.0.1:{}", free_port()),
        backend: format!("tcp://127.0.0.1:{}", free_port()),
        capture: None,
    };
    let config = BrokerConfig {
        endpoint: format!("tcp://127.0.0.1:{}", free_port()),
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        bus: BusSettings {
            buses: vec![bus.clone()],
            ..BusSettings::default()
        },
        ..BrokerConfig::default()
    };
    let port = config.health_port;
    let broker = runtime.spawn(plantd_broker::run(config, shutdown.clone()));
    let end = Instant::now() + DEADLINE;
    loop {
        if healthz(port).is_some_and(|(s, _)| s == 200) {
            break;
        }
        if broker.is_finished() {
            let result = runtime.block_on(broker);
            panic!("the broker stopped before it was UP: {result:?}");
        }
        assert!(
            Instant::now() < end,
            "timed out waiting until the broker is UP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bus
}

fn module_config(bus: &BusConfig, mode: Mode) -> MetricModuleConfig {
    MetricModuleConfig {
        mode,
        bus_frontend: bus.frontend.clone(),
        bus_backend: bus.backend.clone(),
        interval_ms: 100,
        source: "it.host".into(),
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        ..MetricModuleConfig::default()
    }
}

#[test]
fn the_producer_publishes_real_readings_of_this_host() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shutdown = Shutdown::new();
    let bus = start_broker(&runtime, &shutdown);
    let config = module_config(&bus, Mode::Producer);
    let health_port = config.health_port;
    let module = runtime.spawn(plantd_module_metric::run(config, shutdown.clone()));

    let subscriber = Subscriber::connect(&bus.backend).unwrap();
    // Dots in the source become `_` so the source stays one topic segment.
    subscriber.subscribe("org.plantd.metric.it_host.").unwrap();
    let mut seen = std::collections::BTreeMap::new();
    let end = Instant::now() + DEADLINE;
    while seen.len() < 7 || !seen.keys().any(|c: &String| c.starts_with("net.")) {
        assert!(!module.is_finished(), "the module exited");
        assert!(
            Instant::now() < end,
            "readings within the deadline: seen {:?}, health {:?}",
            seen.keys().collect::<Vec<_>>(),
            healthz(health_port)
        );
        let Some(msg) = subscriber.recv_timeout(Duration::from_millis(200)).unwrap() else {
            continue;
        };
        let metric: Metric = msg.decode_body().unwrap();
        assert_eq!(
            msg.topic,
            format!("org.plantd.metric.it_host.{}", metric.channel)
        );
        assert_eq!(metric.source, "it.host");
        seen.insert(metric.channel.clone(), metric);
    }
    let total = seen["memory.total"].value;
    assert!(total > 0.0 && seen["memory.used"].value > 0.0, "{seen:?}");
    assert!(seen["memory.available"].value <= total);
    assert_eq!(seen["memory.used"].units, "bytes");
    assert!((0.0..=100.0).contains(&seen["cpu.usage"].value));
    for load in ["load1", "load5", "load15"] {
        assert!(seen[load].value >= 0.0);
    }
    // Not a constant: readings carry the time they were taken, and counters only grow.
    let first_time = seen["memory.total"].time;
    let later: Metric = loop {
        let msg = subscriber
            .recv_timeout(DEADLINE)
            .unwrap()
            .expect("another sample");
        let m: Metric = msg.decode_body().unwrap();
        if m.channel == "memory.total" && m.time > first_time {
            break m;
        }
    };
    assert!(later.time > first_time);

    wait_until("the module is UP", || {
        healthz(health_port).is_some_and(|(status, body)| {
            status == 200
                && body["checks"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["name"] == "bus_connection" && c["status"] == "UP")
                })
        })
    });
    shutdown.cancel();
    let result = runtime.block_on(async { tokio::time::timeout(DEADLINE, module).await });
    result
        .expect("stopped in time")
        .unwrap()
        .expect("clean exit");
}

#[test]
fn without_a_bus_the_module_reports_down_but_keeps_running() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shutdown = Shutdown::new();
    let nowhere = BusConfig {
        name: "metric".into(),
        frontend: format!("tcp://127.0.0.1:{}", free_port()),
        backend: format!("tcp://127.0.0.1:{}", free_port()),
        capture: None,
    };
    let config = module_config(&nowhere, Mode::Producer);
    let port = config.health_port;
    let module = runtime.spawn(plantd_module_metric::run(config, shutdown.clone()));
    wait_until("the module reports the missing bus", || {
        healthz(port).is_some_and(|(status, body)| {
            status == 503 && body["checks"].to_string().contains("not connected")
        })
    });
    assert!(!module.is_finished());
    shutdown.cancel();
    let result = runtime.block_on(async { tokio::time::timeout(DEADLINE, module).await });
    result
        .expect("stopped in time")
        .unwrap()
        .expect("clean exit");
}

/// A `Write` the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[test]
fn the_consumer_prints_one_json_line_per_metric() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shutdown = Shutdown::new();
    let bus = start_broker(&runtime, &shutdown);
    let out = Captured::default();
    let config = MetricModuleConfig {
        topic_prefix: "org.plantd.metric.cli.".into(),
        ..module_config(&bus, Mode::Consumer)
    };
    let module = runtime.spawn(plantd_module_metric::run_with_output(
        config,
        shutdown.clone(),
        out.clone(),
    ));
    let publisher = Publisher::connect(&bus.frontend).unwrap();
    let metric = Metric::new("cli", "temp", 21.5).with_units("C");
    // Keep publishing until the consumer's subscription is in effect (slow joiner).
    wait_until("the consumer prints a line", || {
        publisher.publish_metric(&metric).unwrap();
        publisher
            .publish("org.plantd.metric.cli.junk", b"\xc1")
            .unwrap();
        publisher
            .publish_metric(&Metric::new("elsewhere", "temp", 1.0))
            .unwrap();
        !out.lines().is_empty()
    });
    shutdown.cancel();
    let result = runtime.block_on(async { tokio::time::timeout(DEADLINE, module).await });
    result
        .expect("stopped in time")
        .unwrap()
        .expect("clean exit");
    let lines = out.lines();
    for line in &lines {
        assert_eq!(
            line["topic"], "org.plantd.metric.cli.temp",
            "only decodable metrics under the prefix"
        );
        assert_eq!(
            (line["source"].as_str(), line["value"].as_f64()),
            (Some("cli"), Some(21.5))
        );
        assert_eq!(line["units"], "C");
    }
}
