//! The broker's memory limits: the largest frame a peer may send (`max_message_size`), and the
//! byte bounds of the queues.

use std::sync::atomic::{AtomicU64, Ordering};

use plantd_worker_sdk::protocol::Dialect;

use crate::common::*;

/// A monitor of `socket` (from the test's side) that reports `DISCONNECTED`. Declare it before the
/// socket so that it is dropped after it: libzmq may still send events while the socket closes.
fn watch_disconnects(ctx: &zmq::Context, socket: &zmq::Socket) -> zmq::Socket {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let address = format!(
        "inproc://limits-test-monitor-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    socket
        .monitor(&address, i32::from(zmq::SocketEvent::DISCONNECTED.to_raw()))
        .expect("monitor");
    let reader = ctx.socket(zmq::PAIR).expect("pair");
    reader.set_rcvhwm(0).expect("rcvhwm");
    reader.set_linger(0).expect("linger");
    reader.connect(&address).expect("connect monitor");
    reader
}

fn saw_disconnect(reader: &zmq::Socket) -> bool {
    std::iter::from_fn(|| reader.recv_multipart(zmq::DONTWAIT).ok()).any(|frames| {
        frames
            .first()
            .and_then(|f| f.get(..2))
            .map(|b| [b[0], b[1]])
            == Some(zmq::SocketEvent::DISCONNECTED.to_raw().to_ne_bytes())
    })
}

#[test]
fn a_peer_sending_a_frame_above_max_message_size_is_disconnected_and_counted() {
    const LIMIT: usize = 64 * 1024;
    let broker = TestBroker::start(|c| c.max_message_size = LIMIT as i64);
    let ctx = zmq::Context::new();
    let _worker =
        BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "limits.echo", echo());
    wait_for_workers(&ctx, &broker.endpoint, "limits.echo", 1);
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    let at_limit = vec![7u8; LIMIT];
    assert_eq!(
        client.call("limits.echo", &[&at_limit]),
        vec![at_limit.clone()],
        "a frame of exactly max_message_size passes"
    );

    let monitor;
    let big = {
        let peer = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
        monitor = watch_disconnects(&ctx, &peer.socket);
        peer
    };
    assert_eq!(
        big.call("limits.echo", &[b"small"]),
        vec![b"small".to_vec()]
    );
    // Only the worker, the client and `big` are connected (the MMI helpers' connections have
    // ended), so the next disconnect can only be `big`'s.
    wait_until("three connections are open", || {
        broker.metric("plantd_broker_connections") == 3.0
    });
    let requests = broker.metric("plantd_broker_requests_total");
    let disconnects = broker.metric("plantd_broker_disconnects_total");

    big.request("limits.echo", &[&vec![0u8; LIMIT + 1]]);
    wait_until("libzmq drops the connection of the oversized peer", || {
        saw_disconnect(&monitor)
    });
    wait_until("the broker counts the disconnect", || {
        broker.metric("plantd_broker_disconnects_total") == disconnects + 1.0
    });
    assert!(
        big.recv_within(std::time::Duration::from_millis(200))
            .is_none(),
        "the oversized request is never answered"
    );
    assert_eq!(
        broker.metric("plantd_broker_requests_total"),
        requests,
        "the oversized request never reached the broker loop"
    );
    let info = mmi(&ctx, &broker.endpoint, "mmi.broker", &[]);
    let info: serde_json::Value = serde_json::from_str(&info[1]).unwrap();
    assert!(
        info["counters"]["disconnects"].as_f64().unwrap() > disconnects,
        "{info}"
    );
    assert!(info["connections"].as_i64().unwrap() >= 2, "{info}");

    // Everyone else is unaffected.
    assert_eq!(
        client.call("limits.echo", &[b"still"]),
        vec![b"still".to_vec()]
    );
}

#[test]
fn max_message_size_zero_means_unlimited() {
    let broker = TestBroker::start(|c| c.max_message_size = 0);
    let ctx = zmq::Context::new();
    let _worker =
        BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "limits.big", echo());
    wait_for_workers(&ctx, &broker.endpoint, "limits.big", 1);
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    // Above the 16 MiB default.
    let body = vec![1u8; 17 * 1024 * 1024];
    assert_eq!(client.call("limits.big", &[&body]), vec![body]);
}

