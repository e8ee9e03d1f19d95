//! Test harness: a real broker on free loopback ports, and raw MDP peers (DEALER sockets speaking
//! through the SDK codec) in any dialect.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use plantd_broker::{BrokerConfig, BrokerError};
use plantd_worker_sdk::protocol::{
    self, ClientCommand, Dialect, Direction, Frame, Message, WorkerCommand,
};
use plantd_worker_sdk::testing::free_port;
use plantd_worker_sdk::Shutdown;

/// Generous: tests must pass on a loaded 2-core machine, but never wait this long on success.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub const ALL_DIALECTS: [Dialect; 3] = [Dialect::V01, Dialect::V02, Dialect::Go];

pub use plantd_worker_sdk::testing::wait_until;

/// A broker running on its own thread and tokio runtime.
pub struct TestBroker {
    pub endpoint: String,
    pub health_port: u16,
    pub shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), BrokerError>>>,
}

/// Test defaults: fast heartbeats with a tolerant liveness, no buses (their ports are fixed).
pub fn test_config() -> BrokerConfig {
    let mut config = BrokerConfig {
        health_host: "127.0.0.1".into(),
        heartbeat_interval_ms: 100,
        heartbeat_liveness: 30,
        queue_ttl_ms: 10_000,
        // Several brokers run side by side in tests: no buses on the fixed default ports.
        bus: plantd_broker::bus::BusSettings::disabled(),
        ..BrokerConfig::default()
    };
    config.bus.enabled = false;
    config
}

impl TestBroker {
    /// Starts a broker with [`test_config`] adjusted by `tweak`, and waits until `/healthz` is UP.
    pub fn start(tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let mut config = test_config();
        tweak(&mut config);
        TestBroker::start_with(config)
    }

