//! The broker's pub/sub buses end to end: real broker (`plantd_broker::run`), SDK publishers and
//! subscribers, all on free loopback ports.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use plantd_broker::bus::{BusConfig, BusSettings};
use plantd_broker::{BrokerConfig, BrokerError};
use plantd_worker_sdk::bus::{BusMessage, Metric, Publisher, Subscriber};
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::free_port;
use plantd_worker_sdk::Shutdown;

/// Generous for a loaded 2-core machine; never waited for on success.
const DEADLINE: Duration = Duration::from_secs(15);
/// Topic of the readiness probes (see [`wait_until_subscribed`]).
const PROBE: &str = "probe";

struct TestBroker {
    endpoint: String,
    health_port: u16,
    shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), BrokerError>>>,
}

impl TestBroker {
    fn start(bus: BusSettings) -> TestBroker {
        TestBroker::start_with(BrokerConfig {
            bus,
            ..BrokerConfig::default()
        })
    }

    /// `config` on free loopback ports.
    fn start_with(config: BrokerConfig) -> TestBroker {
        let config = BrokerConfig {
            endpoint: format!("tcp://127.0.0.1:{}", free_port()),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            ..config
        };
        let shutdown = Shutdown::new();
        let token = shutdown.clone();
        let run_config = config.clone();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(plantd_broker::run(run_config, token))
        });
        let mut broker = TestBroker {
            endpoint: config.endpoint,
            health_port: config.health_port,
            shutdown,
            thread: Some(thread),
        };
        let url = broker.url("/healthz");
        wait_until("the broker is UP", || {
            if broker.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = broker.thread.take().map(|t| t.join());
                panic!("broker exited during startup: {result:?}");
            }
            reqwest::blocking::get(&url).is_ok_and(|r| r.status() == 200)
        });
        broker
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.health_port)
    }

    fn metrics(&self) -> String {
        reqwest::blocking::get(self.url("/metrics"))
            .and_then(|r| r.text())
            .expect("GET /metrics")
    }

    fn stop(&mut self) -> Result<(), BrokerError> {
        self.shutdown.cancel();
        let thread = self.thread.take().expect("running");
        thread.join().expect("broker thread")
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

use plantd_worker_sdk::testing::wait_until;

/// One bus on free loopback ports.
fn bus_on_free_ports(name: &str) -> BusConfig {
    BusConfig {
        name: name.into(),
        frontend: format!("tcp://127.0.0.1:{}", free_port()),
        backend: format!("tcp://127.0.0.1:{}", free_port()),
        capture: None,
    }
}

fn settings(buses: Vec<BusConfig>) -> BusSettings {
    BusSettings {
        buses,
        ..BusSettings::default()
    }
}

/// PUB/SUB's slow joiner: a subscription takes effect only once it has travelled subscriber →
/// broker → publisher. Each subscriber also subscribes to [`PROBE`]; every publisher publishes
/// probes naming itself until every subscriber has seen one from every publisher. Subscriptions
/// travel in order, so the earlier (real) ones are in effect too.
fn wait_until_subscribed(publishers: &[&Publisher], subscribers: &[&Subscriber]) {
    for sub in subscribers {
        sub.subscribe(PROBE).expect("subscribe probe");
    }
    let mut seen: Vec<HashSet<Vec<u8>>> = vec![HashSet::new(); subscribers.len()];
    wait_until("every subscription is in effect", || {
        for (i, publisher) in publishers.iter().enumerate() {
            publisher
                .publish(PROBE, i.to_string().as_bytes())
                .expect("publish probe");
        }
        for (sub, seen) in subscribers.iter().zip(&mut seen) {
            while let Some(msg) = sub
                .recv_timeout(Duration::from_millis(5))
                .expect("recv probe")
            {
                if msg.topic == PROBE {
                    seen.insert(msg.body().to_vec());
                }
            }
        }
        seen.iter().all(|s| s.len() == publishers.len())
    });
    for sub in subscribers {
        sub.unsubscribe(PROBE).expect("unsubscribe probe");
    }
}

/// The next message that is not a leftover probe.
fn next(sub: &Subscriber) -> BusMessage {
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no message within the deadline");
        if let Some(msg) = sub.recv_timeout(left).expect("recv") {
            if msg.topic != PROBE {
                return msg;
            }
        }
    }
}

