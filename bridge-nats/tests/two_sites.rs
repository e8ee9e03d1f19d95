//! Issue 17, test 3, core NATS: two sites (a broker each), a bridge on each bridging its metric
//! bus both ways through one `nats-server`. A metric published on A's bus arrives on NATS and on
//! B's bus exactly once, MessagePack bytes unchanged; a multi-frame payload and a topic-only
//! message round-trip; topics that are no valid subject are dropped and counted; nothing loops
//! back; a NATS restart and a broker restart are survived, and what was published while NATS was
//! down is counted as dropped.

mod common;

use std::time::Instant;

use common::{collect_until, probe_until_through, Bridge, NatsServer, Site, DEADLINE};
use futures_util::StreamExt;
use plantd_worker_sdk::bus::Metric;
use plantd_worker_sdk::testing::wait_until;
use plantd_worker_sdk::Shutdown;

/// Receives NATS messages until one on `sentinel` arrives; returns those before it.
fn collect_nats_until(
    runtime: &tokio::runtime::Runtime,
    subscriber: &mut async_nats::Subscriber,
    sentinel: &str,
) -> Vec<async_nats::Message> {
    runtime.block_on(async {
        let mut seen = Vec::new();
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(end, subscriber.next()).await {
                Ok(Some(m)) if m.subject.as_str() == sentinel => return seen,
                Ok(Some(m)) => seen.push(m),
                Ok(None) | Err(_) => panic!(
                    "the sentinel {sentinel} never arrived on NATS; saw {:?}",
                    seen.iter()
                        .map(|m| m.subject.to_string())
                        .collect::<Vec<_>>()
                ),
            }
        }
    })
}

fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
}

