//! `/healthz`, `/metrics` and shutdown of `run`.

use std::time::Duration;

use plantd_worker_sdk::protocol::Dialect;
use serde_json::Value;

use crate::common::*;

#[test]
fn healthz_has_the_design_shape_and_a_live_loop_check() {
    let broker = TestBroker::start(|_| {});
    let response = reqwest::blocking::get(broker.url("/healthz")).expect("GET /healthz");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().ok(),
        Some("application/health+json")
    );
    let body: Value = response.json().expect("json body");
    assert_eq!(body["version"], "1");
    assert_eq!(body["releaseId"], plantd_broker::VERSION);
    assert_eq!(body["status"], "UP");
    let checks = body["checks"].as_array().expect("checks");
    let check = checks
        .iter()
        .find(|c| c["name"] == "broker_loop")
        .expect("broker_loop check");
    assert_eq!(check["status"], "UP");
    assert!(check["lastUpdated"]
        .as_str()
        .is_some_and(|t| t.contains('T')));
}

#[test]
fn metrics_count_a_round_trip() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let _worker = BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "counted", echo());
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    assert_eq!(client.call("counted", &[b"1"]), vec![b"1".to_vec()]);
    let text = broker.metrics();
    assert_eq!(metric_value(&text, "plantd_broker_requests_total"), 1.0);
    assert_eq!(metric_value(&text, "plantd_broker_replies_total"), 1.0);
    assert_eq!(
        metric_value(
            &text,
            "plantd_broker_service_requests_total{service=\"counted\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(&text, "plantd_broker_service_workers{service=\"counted\"}"),
        1.0
    );
    assert_eq!(metric_value(&text, "plantd_broker_active_workers"), 1.0);
    assert_eq!(
        metric_value(
            &text,
            "plantd_broker_request_duration_seconds_count{service=\"counted\"}"
        ),
        1.0
    );
    assert!(text.contains("plantd_broker_service_queue_depth{service=\"counted\"} 0"));
    assert!(text.contains("plantd_broker_malformed_messages_total 0"));
}

#[test]
fn cancelling_run_disconnects_workers_answers_waiting_clients_and_returns_promptly() {
    let mut broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let workers: Vec<Peer> = ALL_DIALECTS
        .iter()
        .map(|&d| {
            let p = Peer::connect(&ctx, &broker.endpoint, d);
            p.ready("bye");
            p
        })
        .collect();
    wait_for_workers(&ctx, &broker.endpoint, "bye", 3);
    let waiting = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    waiting.request("nobody", &[b"x"]);
    wait_until("the request is queued", || {
        broker.metric("plantd_broker_queued_requests") == 1.0
    });

    let (result, took) = broker.stop();
    result.expect("run returns Ok after cancel");
    assert!(took < Duration::from_secs(5), "run took {took:?} to return");
    for w in &workers {
        w.expect_disconnect();
    }
    let message = expect_error(&waiting.final_body("nobody"), "500");
    assert!(message.contains("shutting down"), "{message}");
}

#[test]
fn a_port_clash_is_an_error_not_a_hang() {
    let first = TestBroker::start(|_| {});
    let config = plantd_broker::BrokerConfig {
        endpoint: first.endpoint.clone(),
        health_port: plantd_worker_sdk::testing::free_port(),
        ..test_config()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let result = runtime.block_on(plantd_broker::run(config, Default::default()));
    assert!(
        matches!(result, Err(plantd_broker::BrokerError::Socket { .. })),
        "{result:?}"
    );
}
