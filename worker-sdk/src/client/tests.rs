//! Client wire behaviour against a bare ROUTER peer: reply matching, typed errors, timeouts and
//! resends on fresh sockets. (Behaviour through the real broker is covered by the workspace
//! integration tests.)

use std::time::{Duration, Instant};

use super::*;
use crate::protocol::{self, frames_of};
use crate::testing::free_endpoint;

const DEADLINE: Duration = Duration::from_secs(15);

/// A ROUTER standing where a broker would.
struct Peer {
    socket: zmq::Socket,
    _context: zmq::Context,
}

impl Peer {
    fn bind(endpoint: &str) -> Peer {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::ROUTER).unwrap();
        socket.set_linger(0).unwrap();
        // A ROUTER drops what exceeds its high-water mark; a broker's is far above 1000 too.
        socket.set_sndhwm(0).unwrap();
        socket.bind(endpoint).unwrap();
        Peer {
            socket,
            _context: context,
        }
    }

    /// The next client REQUEST: (where it came from, dialect, service, body).
    fn expect_request(&self) -> (Address, Dialect, Vec<u8>, Frames) {
        assert!(
            self.socket
                .poll(zmq::POLLIN, DEADLINE.as_millis() as i64)
                .unwrap()
                > 0,
            "no request within {DEADLINE:?}"
        );
        let mut frames = protocol::recv_frames(&self.socket, 0).unwrap();
        let id = frames.remove(0).to_vec();
        let tag = match protocol::tag::tagging(&frames) {
            protocol::tag::Tagging::Tagged => Some(frames.remove(0).to_vec()),
            _ => None,
        };
        match decode(Direction::ToBroker, frames) {
            Ok((dialect, Message::Client(ClientCommand::Request { service, body }))) => (
                Address { id, tag },
                dialect,
                service.to_vec(),
                protocol::to_vecs(&body),
            ),
            other => panic!("expected a client REQUEST, got {other:?}"),
        }
    }

    /// Sends `command` back to `to` as a broker would: behind the request's tag, if it had one.
    fn reply(&self, to: &Address, dialect: Dialect, command: ClientCommand) {
        let mut frames = vec![Frame::from(&to.id[..])];
        if let Some(tag) = &to.tag {
            frames.push(Frame::from(&tag[..]));
            if dialect != Dialect::V01 {
                frames.push(Frame::new());
            }
        }
        encode(
            dialect,
            Direction::FromBroker,
            Message::Client(command),
            &mut frames,
        )
        .unwrap();
        protocol::send_frames(&self.socket, frames, 0).unwrap();
    }

    fn final_reply(&self, to: &Address, service: &str, body: &[&[u8]]) {
        self.reply(
            to,
            Dialect::V02,
            ClientCommand::Final {
                service: Frame::from(service),
                body: frames_of(body),
            },
        );
    }
}

/// Where a request came from: the client socket's routing id and, from the async client, its
/// request tag.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Address {
    id: Vec<u8>,
    tag: Option<Vec<u8>>,
}

fn frames(parts: &[&[u8]]) -> Frames {
    parts.iter().map(|p| p.to_vec()).collect()
}

#[test]
fn error_replies_become_typed_errors() {
    let error = |code: &str, message: &str| {
        final_result(&frames_of(&[
            b"plantd.error",
            code.as_bytes(),
            message.as_bytes(),
        ]))
    };
    assert!(matches!(error("404", "x"), Err(ClientError::NotFound)));
    assert!(matches!(error("503", "x"), Err(ClientError::QueueFull)));
    assert!(matches!(error("504", "x"), Err(ClientError::Expired)));
    assert!(
        matches!(error("500", "handler broke"), Err(ClientError::Worker(m)) if m == "handler broke")
    );
    assert!(matches!(
        error("418", "teapot"),
        Err(ClientError::Broker { code, message }) if code == "418" && message == "teapot"
    ));
    assert_eq!(
        final_result(&frames_of(&[&b"ok"[..], b""])).unwrap(),
        frames(&[b"ok", b""])
    );
}

