//! plantd's credit extension: a worker that registers with `credit=N` holds up to N requests.

use plantd_worker_sdk::protocol::{Dialect, Message, WorkerCommand};

use crate::common::*;

/// Collects `n` REQUESTs (skipping heartbeats) as `(address, body)`.
fn requests(worker: &Peer, n: usize) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    (0..n).map(|_| worker.next_request()).collect()
}

fn one(text: &str) -> Vec<Vec<u8>> {
    vec![text.as_bytes().to_vec()]
}

#[test]
fn a_credit_worker_holds_up_to_its_credit_and_may_answer_in_any_order() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let worker = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    worker.ready_with_credit("credit", 3);
    wait_for_workers(&ctx, &broker.endpoint, "credit", 1);

    // One pipelining client: five requests, so three addresses carry the same client id.
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    for body in ["r0", "r1", "r2", "r3", "r4"] {
        client.request("credit", &[body.as_bytes()]);
    }
    let held = requests(&worker, 3);
    let bodies: Vec<_> = held.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(bodies, [one("r0"), one("r1"), one("r2")]);
    // The broker's own view: two requests wait, three are held, none beyond the credit.
    wait_until("two requests wait at the broker", || {
        broker.metric("plantd_broker_queued_requests") == 2.0
    });
    let workers = mmi(&ctx, &broker.endpoint, "mmi.workers", &["credit"]);
    let listed: serde_json::Value = serde_json::from_str(&workers[1]).unwrap();
    assert_eq!(listed[0]["credit"], 3);
    assert_eq!(listed[0]["in_flight"], 3);

    // Answer the last first: the client gets that reply, and one credit frees one more request.
    worker.final_reply(&held[2].0, one("done r2"));
    assert_eq!(client.final_body("credit"), one("done r2"));
    let (address3, body3) = worker.next_request();
    assert_eq!(body3, one("r3"));
    worker.final_reply(&held[0].0, one("done r0"));
    worker.final_reply(&address3, one("done r3"));
    worker.final_reply(&held[1].0, one("done r1"));
    let (address4, body4) = worker.next_request();
    assert_eq!(body4, one("r4"));
    worker.final_reply(&address4, one("done r4"));
    let mut replies: Vec<_> = (0..4).map(|_| client.final_body("credit")).collect();
    replies.sort();
    assert_eq!(
        replies,
        [
            one("done r0"),
            one("done r1"),
            one("done r3"),
            one("done r4")
        ]
    );
}

#[test]
fn partials_from_a_credit_worker_reach_the_right_client() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let worker = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    worker.ready_with_credit("stream", 2);
    wait_for_workers(&ctx, &broker.endpoint, "stream", 1);
    let a = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    let b = Peer::connect(&ctx, &broker.endpoint, Dialect::Go);
    a.request("stream", &[b"a"]);
    let (to_a, _) = worker.next_request();
    b.request("stream", &[b"b"]);
    let (to_b, _) = worker.next_request();
    worker.partial_reply(&to_b, one("b progress"));
    worker.partial_reply(&to_a, one("a progress"));
    worker.final_reply(&to_a, one("a done"));
    worker.final_reply(&to_b, one("b done"));
    for (client, name) in [(&a, "a"), (&b, "b")] {
        match client.reply("stream") {
            Reply::Partial(body) => assert_eq!(body, one(&format!("{name} progress"))),
            other => panic!("expected PARTIAL, got {other:?}"),
        }
        assert_eq!(client.final_body("stream"), one(&format!("{name} done")));
    }
}

#[test]
fn every_request_of_a_lost_credit_worker_is_dispatched_again() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let doomed = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    doomed.ready_with_credit("again", 4);
    wait_for_workers(&ctx, &broker.endpoint, "again", 1);
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    for body in ["a", "b", "c"] {
        client.request("again", &[body.as_bytes()]);
    }
    let _ = requests(&doomed, 3);
    let _rescuer = BackgroundWorker::start(
        &ctx,
        &broker.endpoint,
        Dialect::V01,
        "again",
        tagged_echo("rescued"),
    );
    drop(doomed); // closed with three requests in hand
    let mut replies: Vec<_> = (0..3).map(|_| client.final_body("again")).collect();
    replies.sort();
    let expected: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|b| vec![b"rescued".to_vec(), b.as_bytes().to_vec()])
        .collect();
    assert_eq!(replies, expected);
    assert!(broker.metric("plantd_broker_redispatches_total") >= 3.0);
}

#[test]
fn a_reply_with_an_unknown_tag_is_a_protocol_violation() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let liar = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    liar.ready_with_credit("tags", 2);
    wait_for_workers(&ctx, &broker.endpoint, "tags", 1);
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    client.request("tags", &[b"x"]);
    let (address, _) = liar.next_request();
    // Same client, a tag that was never issued.
    let mut forged = address.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0xff;
    liar.final_reply(&forged, one("forged"));
    liar.expect_disconnect();
    let _honest = BackgroundWorker::start(
        &ctx,
        &broker.endpoint,
        Dialect::V02,
        "tags",
        tagged_echo("honest"),
    );
    assert_eq!(
        client.final_body("tags"),
        vec![b"honest".to_vec(), b"x".to_vec()]
    );
}

#[test]
fn a_ready_with_a_bad_credit_frame_is_refused() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let worker = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    worker.send_raw(vec![
        b"MDPW02".to_vec(),
        vec![0x01],
        b"bad-credit".to_vec(),
        b"credit=0".to_vec(),
    ]);
    // Not registered: a HEARTBEAT from it is answered with DISCONNECT.
    worker.send(Message::Worker(WorkerCommand::Heartbeat));
    worker.expect_disconnect();
    assert_eq!(worker_count(&ctx, &broker.endpoint, "bad-credit"), 0);
    assert!(broker.metric("plantd_broker_malformed_messages_total") >= 1.0);
}

#[test]
fn requests_go_round_the_workers_rather_than_filling_one_workers_credit() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let roomy = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    roomy.ready_with_credit("round", 4);
    wait_for_workers(&ctx, &broker.endpoint, "round", 1);
    let plain = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    plain.ready("round");
    wait_for_workers(&ctx, &broker.endpoint, "round", 2);

    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    for body in ["r0", "r1", "r2"] {
        client.request("round", &[body.as_bytes()]);
    }
    // r0 to the credit worker (then back in line), r1 to the plain one, r2 to the credit worker.
    let at_roomy = requests(&roomy, 2);
    assert_eq!(at_roomy[0].1, one("r0"));
    assert_eq!(at_roomy[1].1, one("r2"));
    let (to_plain, body) = plain.next_request();
    assert_eq!(body, one("r1"));

    let services = mmi(&ctx, &broker.endpoint, "mmi.services", &[]);
    let listed: serde_json::Value = serde_json::from_str(&services[1]).unwrap();
    assert_eq!(
        listed[0]["idle"], 1,
        "only the credit worker has room: {listed}"
    );

    roomy.final_reply(&at_roomy[0].0, one("a0"));
    plain.final_reply(&to_plain, one("b1"));
    roomy.final_reply(&at_roomy[1].0, one("a2"));
    let mut replies: Vec<_> = (0..3).map(|_| client.final_body("round")).collect();
    replies.sort();
    assert_eq!(replies, [one("a0"), one("a2"), one("b1")]);
}
