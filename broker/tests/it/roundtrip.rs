//! Round trips in every dialect pair, and streaming replies.

use plantd_worker_sdk::protocol::Dialect;

use crate::common::*;

fn body_fixture() -> Vec<Vec<u8>> {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    vec![
        b"".to_vec(),
        b"first".to_vec(),
        b"".to_vec(),
        vec![0x00, 0xff, 0x01, 0x00, 0x80],
        big,
        b"".to_vec(),
    ]
}

#[test]
fn every_client_dialect_reaches_every_worker_dialect_with_bodies_unchanged() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let _workers: Vec<BackgroundWorker> = ALL_DIALECTS
        .iter()
        .map(|&d| {
            BackgroundWorker::start(
                &ctx,
                &broker.endpoint,
                d,
                &format!("echo.{}", d.name()),
                echo(),
            )
        })
        .collect();
    let body = body_fixture();
    let body_refs: Vec<&[u8]> = body.iter().map(|b| b.as_slice()).collect();
    for client_dialect in ALL_DIALECTS {
        let client = Peer::connect(&ctx, &broker.endpoint, client_dialect);
        for worker_dialect in ALL_DIALECTS {
            let service = format!("echo.{}", worker_dialect.name());
            let reply = client.call(&service, &body_refs);
            assert_eq!(
                reply,
                body,
                "client {} -> worker {}",
                client_dialect.name(),
                worker_dialect.name()
            );
        }
    }
}

#[test]
fn empty_body_requests_round_trip() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let _worker = BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "svc", echo());
    for dialect in ALL_DIALECTS {
        let client = Peer::connect(&ctx, &broker.endpoint, dialect);
        assert_eq!(client.call("svc", &[]), Vec::<Vec<u8>>::new());
    }
}

/// Sends three PARTIALs (`p1`..`p3`) and then FINAL `done`.
fn streaming() -> Behaviour {
    std::sync::Arc::new(|peer: &Peer, client: &[u8], _body: Vec<Vec<u8>>| {
        for i in 1..=3 {
            peer.partial_reply(client, vec![format!("p{i}").into_bytes()]);
        }
        peer.final_reply(client, vec![b"done".to_vec()]);
    })
}

#[test]
fn streaming_replies_arrive_in_order_and_mdp01_clients_get_only_the_final() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let _v02_worker =
        BackgroundWorker::start(&ctx, &broker.endpoint, Dialect::V02, "stream", streaming());
    let _go_worker = BackgroundWorker::start(
        &ctx,
        &broker.endpoint,
        Dialect::Go,
        "stream.go",
        streaming(),
    );
    let expected = vec![
        Reply::Partial(vec![b"p1".to_vec()]),
        Reply::Partial(vec![b"p2".to_vec()]),
        Reply::Partial(vec![b"p3".to_vec()]),
        Reply::Final(vec![b"done".to_vec()]),
    ];

    for (client_dialect, service) in [
        (Dialect::V02, "stream"),
        (Dialect::Go, "stream"),
        (Dialect::V02, "stream.go"),
    ] {
        let client = Peer::connect(&ctx, &broker.endpoint, client_dialect);
        client.request(service, &[b"go"]);
        let replies: Vec<Reply> = (0..4).map(|_| client.reply(service)).collect();
        assert_eq!(
            replies,
            expected,
            "{} client, {service}",
            client_dialect.name()
        );
    }

    let v01 = Peer::connect(&ctx, &broker.endpoint, Dialect::V01);
    v01.request("stream", &[b"go"]);
    // The broker-to-client pipe is FIFO: had any PARTIAL been relayed, it would come first.
    assert_eq!(v01.reply("stream"), Reply::Final(vec![b"done".to_vec()]));
    assert!(broker.metric("plantd_broker_partials_dropped_total") >= 3.0);
}