#[test]
fn replies_for_another_service_are_stale() {
    let reply = |service: &str| {
        let mut out = Vec::new();
        let cmd = ClientCommand::Final {
            service: Frame::from(service),
            body: frames_of(&["x"]),
        };
        encode(
            Dialect::V02,
            Direction::FromBroker,
            Message::Client(cmd),
            &mut out,
        )
        .unwrap();
        out
    };
    assert!(matches!(classify(reply("a"), "a"), Incoming::Final(Ok(_))));
    assert!(matches!(classify(reply("b"), "a"), Incoming::Stale));
    assert!(matches!(
        classify(frames_of(&["junk"]), "a"),
        Incoming::Stale
    ));
}

#[test]
fn bad_endpoint_and_empty_service_are_rejected() {
    assert!(matches!(
        Client::connect("nonsense"),
        Err(ClientError::InvalidEndpoint(_))
    ));
    assert!(matches!(
        AsyncClient::connect("foo://bar"),
        Err(ClientError::InvalidEndpoint(_))
    ));
    let client = Client::connect(&free_endpoint()).unwrap();
    assert!(matches!(
        client.request("", vec![]),
        Err(ClientError::InvalidRequest(_))
    ));
}

#[test]
fn request_skips_stale_replies_and_partials_and_reuses_its_socket() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let client = Client::connect(&endpoint).unwrap();
    let requester = {
        let client = client.clone();
        std::thread::spawn(move || client.request("svc", frames(&[b"a", b"", b"\x00"])))
    };
    let (id, dialect, service, body) = peer.expect_request();
    assert_eq!((dialect, service.as_slice()), (Dialect::V02, &b"svc"[..]));
    assert_eq!(body, frames(&[b"a", b"", b"\x00"]));
    peer.final_reply(&id, "other", &[b"stale"]);
    peer.reply(
        &id,
        Dialect::V02,
        ClientCommand::Partial {
            service: Frame::from("svc"),
            body: frames_of(&["p"]),
        },
    );
    peer.final_reply(&id, "svc", &[b"right"]);
    assert_eq!(requester.join().unwrap().unwrap(), frames(&[b"right"]));

    // The next request goes out on the same (returned) socket.
    let requester = std::thread::spawn(move || client.request("svc", vec![]));
    let (again, _, _, _) = peer.expect_request();
    assert_eq!(again, id);
    peer.final_reply(&again, "svc", &[]);
    assert_eq!(requester.join().unwrap().unwrap(), Frames::new());
}

#[test]
fn timeout_resends_on_new_sockets_then_gives_up() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let client = Client::connect(&endpoint)
        .unwrap()
        .with_timeout(Duration::from_millis(200))
        .with_retries(2);
    let started = Instant::now();
    let requester = std::thread::spawn(move || client.request("svc", frames(&[b"again"])));
    let ids: Vec<Address> = (0..3)
        .map(|_| {
            let (id, _, _, body) = peer.expect_request();
            assert_eq!(body, frames(&[b"again"]));
            id
        })
        .collect();
    assert!(matches!(
        requester.join().unwrap(),
        Err(ClientError::Timeout)
    ));
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2],
        "resent on the same socket"
    );
}

#[test]
fn streams_partials_in_order_in_every_dialect_that_has_them() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    for dialect in [Dialect::V02, Dialect::Go] {
        let client = Client::connect(&endpoint).unwrap().with_dialect(dialect);
        let requester = std::thread::spawn(move || {
            client
                .request_stream("svc", vec![])
                .unwrap()
                .collect::<Vec<_>>()
        });
        let (id, seen, _, _) = peer.expect_request();
        assert_eq!(seen, dialect);
        for part in ["1", "2", "3"] {
            peer.reply(
                &id,
                dialect,
                ClientCommand::Partial {
                    service: Frame::from("svc"),
                    body: frames_of(&[part]),
                },
            );
        }
        peer.reply(
            &id,
            dialect,
            ClientCommand::Final {
                service: Frame::from("svc"),
                body: frames_of(&["end"]),
            },
        );
        let replies: Vec<Reply> = requester
            .join()
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            replies,
            vec![
                Reply::Partial(frames(&[b"1"])),
                Reply::Partial(frames(&[b"2"])),
                Reply::Partial(frames(&[b"3"])),
                Reply::Final(frames(&[b"end"])),
            ]
        );
    }
}

