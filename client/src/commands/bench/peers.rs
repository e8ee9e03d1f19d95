//! The far ends of a benchmark: lean MDP echo workers for the broker run, and the bare libzmq
//! ROUTER↔DEALER proxy with raw echo peers that sets the ceiling.
//!
//! Both echo ends do the least possible work (receive, send the same body back) so that the
//! comparison measures the broker against the proxy and nothing else.

use plantd_worker_sdk::curve::ClientCurve;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use plantd_worker_sdk::protocol::{self, Dialect, Direction, Frame, Message, WorkerCommand};

/// Threads that stop when the set is dropped.
pub struct PeerSet {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    control: Option<zmq::Socket>,
}

impl Drop for PeerSet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(control) = &self.control {
            let _ = control.send("TERMINATE", 0);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

const POLL_MS: i64 = 100;

/// How many MDP echo workers to run and how much each may hold.
#[derive(Clone, Copy, Debug)]
pub struct EchoWorkers {
    /// Threads, each serving `sessions` sessions.
    pub threads: usize,
    /// MDP worker sessions (one DEALER socket each) per thread.
    pub sessions: usize,
    /// Requests each session may hold (plantd's credit extension; 1 is plain MDP).
    pub credit: u32,
}

/// Starts echo threads serving MDP worker sessions for `service`. Plain MDP gives a session one
/// request at a time, so it takes many sessions (the SDK's `concurrency`) or credit (the SDK's
/// `credit`) to let pipelined traffic through.
pub fn mdp_echo_workers(
    ctx: &zmq::Context,
    endpoint: &str,
    service: &str,
    dialect: Dialect,
    shape: EchoWorkers,
    heartbeat: Duration,
    curve: Option<&ClientCurve>,
) -> zmq::Result<PeerSet> {
    let EchoWorkers {
        threads,
        sessions,
        credit,
    } = shape;
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let mut sockets = Vec::with_capacity(sessions);
        for _ in 0..sessions.max(1) {
            let socket = ctx.socket(zmq::DEALER)?;
            socket.set_linger(0)?;
            socket.set_sndhwm(0)?;
            socket.set_rcvhwm(0)?;
            plantd_worker_sdk::curve::apply_client(curve, &socket)?;
            socket.connect(endpoint)?;
            send(
                &socket,
                dialect,
                WorkerCommand::Ready {
                    service: Frame::from(service),
                    credit,
                },
            )?;
            sockets.push(socket);
        }
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            echo_worker_loop(&sockets, dialect, heartbeat, &stop)
        }));
    }
    Ok(PeerSet {
        stop,
        threads: handles,
        control: None,
    })
}

/// SDK echo workers (`plantd_worker_sdk::Worker`, what services built on the SDK get), stopped
/// on drop.
pub struct SdkEchoWorkers {
    shutdown: plantd_worker_sdk::Shutdown,
    runtime: tokio::runtime::Runtime,
    task: Option<tokio::task::JoinHandle<Result<(), plantd_worker_sdk::worker::WorkerError>>>,
}

impl Drop for SdkEchoWorkers {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
        }
    }
}

/// Starts one SDK worker for `service` with `threads × sessions` sessions of `credit` each.
pub fn sdk_echo_workers(
    endpoint: &str,
    service: &str,
    dialect: Dialect,
    shape: EchoWorkers,
    heartbeat: Duration,
    curve: Option<ClientCurve>,
    inline: bool,
) -> anyhow::Result<SdkEchoWorkers> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let builder = plantd_worker_sdk::Worker::builder(service)
        .endpoint(endpoint)
        .dialect(dialect)
        .heartbeat(heartbeat)
        .concurrency((shape.threads * shape.sessions).max(1))
        .credit(shape.credit)
        .curve(curve);
    let worker = if inline {
        builder.inline_handler(Ok)
    } else {
        builder.handler(Ok)
    }
    .build()?;
    let shutdown = plantd_worker_sdk::Shutdown::new();
    let task = Some(runtime.spawn(worker.run(shutdown.clone())));
    Ok(SdkEchoWorkers {
        shutdown,
        runtime,
        task,
    })
}

fn send(socket: &zmq::Socket, dialect: Dialect, cmd: WorkerCommand) -> zmq::Result<()> {
    let mut out = Vec::with_capacity(6);
    // Worker commands used here exist in every dialect.
    let _ = protocol::encode(dialect, Direction::ToBroker, Message::Worker(cmd), &mut out);
    protocol::send_frames(socket, out, 0)
}

