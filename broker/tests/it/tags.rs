//! plantd's request tags (`protocol::tag`): a client puts `[tag, ""]` in front of a request and
//! gets every reply to it behind the same tag, in every dialect, so many requests share a socket.

use plantd_worker_sdk::protocol::{
    self, ClientCommand, Dialect, Direction, Frame, Message, WorkerCommand,
};

use crate::common::*;

/// Sends a REQUEST for `service` tagged `tag`, in the client's dialect.
fn send_tagged(client: &Peer, tag: &[u8], service: &str, body: &[u8]) {
    let mut frames = vec![Frame::from(tag), Frame::new()];
    let request = Message::Client(ClientCommand::Request {
        service: Frame::from(service),
        body: vec![Frame::from(body)],
    });
    protocol::encode(client.dialect, Direction::ToBroker, request, &mut frames).unwrap();
    protocol::send_frames(&client.socket, frames, 0).unwrap();
}

/// The next reply to a tagging client: its tag and the decoded message behind the delimiter.
fn tagged_reply(client: &Peer) -> (Vec<u8>, Message) {
    assert!(
        client
            .socket
            .poll(zmq::POLLIN, DEADLINE.as_millis() as i64)
            .unwrap()
            > 0,
        "no reply within {DEADLINE:?}"
    );
    let mut frames = protocol::recv_frames(&client.socket, 0).unwrap();
    let tag = frames.remove(0).to_vec();
    assert!(frames[0].is_empty(), "the delimiter follows the tag");
    let (dialect, message) = protocol::decode(Direction::FromBroker, frames).unwrap();
    assert_eq!(dialect, client.dialect, "answered in the client's dialect");
    (tag, message)
}

fn final_body(message: Message) -> Vec<Vec<u8>> {
    match message {
        Message::Client(ClientCommand::Final { body, .. }) => protocol::to_vecs(&body),
        other => panic!("expected FINAL, got {other:?}"),
    }
}

#[test]
fn tagged_requests_get_their_tags_back_in_every_dialect_even_out_of_order() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let worker = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    worker.ready_with_credit("tags", 8);
    wait_for_workers(&ctx, &broker.endpoint, "tags", 1);

    for dialect in [Dialect::V01, Dialect::V02, Dialect::Go] {
        let client = Peer::connect(&ctx, &broker.endpoint, dialect);
        for i in 0..3u8 {
            send_tagged(&client, &[b't', i], "tags", &[i]);
        }
        let mut held: Vec<_> = (0..3).map(|_| worker.next_request()).collect();
        // The worker answers the last first; a streaming PARTIAL goes first where the dialect
        // has one (7/MDP clients only ever see the FINAL).
        held.reverse();
        worker.partial_reply(&held[0].0, vec![b"partial".to_vec()]);
        for (address, body) in &held {
            worker.final_reply(address, vec![b"done".to_vec(), body[0].clone()]);
        }
        if dialect != Dialect::V01 {
            let (tag, partial) = tagged_reply(&client);
            assert_eq!(tag, [b't', 2]);
            assert!(
                matches!(partial, Message::Client(ClientCommand::Partial { .. })),
                "{partial:?}"
            );
        }
        for expected in [2u8, 1, 0] {
            let (tag, reply) = tagged_reply(&client);
            assert_eq!(tag, [b't', expected], "{dialect:?}");
            assert_eq!(final_body(reply), [b"done".to_vec(), vec![expected]]);
        }
    }
}

#[test]
fn broker_answers_and_error_replies_carry_the_tag_too() {
    let broker = TestBroker::start(|config| config.queue_ttl_ms = 200);
    let ctx = zmq::Context::new();
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    send_tagged(&client, b"mmi", "mmi.service", b"nothing");
    let (tag, reply) = tagged_reply(&client);
    assert_eq!(
        (tag.as_slice(), final_body(reply)),
        (&b"mmi"[..], vec![b"404".to_vec()])
    );
    send_tagged(&client, b"expires", "no.such.service", b"x");
    let (tag, reply) = tagged_reply(&client);
    assert_eq!(tag, b"expires");
    expect_error(&final_body(reply), "404");
}

#[test]
fn tagged_worker_messages_and_overlong_tags_are_malformed() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let worker = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    let mut ready = vec![Frame::from("tag"), Frame::new()];
    protocol::encode(
        Dialect::V02,
        Direction::ToBroker,
        Message::Worker(WorkerCommand::Ready {
            service: Frame::from("tagged.worker"),
            credit: 1,
        }),
        &mut ready,
    )
    .unwrap();
    protocol::send_frames(&worker.socket, ready, 0).unwrap();
    let client = Peer::connect(&ctx, &broker.endpoint, Dialect::V02);
    send_tagged(&client, &[7; 256], "mmi.service", b"x");
    wait_until("both are counted as malformed", || {
        broker.metric("plantd_broker_malformed_messages_total") == 2.0
    });
    assert_eq!(worker_count(&ctx, &broker.endpoint, "tagged.worker"), 0);
    assert!(
        client.socket.poll(zmq::POLLIN, 100).unwrap() == 0,
        "no reply to a malformed request"
    );
    // A tag of the longest allowed size still works.
    send_tagged(&client, &[7; 255], "mmi.service", b"x");
    let (tag, _) = tagged_reply(&client);
    assert_eq!(tag.len(), 255);
}

#[test]
fn a_req_client_behind_a_router_dealer_device_is_answered_through_it() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let _echo = BackgroundWorker::start(
        &ctx,
        &broker.endpoint,
        Dialect::V01,
        "behind.device",
        echo(),
    );
    wait_for_workers(&ctx, &broker.endpoint, "behind.device", 1);

    // The device's ROUTER prepends the REQ peer's routing id: to the broker, that is a tag.
    let device = zmq::Context::new();
    let front_endpoint = plantd_worker_sdk::testing::free_endpoint();
    let frontend = device.socket(zmq::ROUTER).unwrap();
    frontend.bind(&front_endpoint).unwrap();
    let backend = device.socket(zmq::DEALER).unwrap();
    backend.connect(&broker.endpoint).unwrap();
    std::thread::spawn(move || {
        let _ = zmq::proxy(&frontend, &backend);
    });
    // The device runs until the process ends: its context must outlive the test.
    std::mem::forget(device);

    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_linger(0).unwrap();
    req.connect(&front_endpoint).unwrap();
    req.send_multipart([&b"MDPC01"[..], b"behind.device", b"hello"], 0)
        .unwrap();
    assert!(
        req.poll(zmq::POLLIN, DEADLINE.as_millis() as i64).unwrap() > 0,
        "no reply"
    );
    let reply = req.recv_multipart(0).unwrap();
    assert_eq!(
        reply,
        [
            b"MDPC01".to_vec(),
            b"behind.device".to_vec(),
            b"hello".to_vec()
        ]
    );
}