    /// Starts a broker with exactly `config` (endpoint and health port are replaced by free ones).
    pub fn start_with(mut config: BrokerConfig) -> TestBroker {
        config.endpoint = format!("tcp://127.0.0.1:{}", free_port());
        config.health_port = free_port();
        let shutdown = Shutdown::new();
        let token = shutdown.clone();
        let run_config = config.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(plantd_broker::run(run_config, token))
        });
        let broker = TestBroker {
            endpoint: config.endpoint,
            health_port: config.health_port,
            shutdown,
            thread: Some(thread),
        };
        let url = broker.url("/healthz");
        let mut broker = broker;
        wait_until("the broker's /healthz is UP", || {
            if broker.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = broker.thread.take().map(|t| t.join());
                panic!("broker exited during startup: {result:?}");
            }
            reqwest::blocking::get(&url).is_ok_and(|r| r.status() == 200)
        });
        broker
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.health_port)
    }

    /// Cancels the broker and returns `run`'s result and how long it took to return.
    pub fn stop(&mut self) -> (Result<(), BrokerError>, Duration) {
        let started = Instant::now();
        self.shutdown.cancel();
        let thread = self.thread.take().expect("broker already stopped");
        while !thread.is_finished() {
            assert!(started.elapsed() < DEADLINE, "broker did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        let elapsed = started.elapsed();
        (thread.join().expect("broker thread panicked"), elapsed)
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        reqwest::blocking::get(self.url("/metrics"))
            .and_then(|r| r.text())
            .expect("GET /metrics")
    }

    /// The value of one metric line (`name{labels}` exactly as rendered), or 0.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// One raw MDP peer: a DEALER socket speaking `dialect` through the SDK codec.
pub struct Peer {
    pub socket: zmq::Socket,
    pub dialect: Dialect,
}

/// A reply as a client sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Partial(Vec<Vec<u8>>),
    Final(Vec<Vec<u8>>),
}

impl Peer {
    pub fn connect(context: &zmq::Context, endpoint: &str, dialect: Dialect) -> Peer {
        let socket = context.socket(zmq::DEALER).expect("dealer");
        socket.set_linger(0).expect("linger");
        socket.connect(endpoint).expect("connect");
        Peer { socket, dialect }
    }

    pub fn send(&self, message: Message) {
        let mut frames = Vec::new();
        protocol::encode(self.dialect, Direction::ToBroker, message, &mut frames)
            .expect("encodable");
        protocol::send_frames(&self.socket, frames, 0).expect("send");
    }

    pub fn send_raw(&self, frames: Vec<Vec<u8>>) {
        let frames = frames.into_iter().map(Frame::from).collect();
        protocol::send_frames(&self.socket, frames, 0).expect("send raw");
    }

    /// The next message, decoded, within `timeout`.
    pub fn recv_within(&self, timeout: Duration) -> Option<Message> {
        let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, timeout.as_millis() as i64).expect("poll");
        if !items[0].is_readable() {
            return None;
        }
        let frames = protocol::recv_frames(&self.socket, 0).expect("recv");
        let (dialect, message) =
            protocol::decode(Direction::FromBroker, frames).expect("broker sent valid MDP");
        assert_eq!(dialect, self.dialect, "broker answered in another dialect");
        Some(message)
    }

    pub fn recv(&self) -> Message {
        self.recv_within(DEADLINE)
            .expect("timed out waiting for a message from the broker")
    }

    // ---- as a client --------------------------------------------------------------------------

    pub fn request(&self, service: &str, body: &[&[u8]]) {
        self.send(Message::Client(ClientCommand::Request {
            service: Frame::from(service),
            body: body.iter().map(|b| Frame::from(*b)).collect(),
        }));
    }

    /// The next PARTIAL or FINAL, checking its service frame.
    pub fn reply(&self, service: &str) -> Reply {
        match self.recv() {
            Message::Client(ClientCommand::Partial { service: s, body }) => {
                assert_eq!(&s[..], service.as_bytes());
                Reply::Partial(protocol::to_vecs(&body))
            }
            Message::Client(ClientCommand::Final { service: s, body }) => {
                assert_eq!(&s[..], service.as_bytes());
                Reply::Final(protocol::to_vecs(&body))
            }
            other => panic!("expected a client reply, got {other:?}"),
        }
    }

    /// The body of the next FINAL (no PARTIAL expected).
    pub fn final_body(&self, service: &str) -> Vec<Vec<u8>> {
        match self.reply(service) {
            Reply::Final(body) => body,
            other => panic!("expected FINAL, got {other:?}"),
        }
    }

    /// Request, then the FINAL body.
    pub fn call(&self, service: &str, body: &[&[u8]]) -> Vec<Vec<u8>> {
        self.request(service, body);
        self.final_body(service)
    }

    // ---- as a worker --------------------------------------------------------------------------

    pub fn ready(&self, service: &str) {
        self.ready_with_credit(service, 1);
    }

    /// READY announcing `credit` (plantd's credit extension).
    pub fn ready_with_credit(&self, service: &str, credit: u32) {
        self.send(Message::Worker(WorkerCommand::Ready {
            service: Frame::from(service),
            credit,
        }));
    }

    pub fn heartbeat(&self) {
        self.send(Message::Worker(WorkerCommand::Heartbeat));
    }

    pub fn final_reply(&self, client: &[u8], body: Vec<Vec<u8>>) {
        self.send(Message::Worker(WorkerCommand::Final {
            client: Frame::from(client),
            body: body.into_iter().map(Frame::from).collect(),
        }));
    }

    pub fn partial_reply(&self, client: &[u8], body: Vec<Vec<u8>>) {
        self.send(Message::Worker(WorkerCommand::Partial {
            client: Frame::from(client),
            body: body.into_iter().map(Frame::from).collect(),
        }));
    }

    /// Waits for a REQUEST (skipping heartbeats) and returns `(client, body)`.
    pub fn next_request(&self) -> (Vec<u8>, Vec<Vec<u8>>) {
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            match self.recv_within(Duration::from_millis(50)) {
                Some(Message::Worker(WorkerCommand::Request { client, body })) => {
                    return (client.to_vec(), protocol::to_vecs(&body))
                }
                Some(Message::Worker(WorkerCommand::Heartbeat)) | None => {}
                Some(other) => panic!("worker expected REQUEST, got {other:?}"),
            }
        }
        panic!("no REQUEST arrived");
    }

    /// Waits for DISCONNECT (skipping heartbeats).
    pub fn expect_disconnect(&self) {
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            match self.recv_within(Duration::from_millis(50)) {
                Some(Message::Worker(WorkerCommand::Disconnect)) => return,
                Some(Message::Worker(WorkerCommand::Heartbeat)) | None => {}
                Some(other) => panic!("expected DISCONNECT, got {other:?}"),
            }
        }
        panic!("no DISCONNECT arrived");
    }
}