fn echo_worker_loop(
    sockets: &[zmq::Socket],
    dialect: Dialect,
    heartbeat: Duration,
    stop: &AtomicBool,
) {
    let mut last_heartbeat = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Heartbeat every session on schedule, busy or not (the broker expects one per interval).
        if last_heartbeat.elapsed() >= heartbeat {
            for socket in sockets {
                let _ = send(socket, dialect, WorkerCommand::Heartbeat);
            }
            last_heartbeat = Instant::now();
        }
        let mut items: Vec<zmq::PollItem> = sockets
            .iter()
            .map(|s| s.as_poll_item(zmq::POLLIN))
            .collect();
        if !matches!(zmq::poll(&mut items, POLL_MS), Ok(n) if n > 0) {
            continue;
        }
        let ready: Vec<bool> = items.iter().map(|item| item.is_readable()).collect();
        drop(items);
        for (socket, _) in sockets.iter().zip(ready).filter(|(_, r)| *r) {
            while let Ok(frames) = protocol::recv_frames(socket, zmq::DONTWAIT) {
                if let Ok((_, Message::Worker(WorkerCommand::Request { client, body }))) =
                    protocol::decode(Direction::FromBroker, frames)
                {
                    let _ = send(socket, dialect, WorkerCommand::Final { client, body });
                }
            }
        }
    }
    for socket in sockets {
        let _ = send(socket, dialect, WorkerCommand::Disconnect);
    }
}

/// Starts the ceiling: a libzmq proxy (ROUTER frontend on `frontend`, DEALER backend on
/// `backend`, both TCP like the broker's two legs, in a context of its own like the broker) and
/// `count` raw echo peers behind it, on `ctx` like the broker run's echo workers.
pub fn ceiling_proxy(
    ctx: &zmq::Context,
    frontend: &str,
    backend: &str,
    count: usize,
) -> zmq::Result<PeerSet> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let backend_ep = backend.to_owned();
    let control_ep = format!(
        "inproc://bench-ceiling-control-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    // The proxy gets a libzmq context of its own, as the broker has (its own process, or its own
    // context in-process): sharing the bench's I/O thread would let the ceiling skip the
    // cross-thread hand-offs every real broker pays on each hop.
    let proxy_ctx = zmq::Context::new();
    let front = proxy_ctx.socket(zmq::ROUTER)?;
    let back = proxy_ctx.socket(zmq::DEALER)?;
    for s in [&front, &back] {
        s.set_linger(0)?;
        s.set_sndhwm(0)?;
        s.set_rcvhwm(0)?;
    }
    front.bind(frontend)?;
    back.bind(&backend_ep)?;
    let control_rx = proxy_ctx.socket(zmq::PAIR)?;
    control_rx.bind(&control_ep)?;
    let control = proxy_ctx.socket(zmq::PAIR)?;
    control.connect(&control_ep)?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = vec![std::thread::spawn(move || {
        let (mut front, mut back, mut control_rx) = (front, back, control_rx);
        let _ = zmq::proxy_steerable(&mut front, &mut back, &mut control_rx);
    })];
    for _ in 0..count {
        let peer = ctx.socket(zmq::ROUTER)?;
        peer.set_linger(0)?;
        peer.set_sndhwm(0)?;
        peer.set_rcvhwm(0)?;
        peer.connect(&backend_ep)?;
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if !matches!(peer.poll(zmq::POLLIN, POLL_MS), Ok(n) if n > 0) {
                    continue;
                }
                while let Ok(frames) = protocol::recv_frames(&peer, zmq::DONTWAIT) {
                    let _ = protocol::send_frames(&peer, frames, 0);
                }
            }
        }));
    }
    Ok(PeerSet {
        stop,
        threads,
        control: Some(control),
    })
}

/// Hands out sockets from as many libzmq contexts as needed: one context holds at most 1,023
/// sockets by default, and the `zmq` crate cannot raise that limit.
#[derive(Default)]
pub struct ContextPool {
    contexts: Vec<zmq::Context>,
    in_last: usize,
}

impl ContextPool {
    const SOCKETS_PER_CONTEXT: usize = 500;

    /// A new socket of `kind` in a context with room for it.
    pub fn socket(&mut self, kind: zmq::SocketType) -> zmq::Result<zmq::Socket> {
        if self.contexts.is_empty() || self.in_last == Self::SOCKETS_PER_CONTEXT {
            self.contexts.push(zmq::Context::new());
            self.in_last = 0;
        }
        self.in_last += 1;
        let context = self.contexts.last().expect("pushed above");
        context.socket(kind)
    }
}