#[test]
fn freed_memory_is_handed_back_every_memory_trim_interval_ms() {
    let broker = TestBroker::start(|c| c.memory_trim_interval_ms = 20);
    wait_until("the broker has trimmed its heap a few times", || {
        broker.metric("plantd_broker_memory_trims_total") >= 3.0
    });
    let ctx = zmq::Context::new();
    let info = mmi(&ctx, &broker.endpoint, "mmi.broker", &[]);
    let info: serde_json::Value = serde_json::from_str(&info[1]).unwrap();
    assert!(info["counters"]["memory_trims"].as_u64().unwrap() >= 3);
    assert!(info["counters"]["memory_trimmed_bytes"].is_u64());
}

#[test]
fn a_queue_full_in_bytes_refuses_with_503_and_its_bytes_drain_to_zero() {
    let broker = TestBroker::start(|c| {
        c.queue_limit_bytes = 3000;
        c.client_queue_limit_bytes = 0;
    });
    let ctx = zmq::Context::new();
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    let kilobyte = vec![b'k'; 1000];
    // Each request counts its service name ("bytes.busy", 10 bytes) and body.
    client.request("bytes.busy", &[&kilobyte]);
    client.request("bytes.busy", &[&kilobyte]);
    client.request("bytes.busy", &[&kilobyte]);
    let message = expect_error(&client.final_body("bytes.busy"), "503");
    assert!(
        message.contains("2020 bytes waiting") && message.contains("queue_limit_bytes 3000"),
        "{message}"
    );
    client.request("bytes.busy", &[&kilobyte[..900]]);
    wait_until("the small request is queued", || {
        broker.metric("plantd_broker_service_queue_bytes{service=\"bytes.busy\"}") == 2930.0
    });
    assert_eq!(broker.metric("plantd_broker_queued_bytes"), 2930.0);

    let _worker =
        BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "bytes.busy", echo());
    let sizes: Vec<usize> = (0..3)
        .map(|_| client.final_body("bytes.busy")[0].len())
        .collect();
    assert_eq!(sizes, [1000, 1000, 900]);
    assert_eq!(
        broker.metric("plantd_broker_service_queue_bytes{service=\"bytes.busy\"}"),
        0.0
    );
    assert_eq!(broker.metric("plantd_broker_queued_bytes"), 0.0);
}

#[test]
fn a_client_over_client_queue_limit_bytes_gets_503_until_its_requests_are_answered() {
    let broker = TestBroker::start(|c| c.client_queue_limit_bytes = 2500);
    let ctx = zmq::Context::new();
    // The test is the worker, holding requests until it chooses to answer.
    let worker = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    worker.ready_with_credit("bytes.slow", 10);
    wait_for_workers(&ctx, &broker.endpoint, "bytes.slow", 1);
    let greedy = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    let other = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    let kilobyte = vec![b'k'; 1000];

    greedy.request("bytes.slow", &[b"1", &kilobyte]);
    greedy.request("bytes.slow", &[b"2", &kilobyte]);
    let first = worker.next_request();
    let _second = worker.next_request();
    // 2 × (10 + 1 + 1000) bytes in flight; one more would pass 2500.
    greedy.request("bytes.slow", &[b"3", &kilobyte]);
    let message = expect_error(&greedy.final_body("bytes.slow"), "503");
    assert!(
        message.contains("client has 2022 bytes")
            && message.contains("client_queue_limit_bytes 2500"),
        "{message}"
    );
    // The bound is per client.
    other.request("bytes.slow", &[b"other", &kilobyte]);
    let (to_other, body) = worker.next_request();
    assert_eq!(body[0], b"other");
    worker.final_reply(&to_other, body);
    assert_eq!(other.final_body("bytes.slow")[0], b"other");

    // An answer gives the client its bytes back.
    worker.final_reply(&first.0, first.1);
    assert_eq!(greedy.final_body("bytes.slow")[0], b"1");
    greedy.request("bytes.slow", &[b"4", &kilobyte]);
    let (_, body) = worker.next_request();
    assert_eq!(body[0], b"4");
}
