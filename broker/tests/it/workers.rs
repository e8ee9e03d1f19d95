//! Worker management: LRU, heartbeats, purging, re-dispatch, protocol violations.

use std::time::{Duration, Instant};

use plantd_worker_sdk::protocol::{Dialect, Message, WorkerCommand};

use crate::common::*;

#[test]
fn lru_spreads_sequential_requests_evenly_over_two_workers() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let a = BackgroundWorker::start(
        &ctx,
        &broker.endpoint,
        Dialect::V02,
        "lru",
        tagged_echo("a"),
    );
    let b = BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::Go, "lru", tagged_echo("b"));
    wait_for_workers(&ctx, &broker.endpoint, "lru", 2);
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    for _ in 0..20 {
        client.call("lru", &[b"x"]);
    }
    assert_eq!((a.handled(), b.handled()), (10, 10));
}

#[test]
fn the_broker_heartbeats_a_busy_worker() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let worker = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    worker.ready("slow");
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    client.request("slow", &[b"x"]);
    let (reply_to, _) = worker.next_request();
    // Busy now: keep ourselves alive and count the broker's heartbeats (interval 100 ms).
    let mut heartbeats = 0;
    let end = Instant::now() + DEADLINE;
    while heartbeats < 3 {
        assert!(
            Instant::now() < end,
            "busy worker got {heartbeats} heartbeats"
        );
        worker.heartbeat();
        match worker.recv_within(Duration::from_millis(50)) {
            Some(Message::Worker(WorkerCommand::Heartbeat)) => heartbeats += 1,
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
    worker.final_reply(&reply_to, vec![b"finally".to_vec()]);
    assert_eq!(client.final_body("slow"), vec![b"finally".to_vec()]);
}

/// Heartbeats (so the broker keeps it) until a REQUEST arrives, then returns without a word more.
fn take_request_then_go_silent(worker: &Peer) {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        worker.heartbeat();
        match worker.recv_within(Duration::from_millis(20)) {
            Some(Message::Worker(WorkerCommand::Request { .. })) => return,
            Some(Message::Worker(WorkerCommand::Heartbeat)) | None => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    panic!("no REQUEST arrived");
}

#[test]
fn a_silent_worker_is_purged_and_its_request_goes_to_a_live_one() {
    let broker = TestBroker::start(|c| c.heartbeat_liveness = 10);
    let ctx = zmq::Context::new();
    let silent = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    silent.ready("purge");
    wait_until("the first worker is registered", || {
        silent.heartbeat();
        worker_count(&ctx, &broker.endpoint, "purge") == 1
    });
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V01);
    client.request("purge", &[b"job"]);
    take_request_then_go_silent(&silent);
    let live = BackgroundWorker::start(
        &ctx,
        &broker.endpoint,
        Dialect::V02,
        "purge",
        tagged_echo("live"),
    );
    assert_eq!(
        client.final_body("purge"),
        vec![b"live".to_vec(), b"job".to_vec()]
    );
    silent.expect_disconnect();
    assert_eq!(live.handled(), 1);
    assert_eq!(worker_count(&ctx, &broker.endpoint, "purge"), 1);
    assert!(broker.metric("plantd_broker_workers_removed_total{reason=\"expired\"}") >= 1.0);
}

#[test]
fn every_expired_worker_is_purged_not_only_the_first() {
    let broker = TestBroker::start(|c| c.heartbeat_liveness = 10);
    let ctx = zmq::Context::new();
    let live = BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "many", echo());
    let silent: Vec<Peer> = (0..3)
        .map(|_| {
            let p = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
            p.ready("many");
            p
        })
        .collect();
    // Only a registered worker that went silent gets DISCONNECT (READY was all they sent).
    for p in &silent {
        p.expect_disconnect();
    }
    assert_eq!(worker_count(&ctx, &broker.endpoint, "many"), 1);
    assert!(!live.was_disconnected());
    assert_eq!(
        broker.metric("plantd_broker_workers_removed_total{reason=\"expired\"}"),
        3.0
    );
}