#[test]
fn prefix_filtering_multi_frame_and_typed_payloads_through_a_bus() {
    let bus = bus_on_free_ports("metric");
    let broker = TestBroker::start(settings(vec![bus.clone()]));
    let publisher = Publisher::connect(&bus.frontend).unwrap();
    let everything = Subscriber::connect(&bus.backend).unwrap();
    everything.subscribe("").unwrap();
    let metrics = Subscriber::connect(&bus.backend).unwrap();
    metrics.subscribe("org.plantd.metric.").unwrap();
    let events = Subscriber::connect(&bus.backend).unwrap();
    events.subscribe("org.plantd.event.").unwrap();
    wait_until_subscribed(&[&publisher], &[&everything, &metrics, &events]);

    let metric = Metric::new("host-a", "load1", 0.75)
        .with_units("load")
        .with_tag("site", "lab");
    publisher.publish_metric(&metric).unwrap();
    let frames: [&[u8]; 3] = [b"first", b"", &[0, 159, 146, 150]];
    publisher
        .publish_frames("org.plantd.event.door", &frames)
        .unwrap();
    publisher.publish("org.plantd.other", b"x").unwrap();
    // One publisher's messages arrive in order, so these end markers close each stream.
    publisher.publish("org.plantd.metric.~end", b"").unwrap();
    publisher.publish("org.plantd.event.~end", b"").unwrap();

    // The typed round trip.
    let got = next(&metrics);
    assert_eq!(got.topic, "org.plantd.metric.host-a.load1");
    assert_eq!(got.decode_body::<Metric>().unwrap(), metric);
    assert_eq!(
        next(&metrics).topic,
        "org.plantd.metric.~end",
        "no event, no other"
    );

    // Multi-frame payloads keep every frame, including empty and non-UTF-8 ones.
    let got = next(&events);
    assert_eq!(got.topic, "org.plantd.event.door");
    assert_eq!(got.payload, frames.map(<[u8]>::to_vec).to_vec());
    assert_eq!(next(&events).topic, "org.plantd.event.~end");

    let topics: Vec<String> = (0..5).map(|_| next(&everything).topic).collect();
    assert_eq!(
        topics,
        [
            "org.plantd.metric.host-a.load1",
            "org.plantd.event.door",
            "org.plantd.other",
            "org.plantd.metric.~end",
            "org.plantd.event.~end"
        ]
    );

    // `/metrics` counts what the proxy forwarded (probes included, so at least our 5).
    let text = broker.metrics();
    let forwarded = text
        .lines()
        .find(|l| l.starts_with(r#"plantd_bus_messages_total{bus="metric",direction="forwarded"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no forwarded counter in:\n{text}"));
    assert!(forwarded >= 5.0, "forwarded {forwarded}");
}

#[test]
fn several_publishers_and_subscribers_each_see_every_message_in_publisher_order() {
    const PER_PUBLISHER: usize = 500;
    let bus = bus_on_free_ports("event");
    let _broker = TestBroker::start(settings(vec![bus.clone()]));
    let publishers: Vec<Publisher> = (0..3)
        .map(|_| Publisher::connect(&bus.frontend).unwrap())
        .collect();
    let subscribers: Vec<Subscriber> = (0..3)
        .map(|_| {
            let s = Subscriber::connect(&bus.backend).unwrap();
            s.subscribe("org.plantd.event.").unwrap();
            s
        })
        .collect();
    wait_until_subscribed(
        &publishers.iter().collect::<Vec<_>>(),
        &subscribers.iter().collect::<Vec<_>>(),
    );

    for n in 0..PER_PUBLISHER {
        for (p, publisher) in publishers.iter().enumerate() {
            publisher
                .publish_msgpack(&format!("org.plantd.event.p{p}"), &n)
                .unwrap();
        }
    }
    for sub in &subscribers {
        let mut next_expected: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..PER_PUBLISHER * publishers.len() {
            let msg = next(sub);
            let n: usize = msg.decode_body().unwrap();
            let expected = next_expected.entry(msg.topic.clone()).or_default();
            assert_eq!(n, *expected, "{} out of order", msg.topic);
            *expected += 1;
        }
        assert_eq!(next_expected.len(), publishers.len());
        assert!(next_expected.values().all(|&n| n == PER_PUBLISHER));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_stream_yields_messages_asynchronously() {
    let bus = bus_on_free_ports("state");
    let bus_for_broker = bus.clone();
    let broker =
        tokio::task::spawn_blocking(move || TestBroker::start(settings(vec![bus_for_broker])))
            .await
            .unwrap();
    let publisher = Publisher::connect(&bus.frontend).unwrap();
    let subscriber = Subscriber::connect(&bus.backend).unwrap();
    subscriber.subscribe("org.plantd.state.").unwrap();
    wait_until_subscribed(&[&publisher], &[&subscriber]);
    let mut stream = subscriber.into_stream(16);
    for i in 0..3u8 {
        publisher.publish("org.plantd.state.changed", &[i]).unwrap();
    }
    for i in 0..3u8 {
        let msg = tokio::time::timeout(DEADLINE, async {
            loop {
                let msg = stream.next().await.expect("stream open").expect("message");
                if msg.topic != PROBE {
                    return msg;
                }
            }
        })
        .await
        .expect("a message in time");
        assert_eq!(
            (msg.topic.as_str(), msg.body()),
            ("org.plantd.state.changed", &[i][..])
        );
    }
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}

#[test]
fn the_capture_endpoint_sees_a_copy_of_the_traffic() {
    let mut bus = bus_on_free_ports("metric");
    bus.capture = Some(format!("tcp://127.0.0.1:{}", free_port()));
    let _broker = TestBroker::start(settings(vec![bus.clone()]));
    let capture = Subscriber::connect(bus.capture.as_deref().unwrap()).unwrap();
    capture.subscribe("").unwrap();
    let publisher = Publisher::connect(&bus.frontend).unwrap();
    let subscriber = Subscriber::connect(&bus.backend).unwrap();
    subscriber.subscribe("org.").unwrap();
    wait_until_subscribed(&[&publisher], &[&subscriber]);
    // The capture PUB has no subscription handshake with the proxy, only with us: keep
    // publishing until a copy shows up.
    let mut copied = false;
    wait_until("the capture sees a published message", || {
        publisher.publish("org.plantd.metric.x", b"42").unwrap();
        while let Some(msg) = capture.recv_timeout(Duration::from_millis(5)).unwrap() {
            copied |= msg.topic == "org.plantd.metric.x" && msg.body() == b"42";
        }
        copied
    });
    assert_eq!(
        next(&subscriber).body(),
        b"42",
        "the capture does not steal messages"
    );
}

#[test]
fn mmi_broker_lists_the_buses_and_their_endpoints() {
    let buses = vec![bus_on_free_ports("state"), bus_on_free_ports("metric")];
    let broker = TestBroker::start(settings(buses.clone()));
    let info = Client::connect(&broker.endpoint)
        .unwrap()
        .with_timeout(DEADLINE)
        .broker_info()
        .unwrap();
    let listed: Vec<(String, String, String)> = info
        .buses
        .iter()
        .map(|b| (b.name.clone(), b.frontend.clone(), b.backend.clone()))
        .collect();
    let expected: Vec<(String, String, String)> = buses
        .iter()
        .map(|b| (b.name.clone(), b.frontend.clone(), b.backend.clone()))
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(
        info.extra.get("buses_enabled"),
        Some(&serde_json::json!(true))
    );
}

#[test]
fn buses_turned_off_bind_nothing_and_mmi_broker_says_so() {
    let buses = vec![bus_on_free_ports("state"), bus_on_free_ports("metric")];
    let broker = TestBroker::start(BusSettings {
        enabled: false,
        ..settings(buses.clone())
    });
    for bus in &buses {
        for endpoint in [&bus.frontend, &bus.backend] {
            let addr = endpoint.trim_start_matches("tcp://");
            TcpListener::bind(addr)
                .unwrap_or_else(|e| panic!("{endpoint} should be free, the broker bound it: {e}"));
        }
    }
    let info = Client::connect(&broker.endpoint)
        .unwrap()
        .with_timeout(DEADLINE)
        .broker_info()
        .unwrap();
    assert!(info.buses.is_empty(), "{:?}", info.buses);
    assert_eq!(
        info.extra.get("buses_enabled"),
        Some(&serde_json::json!(false))
    );
    assert!(!broker.metrics().contains("plantd_bus_messages_total{"));

    // An empty list is another way to say it.
    let empty = TestBroker::start(settings(Vec::new()));
    let info = Client::connect(&empty.endpoint)
        .unwrap()
        .with_timeout(DEADLINE)
        .broker_info()
        .unwrap();
    assert!(info.buses.is_empty());
}

#[test]
fn a_bus_port_clash_fails_the_start_and_stopping_releases_the_ports() {
    let bus = bus_on_free_ports("metric");
    let mut first = TestBroker::start(settings(vec![bus.clone()]));
    let clash = BrokerConfig {
        endpoint: format!("tcp://127.0.0.1:{}", free_port()),
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        bus: settings(vec![bus.clone()]),
        ..BrokerConfig::default()
    };
    let result = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(plantd_broker::run(clash, Shutdown::new()));
    assert!(
        matches!(&result, Err(BrokerError::Socket { endpoint, .. }) if *endpoint == bus.frontend),
        "{result:?}"
    );
    first.stop().expect("clean stop");
    // libzmq closes listeners on its own thread, so allow it a moment.
    for endpoint in [&bus.frontend, &bus.backend] {
        wait_until("the bus ports are free again", || {
            TcpListener::bind(endpoint.trim_start_matches("tcp://")).is_ok()
        });
    }
}

#[test]
fn duplicate_bus_names_are_a_config_error() {
    let bus = bus_on_free_ports("metric");
    let config = BrokerConfig {
        bus: settings(vec![bus.clone(), bus]),
        ..BrokerConfig::default()
    };
    assert!(matches!(config.validate(), Err(BrokerError::Config(_))));
}

#[test]
fn a_publisher_sending_a_frame_above_max_message_size_is_dropped_and_the_bus_goes_on() {
    const LIMIT: usize = 1024;
    let bus = bus_on_free_ports("event");
    let _broker = TestBroker::start_with(BrokerConfig {
        max_message_size: LIMIT as i64,
        bus: settings(vec![bus.clone()]),
        ..BrokerConfig::default()
    });
    let context = zmq::Context::new();
    // The oversized publisher is a raw PUB whose connection events the test watches; declared
    // first so that the monitor's reader outlives the socket.
    let events = context.socket(zmq::PAIR).unwrap();
    let rude = context.socket(zmq::PUB).unwrap();
    rude.monitor(
        "inproc://bus-limit-monitor",
        i32::from(zmq::SocketEvent::DISCONNECTED.to_raw()),
    )
    .unwrap();
    events.set_rcvhwm(0).unwrap();
    events.connect("inproc://bus-limit-monitor").unwrap();
    rude.set_linger(0).unwrap();
    rude.connect(&bus.frontend).unwrap();
    let polite = Publisher::connect(&bus.frontend).unwrap();
    let subscriber = Subscriber::connect(&bus.backend).unwrap();
    subscriber.subscribe("").unwrap();
    wait_until_subscribed(&[&polite], &[&subscriber]);
    wait_until("the raw publisher's messages get through", || {
        rude.send_multipart([&b"at.limit"[..], &vec![0u8; LIMIT]], 0)
            .unwrap();
        std::iter::from_fn(|| subscriber.try_recv().unwrap()).any(|m| m.topic == "at.limit")
    });

    rude.send_multipart([&b"too.big"[..], &vec![0u8; LIMIT + 1]], 0)
        .unwrap();
    wait_until("the bus drops the oversized publisher", || {
        std::iter::from_fn(|| events.recv_multipart(zmq::DONTWAIT).ok())
            .any(|frames| frames[0][..2] == zmq::SocketEvent::DISCONNECTED.to_raw().to_ne_bytes())
    });
    polite.publish("after", b"x").unwrap();
    loop {
        let msg = next(&subscriber);
        assert_ne!(msg.topic, "too.big", "an oversized frame was forwarded");
        if msg.topic == "after" {
            break;
        }
    }
}