#[test]
fn async_client_serves_concurrent_requests_and_times_out() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = AsyncClient::connect(&endpoint).unwrap();
    let tasks: Vec<_> = (0..20u8)
        .map(|i| {
            let client = client.clone();
            runtime.spawn(async move { client.request("svc", vec![vec![i]]).await })
        })
        .collect();
    // Answer in reverse order of arrival: each reply still reaches its own request.
    let mut requests: Vec<_> = (0..20).map(|_| peer.expect_request()).collect();
    requests.reverse();
    for (id, _, _, body) in &requests {
        peer.final_reply(id, "svc", &[&body[0], b"ok"]);
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = runtime.block_on(task).unwrap().unwrap();
        assert_eq!(reply, vec![vec![i as u8], b"ok".to_vec()]);
    }

    let client = client
        .with_timeout(Duration::from_millis(100))
        .with_retries(1);
    let started = Instant::now();
    let result = runtime.block_on(client.request("svc", vec![]));
    assert!(matches!(result, Err(ClientError::Timeout)));
    assert!(started.elapsed() >= Duration::from_millis(200));
    let (first, _, _, _) = peer.expect_request();
    let (second, _, _, _) = peer.expect_request();
    assert_ne!(first, second);
}

/// Runs `f` on a thread; its result, or a panic after [`DEADLINE`] (far less than the requests'
/// own timeouts, so only a dropped connection can have ended them).
fn within_deadline<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl FnOnce() -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    move || {
        rx.recv_timeout(DEADLINE)
            .expect("still waiting: not ended by the disconnect")
    }
}

#[test]
fn a_dropped_connection_fails_the_request_at_once_without_retries() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let client = Client::connect(&endpoint)
        .unwrap()
        .with_timeout(Duration::from_secs(60));
    let result = within_deadline(move || client.request("svc", frames(&[b"held"])));
    peer.expect_request();
    drop(peer);
    let error = result().unwrap_err();
    assert!(
        matches!(error, ClientError::BrokerDisconnected),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "broker disconnected while the request was in flight"
    );
}

#[test]
fn with_retries_a_dropped_connection_resends_once_the_peer_is_back() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = AsyncClient::connect(&endpoint)
        .unwrap()
        .with_retry_policy(RetryPolicy::new(2, Duration::from_secs(60)));
    assert_eq!(client.retry_policy().attempts(), 2);
    let task = runtime.spawn(async move { client.request("svc", frames(&[b"again"])).await });
    let (_, _, _, body) = peer.expect_request();
    assert_eq!(body, frames(&[b"again"]));
    drop(peer);
    // A new peer on the same endpoint gets the resend and answers it.
    let peer = Peer::bind(&endpoint);
    let (id, _, _, body) = peer.expect_request();
    assert_eq!(body, frames(&[b"again"]));
    peer.final_reply(&id, "svc", &[b"answered"]);
    let reply = runtime
        .block_on(async { tokio::time::timeout(DEADLINE, task).await })
        .expect("still waiting: not resent after the disconnect")
        .unwrap();
    assert_eq!(reply.unwrap(), frames(&[b"answered"]));
}

