//! Worker wire behaviour against a bare ROUTER peer speaking the frames by hand: READY, replies,
//! heartbeats while busy, error replies, reconnects, DISCONNECT on shutdown. (Behaviour through
//! the real broker is covered by the workspace integration tests.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::health::Health;
use crate::protocol::{self, decode_routed, encode, Direction, Frame, Message, WorkerCommand};
use crate::testing::{free_endpoint, wait_until};

const DEADLINE: Duration = Duration::from_secs(15);

/// A ROUTER standing where a broker would, driven step by step by the test.
struct Peer {
    socket: zmq::Socket,
    _context: zmq::Context,
}

impl Peer {
    fn bind(endpoint: &str) -> Peer {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::ROUTER).unwrap();
        socket.set_linger(0).unwrap();
        socket.bind(endpoint).unwrap();
        Peer {
            socket,
            _context: context,
        }
    }

    /// The next valid worker message, or `None` after `timeout`.
    fn recv(&self, timeout: Duration) -> Option<(Vec<u8>, Dialect, WorkerCommand)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if self
                .socket
                .poll(zmq::POLLIN, left.as_millis() as i64)
                .unwrap()
                == 0
            {
                return None;
            }
            let frames = protocol::recv_frames(&self.socket, 0).unwrap();
            if let Ok((id, dialect, Message::Worker(cmd))) = decode_routed(frames) {
                return Some((id.to_vec(), dialect, cmd));
            }
        }
    }

    /// Skips heartbeats (answering them, so the worker keeps us alive) until another command.
    fn recv_command(&self) -> (Vec<u8>, WorkerCommand) {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(100)) {
                Some((id, _, WorkerCommand::Heartbeat)) => {
                    self.send(&id, Dialect::V02, WorkerCommand::Heartbeat)
                }
                Some((id, _, cmd)) => return (id, cmd),
                None => {}
            }
        }
        panic!("no worker command within {DEADLINE:?}");
    }

    fn send(&self, id: &[u8], dialect: Dialect, cmd: WorkerCommand) {
        let mut frames = vec![Frame::from(id)];
        encode(
            dialect,
            Direction::FromBroker,
            Message::Worker(cmd),
            &mut frames,
        )
        .unwrap();
        protocol::send_frames(&self.socket, frames, 0).unwrap();
    }

    fn request(&self, id: &[u8], client: &[u8], body: &[&[u8]]) {
        self.send(
            id,
            Dialect::V02,
            WorkerCommand::Request {
                client: Frame::from(client),
                body: protocol::frames_of(body),
            },
        );
    }

    /// Waits for READY and returns the worker's routing id.
    fn expect_ready(&self, service: &str) -> Vec<u8> {
        match self.recv_command() {
            (id, WorkerCommand::Ready { service: s, .. }) => {
                assert_eq!(&*s, service.as_bytes());
                id
            }
            (_, other) => panic!("expected READY, got {other:?}"),
        }
    }

    /// Waits for the FINAL to `client` and returns its body.
    fn expect_final(&self, client: &[u8]) -> Vec<Vec<u8>> {
        match self.recv_command() {
            (_, WorkerCommand::Final { client: c, body }) => {
                assert_eq!(&*c, client);
                protocol::to_vecs(&body)
            }
            (_, other) => panic!("expected FINAL, got {other:?}"),
        }
    }
}

/// Runs the worker on a runtime of its own; the test thread plays the broker.
struct Running {
    runtime: tokio::runtime::Runtime,
    task: tokio::task::JoinHandle<Result<(), WorkerError>>,
    shutdown: Shutdown,
}

fn start(worker: Worker) -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let task = runtime.spawn(worker.run(shutdown.clone()));
    Running {
        runtime,
        task,
        shutdown,
    }
}

impl Running {
    fn stop(self) -> Result<(), WorkerError> {
        self.shutdown.cancel();
        self.runtime
            .block_on(async { tokio::time::timeout(DEADLINE, self.task).await })
            .expect("worker did not stop in time")
            .expect("worker task panicked")
    }
}

fn builder(endpoint: &str) -> WorkerBuilder {
    Worker::builder("test.Service")
        .endpoint(endpoint)
        .heartbeat(Duration::from_millis(50))
        .liveness(20)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
}

fn bytes(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

#[test]
fn registers_replies_and_disconnects_on_shutdown() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let running = start(builder(&endpoint).handler(Ok).build().unwrap());

    let id = peer.expect_ready("test.Service");
    peer.request(&id, b"client-1", &[b"a", b"", b"\x00\xff"]);
    assert_eq!(
        peer.expect_final(b"client-1"),
        bytes(&[b"a", b"", b"\x00\xff"])
    );

    running.shutdown.cancel();
    match peer.recv_command() {
        (from, WorkerCommand::Disconnect) => assert_eq!(from, id),
        (_, other) => panic!("expected DISCONNECT, got {other:?}"),
    }
    running.stop().unwrap();
}