/// What a background worker does with each request.
pub type Behaviour = Arc<dyn Fn(&Peer, &[u8], Vec<Vec<u8>>) + Send + Sync>;

/// Replies with the request body, prefixed by `tag`.
pub fn tagged_echo(tag: &'static str) -> Behaviour {
    Arc::new(move |peer: &Peer, client: &[u8], body: Vec<Vec<u8>>| {
        let mut reply = vec![tag.as_bytes().to_vec()];
        reply.extend(body);
        peer.final_reply(client, reply);
    })
}

/// Replies with the request body unchanged.
pub fn echo() -> Behaviour {
    Arc::new(|peer: &Peer, client: &[u8], body: Vec<Vec<u8>>| peer.final_reply(client, body))
}

/// A worker on its own thread that heartbeats on schedule and handles requests with a
/// [`Behaviour`] until stopped.
pub struct BackgroundWorker {
    stop: Arc<AtomicBool>,
    handled: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundWorker {
    pub fn start(
        context: &zmq::Context,
        endpoint: &str,
        dialect: Dialect,
        service: &str,
        behaviour: Behaviour,
    ) -> BackgroundWorker {
        let peer = Peer::connect(context, endpoint, dialect);
        peer.ready(service);
        let stop = Arc::new(AtomicBool::new(false));
        let handled = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, handled2, seen2) = (stop.clone(), handled.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut next_heartbeat = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                if Instant::now() >= next_heartbeat {
                    peer.heartbeat();
                    next_heartbeat = Instant::now() + Duration::from_millis(50);
                }
                match peer.recv_within(Duration::from_millis(20)) {
                    Some(Message::Worker(WorkerCommand::Request { client, body })) => {
                        // Counted before replying, so a client holding the reply sees the count.
                        handled2.fetch_add(1, Ordering::Relaxed);
                        behaviour(&peer, &client, protocol::to_vecs(&body));
                    }
                    Some(other) => seen2
                        .lock()
                        .unwrap()
                        .push(format!("{other:?}").chars().take(40).collect()),
                    None => {}
                }
            }
            peer.send(Message::Worker(WorkerCommand::Disconnect));
        });
        BackgroundWorker {
            stop,
            handled,
            seen,
            thread: Some(thread),
        }
    }

    pub fn handled(&self) -> usize {
        self.handled.load(Ordering::Relaxed)
    }

    /// True if the broker sent this worker a DISCONNECT.
    pub fn was_disconnected(&self) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.starts_with("Worker(Disconnect"))
    }
}

impl Drop for BackgroundWorker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An MMI query from a fresh MDP/0.2 client: the reply body as strings.
pub fn mmi(context: &zmq::Context, endpoint: &str, query: &str, args: &[&str]) -> Vec<String> {
    let client = Peer::connect(context, endpoint, Dialect::V02);
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    client
        .call(query, &args)
        .into_iter()
        .map(|f| String::from_utf8(f).expect("MMI replies are text"))
        .collect()
}

/// Number of workers the broker has registered for `service`.
pub fn worker_count(context: &zmq::Context, endpoint: &str, service: &str) -> usize {
    let reply = mmi(context, endpoint, "mmi.workers", &[service]);
    match reply.as_slice() {
        [code, json] if code == "200" => serde_json::from_str::<Vec<serde_json::Value>>(json)
            .expect("mmi.workers json")
            .len(),
        _ => 0,
    }
}

/// Waits until `service` has exactly `n` registered workers.
pub fn wait_for_workers(context: &zmq::Context, endpoint: &str, service: &str, n: usize) {
    wait_until(&format!("{service} has {n} workers"), || {
        worker_count(context, endpoint, service) == n
    });
}

/// Asserts that `body` is a plantd error reply with `code`, and returns its message.
pub fn expect_error(body: &[Vec<u8>], code: &str) -> String {
    assert!(body.len() >= 2, "not an error reply: {body:?}");
    assert_eq!(body[0], b"plantd.error", "not an error reply: {body:?}");
    assert_eq!(String::from_utf8_lossy(&body[1]), code, "{body:?}");
    body.get(2)
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default()
}