#[test]
fn a_request_moves_unsent_past_brokers_that_are_down_and_later_ones_go_straight_there() {
    let (down, up) = (free_endpoint(), free_endpoint());
    let peer = Peer::bind(&up);
    let list = format!("{down},{up}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let blocking = Client::connect(&list)
        .unwrap()
        .with_timeout(Duration::from_secs(60));
    let asynchronous = AsyncClient::connect(&list)
        .unwrap()
        .with_timeout(Duration::from_secs(60));
    assert_eq!(blocking.endpoints(), [down.clone(), up.clone()]);
    // The first round moves each client to the broker that is up (after FAILOVER_AFTER); the
    // second goes there at once, and is sent only there too.
    for _ in 0..2 {
        let result = within_deadline({
            let client = blocking.clone();
            move || client.request("svc", frames(&[b"b"]))
        });
        let (id, _, _, body) = peer.expect_request();
        assert_eq!(body, frames(&[b"b"]), "sent once, to the broker that is up");
        peer.final_reply(&id, "svc", &[b"ok"]);
        assert_eq!(result().unwrap(), frames(&[b"ok"]));

        let task = runtime.spawn({
            let client = asynchronous.clone();
            async move { client.request("svc", frames(&[b"a"])).await }
        });
        let (id, _, _, body) = peer.expect_request();
        assert_eq!(body, frames(&[b"a"]));
        peer.final_reply(&id, "svc", &[b"ok"]);
        let reply = runtime
            .block_on(async { tokio::time::timeout(DEADLINE, task).await })
            .expect("not answered")
            .unwrap();
        assert_eq!(reply.unwrap(), frames(&[b"ok"]));
        assert_eq!((blocking.endpoint(), asynchronous.endpoint()), (&*up, &*up));
    }
}

#[test]
fn a_request_lost_with_its_broker_is_resent_to_the_next_one() {
    let (first, second) = (free_endpoint(), free_endpoint());
    let (peer, next) = (Peer::bind(&first), Peer::bind(&second));
    let client = Client::connect(&format!("{first},{second}"))
        .unwrap()
        .with_retry_policy(RetryPolicy::new(2, Duration::from_secs(60)));
    let result = within_deadline(move || client.request("svc", frames(&[b"x"])));
    peer.expect_request();
    drop(peer);
    let (id, _, _, body) = next.expect_request();
    assert_eq!(body, frames(&[b"x"]));
    next.final_reply(&id, "svc", &[b"from the second"]);
    assert_eq!(result().unwrap(), frames(&[b"from the second"]));
}

#[test]
fn async_requests_share_one_socket_and_tags_keep_their_replies_apart() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A long timeout: this is about matching replies, not time, on a loaded machine.
    let client = AsyncClient::connect(&endpoint)
        .unwrap()
        .with_timeout(Duration::from_secs(60));
    // More than libzmq's 1023 sockets per context: one socket per request could not do this.
    const IN_FLIGHT: u32 = 2_000;
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let client = client.clone();
            runtime
                .spawn(async move { client.request("svc", vec![i.to_be_bytes().to_vec()]).await })
        })
        .collect();
    let mut requests: Vec<_> = (0..IN_FLIGHT).map(|_| peer.expect_request()).collect();
    let first = requests[0].0.clone();
    assert!(
        requests.iter().all(|(from, ..)| from.id == first.id),
        "every request on the one socket"
    );
    let mut tags: Vec<_> = requests.iter().map(|(from, ..)| from.tag.clone()).collect();
    tags.sort();
    tags.dedup();
    assert_eq!(
        tags.len(),
        IN_FLIGHT as usize,
        "one tag per request in flight"
    );
    requests.reverse();
    for (from, _, _, body) in &requests {
        peer.final_reply(from, "svc", &[&body[0], b"ok"]);
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = runtime.block_on(task).unwrap().expect("answered");
        assert_eq!(
            reply,
            vec![(i as u32).to_be_bytes().to_vec(), b"ok".to_vec()]
        );
    }
}

#[test]
fn a_late_reply_to_a_timed_out_attempt_does_not_answer_the_resend() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = AsyncClient::connect(&endpoint)
        .unwrap()
        .with_retry_policy(RetryPolicy::new(2, Duration::from_millis(300)));
    let task = runtime.spawn(async move { client.request("svc", frames(&[b"x"])).await });
    let (first, ..) = peer.expect_request();
    let (second, ..) = peer.expect_request();
    assert_eq!(first.id, second.id, "resent on the same socket");
    assert_ne!(first.tag, second.tag, "under a new tag");
    peer.final_reply(&first, "svc", &[b"late"]);
    peer.final_reply(&second, "svc", &[b"fresh"]);
    let reply = runtime.block_on(task).unwrap();
    assert_eq!(reply.unwrap(), frames(&[b"fresh"]));
}

#[test]
fn untagged_or_malformed_replies_to_the_async_client_are_dropped() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = AsyncClient::connect(&endpoint).unwrap();
    let task = runtime.spawn(async move { client.request("svc", vec![]).await });
    let (from, ..) = peer.expect_request();
    let untagged = Address {
        id: from.id.clone(),
        tag: None,
    };
    peer.final_reply(&untagged, "svc", &[b"untagged"]);
    let unknown = Address {
        id: from.id.clone(),
        tag: Some(b"\xff\xff\xff\xff".to_vec()),
    };
    peer.final_reply(&unknown, "svc", &[b"unknown tag"]);
    peer.final_reply(&from, "svc", &[b"right"]);
    assert_eq!(
        runtime.block_on(task).unwrap().unwrap(),
        frames(&[b"right"])
    );
}