#[test]
fn a_client_aware_handler_is_told_which_client_asked() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let worker = builder(&endpoint)
        .handler_with_client(|client: &[u8], mut body: Frames| {
            body.insert(0, client.to_vec());
            Ok(body)
        })
        .build()
        .unwrap();
    let running = start(worker);

    let id = peer.expect_ready("test.Service");
    peer.request(&id, b"client-a", &[b"x"]);
    assert_eq!(peer.expect_final(b"client-a"), bytes(&[b"client-a", b"x"]));
    peer.request(&id, b"client-b", &[b"y"]);
    assert_eq!(peer.expect_final(b"client-b"), bytes(&[b"client-b", b"y"]));
    running.stop().unwrap();
}

#[test]
fn heartbeats_keep_flowing_while_the_handler_is_busy() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let release = Arc::new(AtomicBool::new(false));
    let handler_release = release.clone();
    let worker = builder(&endpoint)
        .handler(move |body| {
            let deadline = Instant::now() + DEADLINE;
            while !handler_release.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(body)
        })
        .build()
        .unwrap();
    let running = start(worker);

    let id = peer.expect_ready("test.Service");
    peer.request(&id, b"c", &[b"slow"]);
    let mut heartbeats = 0;
    let deadline = Instant::now() + DEADLINE;
    while heartbeats < 5 && Instant::now() < deadline {
        match peer.recv(Duration::from_millis(100)) {
            Some((_, _, WorkerCommand::Heartbeat)) => {
                heartbeats += 1;
                peer.send(&id, Dialect::V02, WorkerCommand::Heartbeat);
            }
            Some((_, _, other)) => panic!("unexpected {other:?} while busy"),
            None => {}
        }
    }
    assert_eq!(heartbeats, 5, "worker went quiet while its handler ran");
    release.store(true, Ordering::SeqCst);
    assert_eq!(peer.expect_final(b"c"), bytes(&[b"slow"]));
    running.stop().unwrap();
}

#[test]
fn handler_errors_and_panics_become_error_replies() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let worker = builder(&endpoint)
        .handler(|body: Frames| match body.first().map(Vec::as_slice) {
            Some(b"fail") => Err(HandlerError::new("it failed")),
            Some(b"panic") => panic!("boom"),
            Some(b"io") => Err(std::io::Error::other("disk on fire").into()),
            _ => Ok(body),
        })
        .build()
        .unwrap();
    let running = start(worker);
    let id = peer.expect_ready("test.Service");

    peer.request(&id, b"c", &[b"fail"]);
    assert_eq!(
        peer.expect_final(b"c"),
        bytes(&[b"plantd.error", b"500", b"it failed"])
    );
    peer.request(&id, b"c", &[b"panic"]);
    let body = peer.expect_final(b"c");
    assert_eq!(body[..2], bytes(&[b"plantd.error", b"500"]));
    assert!(String::from_utf8_lossy(&body[2]).contains("boom"));
    peer.request(&id, b"c", &[b"io"]);
    assert_eq!(peer.expect_final(b"c")[2], b"disk on fire".to_vec());
    peer.request(&id, b"c", &[b"fine"]);
    assert_eq!(peer.expect_final(b"c"), bytes(&[b"fine"]));
    running.stop().unwrap();
}

#[test]
fn an_inline_handler_runs_on_the_session_thread_and_answers_a_batch() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let worker = builder(&endpoint)
        .credit(50)
        .inline_handler(|body: Frames| {
            // Not handed to a handler thread: the session's thread runs it.
            let here = std::thread::current().name().unwrap_or_default().to_owned();
            if here.starts_with("plantd-handler") {
                return Err(HandlerError::new(format!("ran on {here}")));
            }
            match body.first().map(Vec::as_slice) {
                Some(b"panic") => panic!("inline boom"),
                _ => Ok(body),
            }
        })
        .build()
        .unwrap();
    let running = start(worker);
    let id = peer.expect_ready("test.Service");

    // A batch under credit: every request answered, in order, each to its own client.
    for i in 0..50u8 {
        peer.request(&id, &[b'c', i], &[&[i]]);
    }
    for i in 0..50u8 {
        assert_eq!(peer.expect_final(&[b'c', i]), vec![vec![i]]);
    }
    peer.request(&id, b"c", &[b"panic"]);
    let body = peer.expect_final(b"c");
    assert_eq!(body[..2], bytes(&[b"plantd.error", b"500"]));
    assert!(String::from_utf8_lossy(&body[2]).contains("inline boom"));
    // The session survived its handler's panic.
    peer.request(&id, b"c", &[b"fine"]);
    assert_eq!(peer.expect_final(b"c"), bytes(&[b"fine"]));
    running.stop().unwrap();
}

