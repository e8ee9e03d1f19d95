//! Buses over HTTP: a metric published on the bus arrives on `GET /api/v1/buses/metric` as JSON
//! (and bytes that are neither MessagePack nor JSON as base64); a POST publishes JSON as
//! MessagePack, with `bus:publish` required of the token.

mod common;

use std::time::Duration;

use common::{SseReader, System};
use plantd_worker_sdk::bus::{Metric, Publisher, Subscriber};
use plantd_worker_sdk::testing::wait_until;
use serde_json::json;

#[test]
fn a_metric_on_the_bus_arrives_on_the_sse_tail() {
    let mut s = System::new();
    s.start_proxy();
    let metric_bus = s.bus("metric").clone();
    let response = s
        .http
        .get(s.url("/api/v1/buses/metric?prefix=org.plantd.metric.test"))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut events = SseReader::new(response);
    let publisher = Publisher::connect(&metric_bus.frontend).unwrap();
    let metric = Metric::new("test", "temp", 21.5).with_units("C");
    assert!(
        metric.topic().starts_with("org.plantd.metric.test"),
        "{}",
        metric.topic()
    );

    let (tx, rx) = std::sync::mpsc::channel();
    let event = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let event = events.next_event();
            let _ = tx.send(());
            (event, events)
        });
        wait_until("the metric on the SSE tail", || {
            publisher.publish_metric(&metric).unwrap();
            // Something else on the bus must not show (the prefix filters in the broker).
            publisher.publish("org.plantd.other", b"x").unwrap();
            rx.recv_timeout(Duration::from_millis(100)).is_ok()
        });
        reader.join().unwrap()
    });
    let (event, mut events) = event;
    let event = event.expect("an event");
    assert_eq!(event.event, "message");
    assert_eq!(event.data["topic"], metric.topic());
    assert_eq!(event.data["payload"]["value"], 21.5);
    assert_eq!(event.data["payload"]["units"], "C");

    // Bytes that decode as neither MessagePack nor JSON come as base64.
    publisher
        .publish("org.plantd.metric.test.raw", &[0xc1, 0xff, 0x00])
        .unwrap();
    loop {
        let event = events.next_event().expect("more events");
        if event.data["topic"] == "org.plantd.metric.test.raw" {
            assert_eq!(event.data["payload"], json!({"base64": "wf8A"}));
            break;
        }
        assert_eq!(
            event.data["topic"],
            metric.topic(),
            "only the prefix arrives"
        );
    }
}

#[test]
fn a_post_publishes_json_as_messagepack_with_bus_publish() {
    let mut s = System::new();
    s.start_identity();
    s.proxy.auth = s.auth();
    s.start_proxy();
    let admin = s.admin_token();
    let publisher = s.user_with(&admin, "publisher", &["bus:publish"]);
    let reader = s.user_with(&admin, "reader", &["state:data:read"]);

    let subscriber = Subscriber::connect(&s.bus("metric").backend).unwrap();
    subscriber.subscribe("org.plantd.proxytest").unwrap();
    let path = "/api/v1/buses/metric/org.plantd.proxytest.value";

    // No token, and a token without bus:publish, are refused.
    let (status, reply) = s.post(path, json!({"v": 1}), None);
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let (status, reply) = s.post(path, json!({"v": 1}), Some(&reader));
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    let (status, _) = s.post("/api/v1/buses/nope/t", json!({}), Some(&publisher));
    assert_eq!(status, 404);

    // With it, the body arrives as a MessagePack map.
    wait_until("a published message to arrive", || {
        let (status, reply) = s.post(path, json!({"v": 7, "unit": "x"}), Some(&publisher));
        assert!(status == 202 || status == 503, "{status} {reply}");
        match subscriber.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(message)) => {
                assert_eq!(message.topic, "org.plantd.proxytest.value");
                let value: serde_json::Value =
                    rmp_serde::from_slice(message.body()).expect("MessagePack");
                assert_eq!(value, json!({"v": 7, "unit": "x"}));
                true
            }
            _ => false,
        }
    });
}
