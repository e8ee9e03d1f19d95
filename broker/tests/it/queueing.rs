//! Requests waiting for workers: served late, expired (404/504), refused when the queue is full.

use std::time::Duration;

use plantd_worker_sdk::protocol::Dialect;

use crate::common::*;

#[test]
fn a_request_sent_before_any_worker_is_served_when_one_registers() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    client.request("late", &[b"hello"]);
    // The request is queued before the worker exists.
    wait_until("the request is queued", || {
        broker.metric("plantd_broker_service_queue_depth{service=\"late\"}") == 1.0
    });
    let _worker = BackgroundWorker::start(
        &ctx,
        &broker.endpoint,
        Dialect::V01,
        "late",
        tagged_echo("w"),
    );
    assert_eq!(
        client.final_body("late"),
        vec![b"w".to_vec(), b"hello".to_vec()]
    );
}

#[test]
fn a_request_for_a_service_that_never_had_a_worker_expires_with_404() {
    let broker = TestBroker::start(|c| c.queue_ttl_ms = 300);
    let ctx = zmq::Context::new();
    for dialect in ALL_DIALECTS {
        let client = Peer::connect(&ctx, &broker.endpoint, dialect);
        client.request("nobody.home", &[b"x"]);
        let message = expect_error(&client.final_body("nobody.home"), "404");
        assert!(message.contains("nobody.home"), "{message}");
    }
    assert_eq!(
        broker.metric("plantd_broker_error_replies_total{code=\"404\"}"),
        3.0
    );
}

#[test]
fn a_request_for_a_service_whose_workers_left_expires_with_504() {
    let broker = TestBroker::start(|c| c.queue_ttl_ms = 300);
    let ctx = zmq::Context::new();
    let worker = BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "gone", echo());
    wait_for_workers(&ctx, &broker.endpoint, "gone", 1);
    drop(worker); // sends DISCONNECT
    wait_for_workers(&ctx, &broker.endpoint, "gone", 0);
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    client.request("gone", &[b"x"]);
    let message = expect_error(&client.final_body("gone"), "504");
    assert!(message.contains("expired"), "{message}");
}

#[test]
fn a_full_queue_refuses_with_503() {
    let broker = TestBroker::start(|c| c.queue_limit = 2);
    let ctx = zmq::Context::new();
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    for _ in 0..3 {
        client.request("busy", &[b"x"]);
    }
    // The first two wait (TTL 10 s); the third is refused at once.
    let message = expect_error(&client.final_body("busy"), "503");
    assert!(message.contains("full"), "{message}");
    assert!(client.recv_within(Duration::from_millis(100)).is_none());
    assert_eq!(
        broker.metric("plantd_broker_service_queue_depth{service=\"busy\"}"),
        2.0
    );
    // The waiting ones are still served once a worker comes.
    let _worker = BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "busy", echo());
    assert_eq!(client.final_body("busy"), vec![b"x".to_vec()]);
    assert_eq!(client.final_body("busy"), vec![b"x".to_vec()]);
}

#[test]
fn a_service_whose_workers_left_is_forgotten_after_service_linger_ms() {
    let broker = TestBroker::start(|c| {
        c.service_linger_ms = 300;
        c.queue_ttl_ms = 200;
    });
    let ctx = zmq::Context::new();
    let worker = BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "brief", echo());
    wait_for_workers(&ctx, &broker.endpoint, "brief", 1);
    drop(worker); // sends DISCONNECT
    wait_until("the service is forgotten", || {
        broker.metric("plantd_broker_service_workers{service=\"brief\"}") == 0.0
            && !broker.metrics().contains("service=\"brief\"")
    });
    // Forgotten, so it never had a worker as far as the broker knows: 404, not 504.
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    client.request("brief", &[b"x"]);
    expect_error(&client.final_body("brief"), "404");
}