#[test]
fn a_worker_that_closes_mid_request_is_replaced_by_a_second_worker() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let doomed = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    doomed.ready("redo");
    wait_for_workers(&ctx, &broker.endpoint, "redo", 1);
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::Go);
    client.request("redo", &[b"payload", b""]);
    let _ = doomed.next_request();
    let _second = BackgroundWorker::start(
        &ctx,
        &broker.endpoint,
        Dialect::V01,
        "redo",
        tagged_echo("second"),
    );
    drop(doomed); // socket closed mid-request
    assert_eq!(
        client.final_body("redo"),
        vec![b"second".to_vec(), b"payload".to_vec(), b"".to_vec()]
    );
    assert!(broker.metric("plantd_broker_redispatches_total") >= 1.0);
}

#[test]
fn without_another_worker_the_client_gets_500_after_the_retry_limit() {
    let broker = TestBroker::start(|c| c.max_retries = 2);
    let ctx = zmq::Context::new();
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    client.request("cursed", &[b"x"]);
    // Three workers in turn take the request and die: the first dispatch plus two retries.
    for _ in 0..3 {
        let doomed = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
        doomed.ready("cursed");
        let (_, body) = doomed.next_request();
        assert_eq!(body, vec![b"x".to_vec()]);
    }
    let message = expect_error(&client.final_body("cursed"), "500");
    assert_eq!(message, "request failed after 3 attempts: worker lost");
}

#[test]
fn with_retries_off_a_lost_worker_fails_the_request_at_once() {
    let broker = TestBroker::start(|c| c.max_retries = 0);
    let ctx = zmq::Context::new();
    let doomed = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    doomed.ready("once");
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    client.request("once", &[b"x"]);
    let _ = doomed.next_request();
    drop(doomed);
    let message = expect_error(&client.final_body("once"), "500");
    assert_eq!(message, "request failed after 1 attempts: worker lost");
}

#[test]
fn unexpected_worker_commands_get_disconnect() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();

    // HEARTBEAT from a peer that never said READY.
    let stranger = Peer::connect(&ctx, &broker.endpoint, Dialect::Go);
    stranger.heartbeat();
    stranger.expect_disconnect();

    // FINAL from an idle worker.
    let idle = Peer::connect(&ctx, &broker.endpoint, Dialect::V01);
    idle.ready("strict");
    wait_for_workers(&ctx, &broker.endpoint, "strict", 1);
    idle.final_reply(b"nobody", vec![b"x".to_vec()]);
    idle.expect_disconnect();
    wait_for_workers(&ctx, &broker.endpoint, "strict", 0);

    // A second READY.
    let twice = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    twice.ready("strict");
    wait_for_workers(&ctx, &broker.endpoint, "strict", 1);
    twice.ready("strict");
    twice.expect_disconnect();
    wait_for_workers(&ctx, &broker.endpoint, "strict", 0);

    // FINAL addressed to a client the worker is not serving: DISCONNECT, and the real request
    // goes to another worker.
    let liar = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    liar.ready("strict");
    wait_for_workers(&ctx, &broker.endpoint, "strict", 1);
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    client.request("strict", &[b"x"]);
    let (_, _) = liar.next_request();
    liar.final_reply(b"someone-else", vec![b"forged".to_vec()]);
    liar.expect_disconnect();
    let _honest = BackgroundWorker::start(
        &ctx,
        &broker.endpoint,
        Dialect::V02,
        "strict",
        tagged_echo("honest"),
    );
    assert_eq!(
        client.final_body("strict"),
        vec![b"honest".to_vec(), b"x".to_vec()]
    );
    assert!(
        broker.metric("plantd_broker_workers_removed_total{reason=\"protocol_violation\"}") >= 3.0
    );
}