#[test]
fn async_handler_replies_and_survives_a_panic() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let worker = builder(&endpoint)
        .async_handler(|body: Frames| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if body.first().map(Vec::as_slice) == Some(b"panic") {
                panic!("async boom");
            }
            Ok(body)
        })
        .build()
        .unwrap();
    let running = start(worker);
    let id = peer.expect_ready("test.Service");
    peer.request(&id, b"c", &[b"panic"]);
    let body = peer.expect_final(b"c");
    assert!(String::from_utf8_lossy(&body[2]).contains("async boom"));
    peer.request(&id, b"c", &[b"x", b"y"]);
    assert_eq!(peer.expect_final(b"c"), bytes(&[b"x", b"y"]));
    running.stop().unwrap();
}

#[test]
fn streaming_handler_sends_partials_before_final() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let worker = builder(&endpoint)
        .streaming_handler(|_body, out: &Responder| {
            for i in 0..3u8 {
                out.partial(vec![vec![b'0' + i]])?;
            }
            Ok(vec![b"done".to_vec()])
        })
        .build()
        .unwrap();
    let running = start(worker);
    let id = peer.expect_ready("test.Service");
    peer.request(&id, b"c", &[b"go"]);
    for i in 0..3u8 {
        match peer.recv_command() {
            (_, WorkerCommand::Partial { client, body }) => {
                assert_eq!(&*client, b"c");
                assert_eq!(protocol::to_vecs(&body), vec![vec![b'0' + i]]);
            }
            (_, other) => panic!("expected PARTIAL, got {other:?}"),
        }
    }
    assert_eq!(peer.expect_final(b"c"), bytes(&[b"done"]));
    running.stop().unwrap();
}

#[test]
fn mdp01_worker_cannot_send_partials() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let worker = builder(&endpoint)
        .dialect(Dialect::V01)
        .streaming_handler(|_body, out: &Responder| {
            out.partial(vec![b"p".to_vec()])?;
            Ok(vec![b"unreachable".to_vec()])
        })
        .build()
        .unwrap();
    let running = start(worker);
    let (id, dialect, cmd) = peer.recv(DEADLINE).expect("READY");
    assert_eq!(dialect, Dialect::V01);
    assert!(matches!(cmd, WorkerCommand::Ready { .. }));
    peer.send(
        &id,
        Dialect::V01,
        WorkerCommand::Request {
            client: Frame::from("c"),
            body: protocol::frames_of(&["x"]),
        },
    );
    let body = peer.expect_final(b"c");
    assert_eq!(body[..2], bytes(&[b"plantd.error", b"500"]));
    assert!(String::from_utf8_lossy(&body[2]).contains("MDP/0.1"));
    running.stop().unwrap();
}

#[test]
fn registers_again_on_a_new_socket_after_disconnect_or_silence() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let health = Health::new("test");
    let check = health.check("broker_connection");
    let worker = builder(&endpoint)
        .liveness(5)
        .connection_check(check.clone())
        .handler(Ok)
        .build()
        .unwrap();
    let running = start(worker);

    // Brokers answer READY with nothing: the check is UP from READY on, not from a first
    // heartbeat (the check goes UP before READY leaves, so this is no race).
    let first = peer.expect_ready("test.Service");
    assert!(check.is_up(), "DOWN although READY arrived");

    // DISCONNECT from the broker: a new session registers at once.
    peer.send(&first, Dialect::V02, WorkerCommand::Disconnect);
    let second = peer.expect_ready("test.Service");
    assert_ne!(first, second);
    assert!(check.is_up(), "DOWN although READY arrived again");

    // Silence (no heartbeats from us) for liveness × interval: the worker gives up on this
    // socket and registers on a new one. A broker that went silent may be hung (and still accept
    // connections), so the new connection alone does not make the check UP: the broker must speak.
    let deadline = Instant::now() + DEADLINE;
    let third = loop {
        assert!(
            Instant::now() < deadline,
            "no re-registration after silence"
        );
        if let Some((id, _, WorkerCommand::Ready { .. })) = peer.recv(Duration::from_millis(100)) {
            break id;
        }
    };
    assert_ne!(second, third);
    assert!(
        !check.is_up(),
        "UP on a connection to a broker that went silent"
    );
    peer.send(&third, Dialect::V02, WorkerCommand::Heartbeat);
    wait_until("the check is UP once the broker speaks", || check.is_up());
    running.stop().unwrap();
}

