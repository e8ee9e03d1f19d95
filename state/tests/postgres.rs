//! Issue 17, test 2: several state services on one PostgreSQL store. Two brokers, a state service
//! on each, one database: a write through one is read through the other, concurrent writers
//! through both lose nothing, and a SIGKILL of a state service process (the real `plantd-state`
//! binary) mid-load loses no acknowledged write. Skipped with a message where PostgreSQL is not
//! installed, unless `PLANTD_REQUIRE_POSTGRES` is set.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::{call, code, data, wait_for, Backend, Harness, StateProcess};
use plantd_worker_sdk::client::Client;
use serde_json::{json, Value};

/// A second broker whose state service uses the same PostgreSQL database as `h`.
fn sibling(h: &Harness) -> Harness {
    let mut other = Harness::broker_only();
    other.state_config.store = Backend::Postgres;
    other.state_config.postgres = h.state_config.postgres.clone();
    other
}

#[test]
fn a_write_through_one_state_service_is_read_through_the_other() {
    let Some(mut a) = Harness::broker_only_on(Backend::Postgres) else {
        return;
    };
    let mut b = sibling(&a);
    a.start_state();
    b.start_state();

    data(a.call(
        "set",
        json!({"service": "shared", "key": "k", "value": {"n": 1}}),
    ));
    assert_eq!(
        data(b.call("get", json!({"service": "shared", "key": "k"})))["value"],
        json!({"n": 1})
    );
    data(b.call(
        "set",
        json!({"service": "shared", "key": "k", "value": {"n": 2}}),
    ));
    assert_eq!(
        data(a.call("get", json!({"service": "shared", "key": "k"})))["value"],
        json!({"n": 2})
    );
    // Scope-level operations see each other too, with the same error codes.
    assert_eq!(
        code(&b.call("create-scope", json!({"service": "shared"}))),
        "SCOPE_EXISTS"
    );
    data(a.call("delete-scope", json!({"service": "shared"})));
    assert_eq!(
        code(&b.call("get", json!({"service": "shared", "key": "k"}))),
        "SCOPE_NOT_FOUND"
    );
    assert_eq!(
        code(&b.call("delete", json!({"service": "shared", "key": "k"}))),
        "SCOPE_NOT_FOUND"
    );
}

#[test]
fn concurrent_writers_through_both_services_lose_nothing() {
    let Some(mut a) = Harness::broker_only_on(Backend::Postgres) else {
        return;
    };
    let mut b = sibling(&a);
    a.start_state();
    b.start_state();
    const WRITERS: usize = 8;
    const SETS: usize = 150;
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let h = if w % 2 == 0 { &a } else { &b };
            let client = h.client();
            s.spawn(move || {
                for i in 0..SETS {
                    // Every writer writes its own keys and a hot key all of them share, in one
                    // atomic set-many, so both services write the same rows at once.
                    let body = json!({"service": "race", "entries": {
                        format!("w{w}-{i}"): i,
                        "hot": {"w": w, "i": i},
                    }});
                    data(call(&client, "state-set-many", &body));
                }
            });
        }
    });
    let keys = data(b.call("list-keys", json!({"service": "race"})));
    assert_eq!(keys["count"], json!(WRITERS * SETS + 1), "{keys}");
    for w in 0..WRITERS {
        let last = format!("w{w}-{}", SETS - 1);
        assert_eq!(
            data(a.call("get", json!({"service": "race", "key": last})))["value"],
            json!(SETS - 1)
        );
    }
    let hot = data(a.call("get", json!({"service": "race", "key": "hot"})))["value"].clone();
    assert_eq!(
        hot["i"],
        json!(SETS - 1),
        "the hot key holds some writer's last set: {hot}"
    );
}

const WRITERS: usize = 8;
/// Acknowledged sets to wait for before the kill, so it lands mid-stream.
const ACKED_BEFORE_KILL: usize = 1500;