#[test]
fn two_sites_bridge_both_ways_exactly_once_with_payloads_unchanged() {
    let Some(nats) = NatsServer::start(false) else {
        return;
    };
    let runtime = common::runtime();
    let shutdown = Shutdown::new();
    let _stop = shutdown.clone().drop_guard();
    let a = Site::start(&runtime, &shutdown);
    let b = Site::start(&runtime, &shutdown);
    let bridge_a = Bridge::start(
        &runtime,
        &shutdown,
        Bridge::config("site-a", &a, &nats, false),
    );
    let bridge_b = Bridge::start(
        &runtime,
        &shutdown,
        Bridge::config("site-b", &b, &nats, false),
    );
    // A plain NATS client, as any NATS consumer would be.
    let watcher = runtime
        .block_on(async_nats::connect(nats.url()))
        .expect("NATS client");
    let mut on_nats = runtime
        .block_on(watcher.subscribe("plantd.metric.>"))
        .expect("NATS subscription");
    runtime.block_on(watcher.flush()).expect("flush");

    let (pub_a, pub_b) = (a.publisher(), b.publisher());
    let (sub_a, sub_b) = (
        a.subscriber("org.plantd.metric."),
        b.subscriber("org.plantd.metric."),
    );
    // Readiness barrier, both directions: the whole path is subscribed end to end.
    probe_until_through(&pub_a, &sub_b, "org.plantd.metric.probe-a");
    probe_until_through(&pub_b, &sub_a, "org.plantd.metric.probe-b");

    // What crosses after the barrier is counted exactly.
    let metric = Metric::new("vm", "cpu", 42.5).with_units("percent");
    let bytes = rmp_serde::to_vec_named(&metric).unwrap();
    let topic = "org.plantd.metric.vm.cpu";
    assert_eq!(metric.topic(), topic);
    pub_a.publish(topic, &bytes).unwrap();
    let parts: Vec<Vec<u8>> = vec![b"first".to_vec(), Vec::new(), vec![0, 0xff, 0xc1, 0]];
    pub_a
        .publish_frames("org.plantd.metric.vm.parts", &parts)
        .unwrap();
    pub_a
        .publish_frames::<&[u8]>("org.plantd.metric.vm.bare", &[])
        .unwrap();
    let bad = [
        "org.plantd.metric.bad host.cpu",
        "org.plantd.metric.star*.cpu",
        "org.plantd.metric.gt>.cpu",
    ];
    for topic in bad {
        pub_a.publish(topic, &bytes).unwrap();
    }
    pub_a
        .publish("org.plantd.metric.sentinel.a", b"end")
        .unwrap();

    // B's bus: each message once, payloads identical, nothing with a bad topic.
    let at_b = collect_until(&sub_b, "org.plantd.metric.sentinel.a");
    let at_b: Vec<_> = at_b
        .into_iter()
        .filter(|m| !m.topic.contains(".probe-"))
        .collect();
    let topics: Vec<&str> = at_b.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            topic,
            "org.plantd.metric.vm.parts",
            "org.plantd.metric.vm.bare"
        ],
        "B's bus got each message once, in order, and no bad topic"
    );
    assert_eq!(
        at_b[0].payload,
        std::slice::from_ref(&bytes),
        "MessagePack bytes unchanged"
    );
    assert_eq!(at_b[1].payload, parts, "multi-frame payload round-trips");
    assert!(at_b[2].payload.is_empty(), "topic-only message round-trips");
    let decoded: Metric = at_b[0].decode_body().unwrap();
    assert_eq!(decoded.value, 42.5);

    // B's own bus traffic, exported by B, comes after anything B could have re-exported of A's:
    // so once this sentinel is through to A (and NATS), any loop would have shown.
    pub_b
        .publish("org.plantd.metric.sentinel.b", b"end")
        .unwrap();
    let at_a = collect_until(&sub_a, "org.plantd.metric.sentinel.b");
    let count = |messages: &[plantd_worker_sdk::bus::BusMessage], t: &str| {
        messages.iter().filter(|m| m.topic == t).count()
    };
    assert_eq!(count(&at_a, topic), 1, "A's bus: only the original");
    assert_eq!(count(&at_a, "org.plantd.metric.vm.parts"), 1);
    assert_eq!(count(&at_a, "org.plantd.metric.sentinel.a"), 1);

    let seen = collect_nats_until(&runtime, &mut on_nats, "plantd.metric.sentinel.b");
    let cpu: Vec<_> = seen
        .iter()
        .filter(|m| m.subject.as_str() == "plantd.metric.vm.cpu")
        .collect();
    assert_eq!(cpu.len(), 1, "NATS carried the metric exactly once");
    assert_eq!(
        &cpu[0].payload[..],
        &bytes[..],
        "the NATS body is the MessagePack itself"
    );
    assert_eq!(header(cpu[0], "plantd-origin"), Some("site-a"));
    assert_eq!(header(cpu[0], "plantd-hops"), Some("1"));
    assert_eq!(
        header(cpu[0], "plantd-frames"),
        None,
        "one frame: no frame header"
    );
    let parts_on_nats: Vec<_> = seen
        .iter()
        .filter(|m| m.subject.as_str() == "plantd.metric.vm.parts")
        .collect();
    assert_eq!(parts_on_nats.len(), 1);
    assert_eq!(header(parts_on_nats[0], "plantd-frames"), Some("3"));
    assert!(
        !seen.iter().any(|m| m.subject.contains("bad")
            || m.subject.contains("star")
            || m.subject.contains("gt")),
        "no subject from a bad topic"
    );

    // The counters say what happened.
    let dropped = |bridge: &Bridge, reason: &str| {
        bridge.metric(
            "plantd_bridge_nats_dropped_total",
            &[("direction", "export"), ("reason", reason)],
        )
    };
    assert_eq!(dropped(&bridge_a, "invalid_subject"), 3.0);
    assert_eq!(dropped(&bridge_b, "invalid_subject"), 0.0);
    let suppressed = |bridge: &Bridge, reason: &str| {
        bridge.metric(
            "plantd_bridge_nats_loop_suppressed_total",
            &[("reason", reason)],
        )
    };
    // B imported A's three messages and its sentinel and recognised each on its own bus.
    assert!(suppressed(&bridge_b, "own_import") >= 4.0);
    assert!(
        suppressed(&bridge_a, "own_origin") >= 4.0,
        "A saw its exports come back"
    );
    assert!(
        bridge_a.metric(
            "plantd_bridge_nats_messages_total",
            &[("direction", "export"), ("bus", "metric")]
        ) >= 5.0
    );
    assert!(
        bridge_b.metric(
            "plantd_bridge_nats_messages_total",
            &[("direction", "import")]
        ) >= 4.0
    );
    assert!(
        bridge_b.metric(
            "plantd_bridge_nats_lag_seconds_count",
            &[("direction", "import")]
        ) >= 4.0
    );
    assert_eq!(bridge_a.metric("plantd_bridge_nats_connected", &[]), 1.0);
}