#[test]
fn the_connection_check_goes_down_when_the_broker_connection_closes() {
    let endpoint = free_endpoint();
    let peer = Peer::bind(&endpoint);
    let health = Health::new("test");
    let check = health.check("broker_connection");
    // Liveness would take minutes: only the closed connection can turn the check DOWN in time.
    let worker = builder(&endpoint)
        .heartbeat(Duration::from_secs(60))
        .liveness(3)
        .connection_check(check.clone())
        .handler(Ok)
        .build()
        .unwrap();
    let running = start(worker);
    peer.expect_ready("test.Service");
    assert!(check.is_up());
    drop(peer);
    wait_until("the check is DOWN after the broker went away", || {
        !check.is_up()
    });
    running.stop().unwrap();
}

#[test]
fn nothing_precedes_ready_while_the_broker_is_not_there_yet() {
    let endpoint = free_endpoint();
    let health = Health::new("test");
    let check = health.check("broker_connection");
    let running = start(
        builder(&endpoint)
            .connection_check(check.clone())
            .handler(Ok)
            .build()
            .unwrap(),
    );
    assert!(!check.is_up(), "UP with no broker");
    // The broker comes up later: the first thing it hears is READY, not a queued heartbeat.
    let peer = Peer::bind(&endpoint);
    match peer.recv(DEADLINE) {
        Some((_, _, WorkerCommand::Ready { .. })) => {}
        other => panic!("expected READY first, got {other:?}"),
    }
    assert!(check.is_up());
    running.stop().unwrap();
}

#[test]
fn serves_every_endpoint_with_concurrency_sessions() {
    let (a, b) = (free_endpoint(), free_endpoint());
    let (peer_a, peer_b) = (Peer::bind(&a), Peer::bind(&b));
    let worker = builder(&a)
        .endpoint(&b)
        .concurrency(2)
        .handler(Ok)
        .build()
        .unwrap();
    let running = start(worker);
    for peer in [&peer_a, &peer_b] {
        let one = peer.expect_ready("test.Service");
        let two = peer.expect_ready("test.Service");
        assert_ne!(one, two);
        peer.request(&two, b"c2", &[b"2"]);
        peer.request(&one, b"c1", &[b"1"]);
        // Two sessions answer in parallel: the FINALs may come in either order.
        let mut got: Vec<(Vec<u8>, Vec<Vec<u8>>)> = (0..2)
            .map(|_| match peer.recv_command() {
                (_, WorkerCommand::Final { client, body }) => {
                    (client.to_vec(), protocol::to_vecs(&body))
                }
                (_, other) => panic!("expected FINAL, got {other:?}"),
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (b"c1".to_vec(), bytes(&[b"1"])),
                (b"c2".to_vec(), bytes(&[b"2"]))
            ]
        );
    }
    running.stop().unwrap();
}

#[test]
fn builder_rejects_bad_settings() {
    let ok = |b: WorkerBuilder| b.handler(Ok).build();
    assert!(matches!(
        ok(Worker::builder("mmi.x").endpoint("tcp://127.0.0.1:1")),
        Err(WorkerError::InvalidService(_))
    ));
    assert!(matches!(
        ok(Worker::builder("")),
        Err(WorkerError::InvalidService(_))
    ));
    assert!(matches!(
        ok(Worker::builder("s")),
        Err(WorkerError::NoEndpoint)
    ));
    assert!(matches!(
        Worker::builder("s").endpoint("tcp://127.0.0.1:1").build(),
        Err(WorkerError::NoHandler)
    ));
    assert!(matches!(
        ok(Worker::builder("s")
            .endpoint("tcp://127.0.0.1:1")
            .concurrency(0)),
        Err(WorkerError::InvalidSetting(_))
    ));
    let worker = ok(Worker::builder("s").endpoint("nonsense://x")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(worker.run(Shutdown::new()));
    assert!(matches!(result, Err(WorkerError::InvalidEndpoint { .. })));
}

#[test]
fn handler_error_converts_from_std_errors() {
    fn parse(body: &[u8]) -> Result<u32, HandlerError> {
        Ok(std::str::from_utf8(body)?.parse::<u32>()?)
    }
    assert_eq!(parse(b"42").unwrap(), 42);
    assert!(parse(b"x").unwrap_err().message().contains("invalid digit"));
}
