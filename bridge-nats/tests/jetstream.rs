//! Issue 17, test 3, with JetStream: two sites bridged both ways through a stream. What A
//! publishes while bridge B is down is delivered to B's bus when B comes back (its durable
//! consumer), exactly once; what A publishes while NATS is down is held in A's ack window and queue
//! and delivered after NATS restarts (the stream is on disk); nothing loops.

mod common;

use common::{collect_until, probe_until_through, Bridge, NatsServer, Site};
use plantd_worker_sdk::testing::wait_until;
use plantd_worker_sdk::Shutdown;

fn count(messages: &[plantd_worker_sdk::bus::BusMessage], prefix: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.topic.starts_with(prefix))
        .map(|m| m.topic.clone())
        .collect()
}

#[test]
fn jetstream_delivers_what_was_published_while_a_bridge_or_nats_was_down() {
    let Some(mut nats) = NatsServer::start(true) else {
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
        Bridge::config("site-a", &a, &nats, true),
    );
    let b_config = Bridge::config("site-b", &b, &nats, true);
    let mut bridge_b = Bridge::start(&runtime, &shutdown, b_config.clone());
    let (pub_a, pub_b) = (a.publisher(), b.publisher());
    let (sub_a, sub_b) = (
        a.subscriber("org.plantd.metric."),
        b.subscriber("org.plantd.metric."),
    );
    probe_until_through(&pub_a, &sub_b, "org.plantd.metric.probe-a");
    probe_until_through(&pub_b, &sub_a, "org.plantd.metric.probe-b");

    // Bridge B goes down; A keeps exporting into the stream (acked).
    bridge_b.stop(&runtime);
    let acked = |bridge: &Bridge| {
        bridge.metric(
            "plantd_bridge_nats_messages_total",
            &[("direction", "export")],
        )
    };
    let before = acked(&bridge_a);
    const WHILE_B_DOWN: usize = 20;
    for i in 0..WHILE_B_DOWN {
        pub_a
            .publish(&format!("org.plantd.metric.away.{i:02}"), &[i as u8])
            .unwrap();
    }
    pub_a
        .publish("org.plantd.metric.sentinel.1", b"end")
        .unwrap();
    wait_until("A's exports are acked by the stream", || {
        acked(&bridge_a) - before >= (WHILE_B_DOWN + 1) as f64
    });

    // B returns with the same id: its durable consumer delivers what it missed, once, in order.
    let bridge_b = Bridge::start(&runtime, &shutdown, b_config);
    let seen = collect_until(&sub_b, "org.plantd.metric.sentinel.1");
    let expected: Vec<String> = (0..WHILE_B_DOWN)
        .map(|i| format!("org.plantd.metric.away.{i:02}"))
        .collect();
    assert_eq!(count(&seen, "org.plantd.metric.away."), expected);
    let payload = &seen
        .iter()
        .find(|m| m.topic == "org.plantd.metric.away.07")
        .unwrap()
        .payload;
    assert_eq!(payload, &[vec![7u8]]);

    // NATS restarts (same store): what A's bus carries meanwhile waits in A's queue.
    nats.stop();
    let connected = |bridge: &Bridge| bridge.metric("plantd_bridge_nats_connected", &[]);
    wait_until("both bridges see NATS down", || {
        connected(&bridge_a) == 0.0 && connected(&bridge_b) == 0.0
    });
    // More than the exporter's ack window (256): some wait in the window, the rest in the queue.
    const WHILE_NATS_DOWN: usize = 600;
    for i in 0..WHILE_NATS_DOWN {
        pub_a
            .publish(&format!("org.plantd.metric.held.{i:03}"), b"kept")
            .unwrap();
    }
    pub_a
        .publish("org.plantd.metric.sentinel.2", b"end")
        .unwrap();
    wait_until("A holds all of the outage's messages", || {
        bridge_a.metric("plantd_bridge_nats_pending", &[]) >= (WHILE_NATS_DOWN + 1) as f64
    });
    nats.restart();
    let seen = collect_until(&sub_b, "org.plantd.metric.sentinel.2");
    let expected: Vec<String> = (0..WHILE_NATS_DOWN)
        .map(|i| format!("org.plantd.metric.held.{i:03}"))
        .collect();
    assert_eq!(count(&seen, "org.plantd.metric.held."), expected);
    let dropped = bridge_a.metric(
        "plantd_bridge_nats_dropped_total",
        &[("direction", "export")],
    );
    assert_eq!(dropped, 0.0, "JetStream mode lost nothing");

    // No loop: B's sentinel reaches A after anything B could have re-exported.
    pub_b
        .publish("org.plantd.metric.sentinel.b", b"end")
        .unwrap();
    let at_a = collect_until(&sub_a, "org.plantd.metric.sentinel.b");
    for prefix in ["org.plantd.metric.away.", "org.plantd.metric.held."] {
        let topics = count(&at_a, prefix);
        let unique: std::collections::BTreeSet<_> = topics.iter().collect();
        assert_eq!(
            topics.len(),
            unique.len(),
            "A's bus saw each of its messages once"
        );
        assert!(!topics.is_empty());
    }
    assert!(
        bridge_a.metric(
            "plantd_bridge_nats_loop_suppressed_total",
            &[("reason", "own_origin")]
        ) >= (WHILE_B_DOWN + WHILE_NATS_DOWN) as f64,
        "A's consumer hands A its own exports, which it ignores"
    );
    assert!(
        bridge_b.metric(
            "plantd_bridge_nats_loop_suppressed_total",
            &[("reason", "own_import")]
        ) >= WHILE_B_DOWN as f64
    );
}
