//! Issue test 1 through a real broker: every operation, every error code, aliases, limits, bad input;
//! plus `/healthz` and `/metrics` of the running service.

mod common;

use common::{code, data, Backend, Harness};
use plantd_state::ops::Limits;
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::protocol::Dialect;
use serde_json::{json, Value};

#[test]
fn every_operation_and_error_code_through_the_broker_on_sqlite() {
    every_operation_and_error_code_through_the_broker(Backend::Sqlite);
}

#[test]
fn every_operation_and_error_code_through_the_broker_on_postgres() {
    every_operation_and_error_code_through_the_broker(Backend::Postgres);
}

fn every_operation_and_error_code_through_the_broker(backend: Backend) {
    let Some(mut h) = Harness::broker_only_on(backend) else {
        return;
    };
    h.state_config.limits = Limits {
        max_scope_bytes: 32,
        max_key_bytes: 16,
        max_value_bytes: 64,
        max_batch_entries: 4,
    };
    h.start_state();

    assert_eq!(
        data(h.call("create-scope", json!({"service": "org.plantd.Test"}))),
        json!({"scope": "org.plantd.Test", "status": "created"})
    );
    assert_eq!(
        code(&h.call("create-scope", json!({"service": "org.plantd.Test"}))),
        "SCOPE_EXISTS"
    );
    let s = |extra: Value| {
        let mut body = json!({"service": "org.plantd.Test"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    data(h.call("state-set", s(json!({"key": "str", "value": "hello"}))));
    data(h.call(
        "set",
        s(json!({"key": "obj", "value": {"a": [1, 2.5, null]}})),
    ));
    data(h.call("set", s(json!({"key": "empty", "value": ""}))));
    assert_eq!(
        data(h.call("state-get", s(json!({"key": "str"}))))["value"],
        json!("hello")
    );
    assert_eq!(
        data(h.call("get", s(json!({"key": "obj"}))))["value"],
        json!({"a": [1, 2.5, null]})
    );
    assert_eq!(
        data(h.call("get", s(json!({"key": "empty"}))))["value"],
        json!("")
    );
    assert_eq!(
        code(&h.call("get", s(json!({"key": "missing"})))),
        "KEY_NOT_FOUND"
    );
    assert_eq!(
        data(h.call("list-keys", s(json!({})))),
        json!({"scope": "org.plantd.Test", "keys": ["empty", "obj", "str"], "count": 3})
    );
    assert_eq!(
        data(h.call(
            "state-set-many",
            s(json!({"entries": {"m1": 1, "m2": [true]}}))
        ))["count"],
        json!(2)
    );
    assert_eq!(
        data(h.call("state-get-many", s(json!({"keys": ["m1", "m2", "nope"]})))),
        json!({"scope": "org.plantd.Test", "values": {"m1": 1, "m2": [true]}, "missing": ["nope"]})
    );
    assert_eq!(
        data(h.call("delete", s(json!({"key": "str"})))),
        json!({"scope": "org.plantd.Test", "key": "str", "status": "deleted"})
    );
    assert_eq!(
        code(&h.call("delete", s(json!({"key": "str"})))),
        "KEY_NOT_FOUND"
    );
    // set on a scope that does not exist creates it (the Go service deadlocked here).
    data(h.call(
        "state-set",
        json!({"service": "fresh", "key": "k", "value": 1}),
    ));
    assert_eq!(
        data(h.call("list-scopes", json!({}))),
        json!({"scopes": ["fresh", "org.plantd.Test"], "count": 2})
    );
    let empty_body = h
        .client()
        .request(
            "org.plantd.State",
            vec![b"list-scopes".to_vec(), Vec::new()],
        )
        .unwrap();
    let empty_body: Value = serde_json::from_slice(&empty_body[0]).unwrap();
    assert_eq!(data(empty_body)["count"], json!(2));
    assert_eq!(
        data(h.call("health", json!({"service": "fresh"}))),
        json!({"status": "healthy", "service": "org.plantd.State", "store_available": true,
               "scope": "fresh", "scope_exists": true})
    );
    assert_eq!(
        data(h.call("delete-scope", json!({"service": "fresh"})))["status"],
        json!("deleted")
    );
    assert_eq!(
        code(&h.call("delete-scope", json!({"service": "fresh"}))),
        "SCOPE_NOT_FOUND"
    );
    assert_eq!(
        code(&h.call("get", json!({"service": "fresh", "key": "k"}))),
        "SCOPE_NOT_FOUND"
    );
    assert_eq!(
        code(&h.call("list-keys", json!({"service": "fresh"}))),
        "SCOPE_NOT_FOUND"
    );
    assert_eq!(code(&h.call("frobnicate", json!({}))), "UNKNOWN_OPERATION");

    // Limits.
    assert_eq!(
        code(&h.call("set", s(json!({"key": "big", "value": "x".repeat(100)})))),
        "VALUE_TOO_LARGE"
    );
    let long_key = h.call("set", s(json!({"key": "k".repeat(17), "value": 1})));
    assert_eq!(code(&long_key), "INVALID_REQUEST");
    assert!(long_key["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`key`"));
    let long_scope = h.call("create-scope", json!({"service": "s".repeat(33)}));
    assert_eq!(code(&long_scope), "INVALID_REQUEST");
    assert!(long_scope["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`service`"));
    assert_eq!(
        code(&h.call(
            "state-get-many",
            s(json!({"keys": ["a", "b", "c", "d", "e"]}))
        )),
        "INVALID_REQUEST"
    );

    // Bad input never crashes the service; each names the field at fault.
    for (body, field) in [
        (json!({"key": "k"}), "service"),
        (json!({"service": "", "key": "k"}), "service"),
        (json!({"service": "x"}), "key"),
        (json!({"service": ["x"], "key": "k"}), "service"),
    ] {
        let reply = h.call("state-get", body);
        assert_eq!(code(&reply), "INVALID_REQUEST");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{reply}"
        );
    }
    assert_eq!(
        code(&h.call("set", s(json!({"key": "v"})))),
        "INVALID_REQUEST"
    );
    for raw in [&b"{oops"[..], b"[]", b"\"str\"", b"\xff"] {
        let reply = h
            .client()
            .request(
                "org.plantd.State",
                vec![b"state-get".to_vec(), raw.to_vec()],
            )
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply[0]).unwrap();
        assert_eq!(code(&reply), "INVALID_REQUEST", "{raw:?}");
    }
    // Still serving after all that.
    assert_eq!(
        data(h.call("get", s(json!({"key": "obj"}))))["value"]["a"][0],
        json!(1)
    );

    // STORAGE_ERROR: the database file's directory is made read-only under a running service is
    // not portable; the unit tests cover it by closing the store.
}

#[test]
fn healthz_reports_real_checks_and_metrics_count_requests_on_sqlite() {
    healthz_reports_real_checks_and_metrics_count_requests(Backend::Sqlite);
}

#[test]
fn healthz_reports_real_checks_and_metrics_count_requests_on_postgres() {
    healthz_reports_real_checks_and_metrics_count_requests(Backend::Postgres);
}

fn healthz_reports_real_checks_and_metrics_count_requests(backend: Backend) {
    let Some(mut h) = Harness::start_on(backend) else {
        return;
    };
    let http = reqwest::blocking::Client::new();
    let health_url = format!("{}/healthz", h.health_url());
    common::wait_for("/healthz to report UP", || {
        http.get(&health_url)
            .send()
            .is_ok_and(|r| r.status().as_u16() == 200)
    });
    let body: Value = http.get(&health_url).send().unwrap().json().unwrap();
    assert_eq!(body["status"], json!("UP"));
    let checks: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        checks.contains(&"broker_connection") && checks.contains(&"database"),
        "{body}"
    );

    data(h.call("set", json!({"service": "m", "key": "k", "value": 1})));
    h.call("get", json!({"service": "m", "key": "nope"}));
    let metrics = http
        .get(format!("{}/metrics", h.health_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(r#"plantd_state_requests_total{operation="state-set",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"plantd_state_requests_total{operation="state-get",outcome="KEY_NOT_FOUND"} 1"#
    ));
    assert!(metrics.contains("plantd_state_commit_batch_size_count"));
    assert!(metrics.contains("plantd_state_commit_duration_seconds_bucket"));

    // Without a broker the service is not healthy.
    h.stop_broker();
    common::wait_for("/healthz to report DOWN without a broker", || {
        http.get(&health_url)
            .send()
            .is_ok_and(|r| r.status().as_u16() == 503)
    });
}

#[test]
fn the_protocol_setting_is_the_dialect_the_state_service_registers_and_serves_in() {
    let mut h = Harness::broker_only();
    h.state_config.protocol = Dialect::V01;
    h.start_state();
    // The broker reports the dialect each worker registered in.
    let workers = Client::connect(&h.endpoint)
        .unwrap()
        .workers("org.plantd.State")
        .expect("state registered");
    assert!(
        !workers.is_empty() && workers.iter().all(|w| w.dialect == "0.1"),
        "{workers:?}"
    );
}