#[test]
fn nats_and_broker_restarts_are_survived_and_outage_messages_counted_as_dropped() {
    let Some(mut nats) = NatsServer::start(false) else {
        return;
    };
    let runtime = common::runtime();
    let shutdown = Shutdown::new();
    let _stop = shutdown.clone().drop_guard();
    let a = Site::start(&runtime, &shutdown);
    let mut b = Site::start(&runtime, &shutdown);
    let bridge_a = Bridge::start(
        &runtime,
        &shutdown,
        Bridge::config("site-a", &a, &nats, false),
    );
    let bridge_b = Bridge::start(
        &runtime,
        &shutdown,
        Bridge::config("site-b", &b, &nats, false),
    );
    let pub_a = a.publisher();
    let sub_b = b.subscriber("org.plantd.metric.");
    probe_until_through(&pub_a, &sub_b, "org.plantd.metric.probe-1");

    // NATS goes away: the bridges notice, and what A's bus carries meanwhile is dropped, counted.
    nats.stop();
    let connected = |bridge: &Bridge| bridge.metric("plantd_bridge_nats_connected", &[]);
    wait_until("both bridges see NATS down", || {
        connected(&bridge_a) == 0.0 && connected(&bridge_b) == 0.0
    });
    let down = |bridge: &Bridge| {
        bridge.metric(
            "plantd_bridge_nats_dropped_total",
            &[("direction", "export"), ("reason", "nats_down")],
        )
    };
    let before = down(&bridge_a);
    const OUTAGE: usize = 25;
    for i in 0..OUTAGE {
        pub_a
            .publish(&format!("org.plantd.metric.outage.{i}"), b"lost")
            .unwrap();
    }
    wait_until("A counts the outage messages as dropped", || {
        down(&bridge_a) - before >= OUTAGE as f64
    });

    // NATS returns: the bridges reconnect (and resubscribe) by themselves.
    nats.restart();
    wait_until("both bridges reconnect", || {
        connected(&bridge_a) == 1.0 && connected(&bridge_b) == 1.0
    });
    probe_until_through(&pub_a, &sub_b, "org.plantd.metric.probe-2");
    pub_a.publish("org.plantd.metric.after.nats", b"x").unwrap();
    pub_a
        .publish("org.plantd.metric.sentinel.1", b"end")
        .unwrap();
    let seen = collect_until(&sub_b, "org.plantd.metric.sentinel.1");
    assert!(
        !seen.iter().any(|m| m.topic.contains(".outage.")),
        "nothing published during the outage was delivered late: {seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|m| m.topic == "org.plantd.metric.after.nats")
            .count(),
        1
    );
    assert_eq!(
        down(&bridge_a) - before,
        OUTAGE as f64,
        "exactly the outage was dropped"
    );
    let events = |bridge: &Bridge, event: &str| {
        bridge.metric(
            "plantd_bridge_nats_connection_events_total",
            &[("event", event)],
        )
    };
    assert!(events(&bridge_a, "disconnected") >= 1.0);
    assert!(
        events(&bridge_a, "connected") >= 2.0,
        "connected, then reconnected"
    );

    // Broker B restarts on the same ports: the bridge's bus sockets reconnect by themselves.
    drop(sub_b);
    b.restart(&runtime, &shutdown);
    let sub_b = b.subscriber("org.plantd.metric.");
    let started = Instant::now();
    probe_until_through(&pub_a, &sub_b, "org.plantd.metric.probe-3");
    assert!(started.elapsed() < DEADLINE);
    pub_a
        .publish("org.plantd.metric.after.broker", b"y")
        .unwrap();
    pub_a
        .publish("org.plantd.metric.sentinel.2", b"end")
        .unwrap();
    let seen = collect_until(&sub_b, "org.plantd.metric.sentinel.2");
    assert_eq!(
        seen.iter()
            .filter(|m| m.topic == "org.plantd.metric.after.broker")
            .count(),
        1
    );
}

#[test]
fn a_bridge_started_before_nats_reports_down_then_connects_by_itself() {
    let Some(mut nats) = NatsServer::start(false) else {
        return;
    };
    nats.stop();
    let runtime = common::runtime();
    let shutdown = Shutdown::new();
    let _stop = shutdown.clone().drop_guard();
    let a = Site::start(&runtime, &shutdown);
    let bridge = Bridge::launch(
        &runtime,
        &shutdown,
        Bridge::config("site-a", &a, &nats, false),
    );
    wait_until("the bus sockets are up and only NATS is down", || {
        let (status, body) = common::healthz(bridge.config.health_port);
        let body: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
        let check = |name: &str| {
            body["checks"]
                .as_array()
                .and_then(|checks| checks.iter().find(|c| c["name"] == name))
                .map(|c| c["status"].as_str().unwrap_or("").to_owned())
        };
        status == 503
            && check("bus_metric_export").as_deref() == Some("UP")
            && check("bus_metric_import").as_deref() == Some("UP")
            && check("nats_connection").as_deref() == Some("DOWN")
    });
    nats.restart();
    wait_until("the bridge is UP once NATS is", || {
        common::healthz(bridge.config.health_port).0 == 200
    });
    // And it bridges: a plain NATS subscriber sees what A's bus carries.
    let watcher = runtime
        .block_on(async_nats::connect(nats.url()))
        .expect("NATS client");
    let mut on_nats = runtime
        .block_on(watcher.subscribe("plantd.metric.late.>"))
        .expect("NATS subscription");
    runtime.block_on(watcher.flush()).expect("flush");
    let publisher = a.publisher();
    let got = runtime.block_on(async {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            publisher
                .publish("org.plantd.metric.late.one", b"1")
                .unwrap();
            match tokio::time::timeout(std::time::Duration::from_millis(100), on_nats.next()).await
            {
                Ok(Some(m)) => return m,
                _ => assert!(tokio::time::Instant::now() < end, "nothing reached NATS"),
            }
        }
    });
    assert_eq!(got.subject.as_str(), "plantd.metric.late.one");
    assert_eq!(&got.payload[..], b"1");
}