#[test]
fn sigkill_of_a_state_service_loses_no_acknowledged_write_on_postgres() {
    let Some(a) = Harness::broker_only_on(Backend::Postgres) else {
        return;
    };
    let mut b = sibling(&a);
    // The survivor serves the reads afterwards, through the other broker.
    b.start_state();
    let mut child = StateProcess::spawn(&a, &[]);
    a.wait_until_serving();

    let acked: Mutex<HashMap<String, Value>> = Mutex::new(HashMap::new());
    let acked_count = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (acked, acked_count, stop) = (&acked, &acked_count, &stop);
            let client = Client::connect(&a.endpoint)
                .unwrap()
                .with_timeout(Duration::from_secs(2));
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    let value = json!({"writer": w, "seq": i, "pad": "x".repeat(64)});
                    let body =
                        json!({"service": format!("crash-{}", w % 3), "key": key, "value": value});
                    let reply = client.request(
                        "org.plantd.State",
                        vec![b"state-set".to_vec(), body.to_string().into_bytes()],
                    );
                    // Only a success reply counts; timeouts and errors around the kill are unknowns.
                    if let Ok(frames) = reply {
                        let reply: Value = serde_json::from_slice(&frames[0]).unwrap();
                        if reply["success"] == json!(true) {
                            acked
                                .lock()
                                .unwrap()
                                .insert(format!("{}/{key}", w % 3), value);
                            acked_count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
            });
        }
        wait_for("acknowledged sets before the kill", || {
            acked_count.load(Ordering::Relaxed) >= ACKED_BEFORE_KILL
        });
        child.0.kill().expect("SIGKILL the state service");
        child.0.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
    });

    let acked = acked.into_inner().unwrap();
    assert!(acked.len() >= ACKED_BEFORE_KILL);
    let client = b.client();
    let mut by_scope: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for (path, value) in acked {
        let (scope, key) = path.split_once('/').unwrap();
        by_scope
            .entry(format!("crash-{scope}"))
            .or_default()
            .push((key.to_owned(), value));
    }
    for (scope, entries) in by_scope {
        for chunk in entries.chunks(500) {
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            let got = data(call(
                &client,
                "state-get-many",
                &json!({"service": scope, "keys": keys}),
            ));
            assert_eq!(
                got["missing"],
                json!([]),
                "acknowledged sets lost in {scope}"
            );
            for (key, value) in chunk {
                assert_eq!(&got["values"][key], value, "{scope}/{key}");
            }
        }
    }
}

#[test]
fn a_lost_database_is_storage_error_and_healthz_down_and_backup_is_refused() {
    let Some(mut h) = Harness::broker_only_on(Backend::Postgres) else {
        return;
    };
    h.state_config.probe_interval_secs = 1;
    h.start_state();
    let http = reqwest::blocking::Client::new();
    let healthz = format!("{}/healthz", h.health_url());
    let database_up = |up: bool| {
        let body: Value = match http.get(&healthz).send().and_then(|r| r.json()) {
            Ok(body) => body,
            Err(_) => return false,
        };
        body["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == "database" && (c["status"] == "UP") == up)
    };
    data(h.call("set", json!({"service": "s", "key": "k", "value": 1})));
    wait_for("the database check UP", || database_up(true));
    // `backup` is SQLite's; on PostgreSQL it is refused as a request, not a storage failure.
    assert_eq!(
        code(&h.call("backup", json!({"path": "x.db"}))),
        "INVALID_REQUEST"
    );

    plantd_pg_util::testing::cluster()
        .unwrap()
        .drop_database(&h.state_config.postgres.dsn);
    assert_eq!(
        code(&h.call("set", json!({"service": "s", "key": "k", "value": 2}))),
        "STORAGE_ERROR"
    );
    assert_eq!(
        code(&h.call("get", json!({"service": "s", "key": "k"}))),
        "STORAGE_ERROR"
    );
    wait_for("the database check DOWN", || database_up(false));
}
