//! Malformed and random input never hurts the broker.

use plantd_worker_sdk::protocol::Dialect;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::*;

const HEADERS: [&[u8]; 5] = [b"MDPC01", b"MDPW01", b"MDPC02", b"MDPW02", b"MDPX99"];
const WORDS: [&[u8]; 8] = [
    b"READY",
    b"REQUEST",
    b"PARTIAL",
    b"FINAL",
    b"HEARTBEAT",
    b"DISCONNECT",
    b"BOGUS",
    b"",
];

/// A random message: pure noise, or an MDP-shaped message with random parts.
pub(crate) fn random_message(rng: &mut impl Rng) -> Vec<Vec<u8>> {
    let noise = |rng: &mut dyn rand::RngCore| -> Vec<u8> {
        let len = rng.gen_range(0..24);
        (0..len).map(|_| rng.gen()).collect()
    };
    let mut frames = Vec::new();
    if rng.gen_bool(0.3) {
        for _ in 0..rng.gen_range(1..6) {
            frames.push(noise(rng));
        }
        return frames;
    }
    if rng.gen_bool(0.5) {
        frames.push(Vec::new());
    }
    frames.push(HEADERS[rng.gen_range(0..HEADERS.len())].to_vec());
    if rng.gen_bool(0.5) {
        frames.push(vec![rng.gen_range(0..8u8)]);
    } else {
        frames.push(WORDS[rng.gen_range(0..WORDS.len())].to_vec());
    }
    for _ in 0..rng.gen_range(0..5) {
        frames.push(if rng.gen_bool(0.3) {
            Vec::new()
        } else {
            noise(rng)
        });
    }
    frames
}

#[test]
fn ten_thousand_random_and_malformed_messages_leave_the_broker_serving() {
    let broker = TestBroker::start(|c| c.queue_ttl_ms = 500);
    let ctx = zmq::Context::new();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let fuzzers: Vec<Peer> = (0..5)
        .map(|i| Peer::connect(&ctx, &broker.endpoint, ALL_DIALECTS[i % 3]))
        .collect();
    for i in 0..10_000 {
        fuzzers[i % fuzzers.len()].send_raw(random_message(&mut rng));
    }
    // A client sending a reply is not relayed (and is answered: see the next test).
    let rude = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    rude.send_raw(vec![
        b"MDPC02".to_vec(),
        vec![0x03],
        b"svc".to_vec(),
        b"x".to_vec(),
    ]);

    wait_until("the broker has read every message", || {
        broker.metric("plantd_broker_messages_received_total") >= 10_001.0
    });
    let _worker =
        BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "after.fuzz", echo());
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    assert_eq!(
        client.call("after.fuzz", &[b"still here"]),
        vec![b"still here".to_vec()]
    );
    assert!(broker.metric("plantd_broker_malformed_messages_total") > 1000.0);
    assert!(broker.metric("plantd_broker_client_replies_dropped_total") >= 1.0);
    let healthz = reqwest::blocking::get(broker.url("/healthz")).expect("healthz");
    assert_eq!(healthz.status(), 200);
}

#[test]
fn service_names_longer_than_255_bytes_are_malformed() {
    let broker = TestBroker::start(|c| c.queue_ttl_ms = 300);
    let ctx = zmq::Context::new();
    let longest = "s".repeat(255);
    let too_long = "s".repeat(256);

    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V01);
    client.request(&too_long, &[b"x"]);
    wait_until("the request is counted as malformed", || {
        broker.metric("plantd_broker_malformed_messages_total") == 1.0
    });
    let worker = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    worker.ready(&too_long);
    worker.expect_disconnect();
    assert_eq!(broker.metric("plantd_broker_malformed_messages_total"), 2.0);
    let services = mmi(&ctx, &broker.endpoint, "mmi.services", &[]);
    assert_eq!(services[1], "[]", "no service was created");
    assert_eq!(broker.metric("plantd_broker_requests_total"), 0.0);

    // 255 bytes is still a name: the request waits, then expires as usual.
    client.request(&longest, &[b"x"]);
    expect_error(&client.final_body(&longest), "404");
}

#[test]
fn a_client_sending_partial_or_final_gets_400_in_its_own_dialect() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    // `majortomo`'s client sends 0x02 as its request; RFC 18 numbers REQUEST 0x01.
    let cases: [(Dialect, Vec<Vec<u8>>, &str); 3] = [
        (
            Dialect::V02,
            vec![
                b"MDPC02".to_vec(),
                vec![0x02],
                b"svc".to_vec(),
                b"x".to_vec(),
            ],
            "bad request: client sent PARTIAL (0x02); REQUEST is 0x01 in MDP/0.2",
        ),
        (
            Dialect::V02,
            vec![b"MDPC02".to_vec(), vec![0x03], b"svc".to_vec()],
            "bad request: client sent FINAL (0x03); REQUEST is 0x01 in MDP/0.2",
        ),
        (
            Dialect::Go,
            vec![
                Vec::new(),
                b"MDPC02".to_vec(),
                b"PARTIAL".to_vec(),
                b"svc".to_vec(),
            ],
            "bad request: client sent PARTIAL; a client sends REQUEST",
        ),
    ];
    for (dialect, frames, want) in cases {
        let client = Peer::connect(&ctx, &broker.endpoint, dialect);
        client.send_raw(frames);
        // `final_body` checks the reply is a FINAL for `svc` in the client's dialect.
        let body = client.final_body("svc");
        assert_eq!(expect_error(&body, "400"), want, "{dialect:?}");
    }
    assert_eq!(
        broker.metric("plantd_broker_client_replies_dropped_total"),
        3.0
    );
    assert_eq!(
        broker.metric("plantd_broker_error_replies_total{code=\"400\"}"),
        3.0
    );
    assert_eq!(broker.metric("plantd_broker_requests_total"), 0.0);
}
