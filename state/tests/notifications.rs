//! Issue test 5: committed sets and deletes are announced on the `state` bus as MessagePack maps
//! under `org.plantd.state.<scope>`.

mod common;

use std::time::{Duration, Instant};

use common::{data, Backend, Harness, DEADLINE};
use plantd_worker_sdk::bus::Subscriber;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
struct Change {
    scope: String,
    key: Option<String>,
    value: Option<Value>,
    deleted: bool,
    time: String,
}

#[test]
fn sets_and_deletes_are_published_on_the_state_bus_on_sqlite() {
    sets_and_deletes_are_published_on_the_state_bus(Backend::Sqlite);
}

#[test]
fn sets_and_deletes_are_published_on_the_state_bus_on_postgres() {
    sets_and_deletes_are_published_on_the_state_bus(Backend::Postgres);
}

fn sets_and_deletes_are_published_on_the_state_bus(backend: Backend) {
    let Some(h) = Harness::start_on(backend) else {
        return;
    };
    let subscriber = Subscriber::connect(&h.bus_backend).unwrap();
    subscriber.subscribe("org.plantd.state.watched").unwrap();

    // PUB/SUB drops messages until the subscription has reached the broker: keep writing a probe
    // key until its notification arrives, then the real traffic is delivered.
    let start = Instant::now();
    loop {
        data(h.call(
            "set",
            json!({"service": "watched", "key": "probe", "value": 0}),
        ));
        if subscriber
            .recv_timeout(Duration::from_millis(100))
            .unwrap()
            .is_some()
        {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "no notification ever arrived");
    }
    data(h.call("set", json!({"service": "other", "key": "k", "value": 1})));
    data(h.call(
        "set",
        json!({"service": "watched", "key": "k", "value": {"n": [1, "two"]}}),
    ));
    data(h.call("delete", json!({"service": "watched", "key": "k"})));

    let mut changes = Vec::new();
    while changes.len() < 2 {
        let message = subscriber
            .recv_timeout(DEADLINE)
            .unwrap()
            .expect("notification within the deadline");
        assert!(
            message.topic.starts_with("org.plantd.state.watched"),
            "{}",
            message.topic
        );
        let change: Change = message.decode_body().unwrap();
        if change.key.as_deref() == Some("probe") {
            continue; // late probe notifications
        }
        assert_eq!(message.topic, "org.plantd.state.watched");
        changes.push(change);
    }
    assert_eq!(changes[0].scope, "watched");
    assert_eq!(changes[0].key.as_deref(), Some("k"));
    assert_eq!(changes[0].value, Some(json!({"n": [1, "two"]})));
    assert!(!changes[0].deleted);
    assert!(changes[0].time.ends_with('Z'));
    assert_eq!(changes[1].key.as_deref(), Some("k"));
    assert!(changes[1].deleted);
    assert_eq!(changes[1].value, None);
}
