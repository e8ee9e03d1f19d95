//! The load generator shared by every `plant bench` mode: N client sockets, each keeping a window
//! of pipelined requests in flight, verifying every reply and recording latency in an HDR histogram.
//!
//! What goes on the wire is decided by a [`Transport`]: MDP through the broker, or bare frames
//! through the libzmq proxy ceiling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use plantd_worker_sdk::protocol::{self, ClientCommand, Dialect, Direction, Frame, Message};
use serde::Serialize;

/// How requests are framed and replies recognised.
#[derive(Clone)]
pub enum Transport {
    /// MDP client requests for `service` in `dialect`.
    Mdp { service: String, dialect: Dialect },
    /// Bare `[payload]` frames (the ROUTER↔DEALER proxy ceiling).
    Raw,
    /// Through the same proxy, messages framed like MDP client requests for `service` (header,
    /// command, service, payload) and echoed whole: the ceiling for traffic with MDP's frame count.
    RawMdpShaped { service: String },
}

impl Transport {
    fn request(&self, payload: &[u8]) -> Vec<Frame> {
        match self {
            Transport::Raw => vec![Frame::from(payload)],
            Transport::RawMdpShaped { service } => mdp_request(service, Dialect::V02, payload),
            Transport::Mdp { service, dialect } => mdp_request(service, *dialect, payload),
        }
    }

    /// The reply payload, or why the reply is not a correct echo.
    fn reply(&self, frames: Vec<Frame>) -> Result<Option<Frame>, String> {
        match self {
            Transport::Raw | Transport::RawMdpShaped { .. } => frames
                .into_iter()
                .last()
                .map(Some)
                .ok_or_else(|| "empty reply".into()),
            Transport::Mdp { .. } => match protocol::decode(Direction::FromBroker, frames) {
                Ok((_, Message::Client(ClientCommand::Final { body, .. }))) => {
                    if let Some(e) = protocol::ErrorReply::parse(&body) {
                        return Err(format!("error reply {}: {}", e.code, e.message));
                    }
                    body.into_iter()
                        .next()
                        .map(Some)
                        .ok_or_else(|| "empty reply body".into())
                }
                Ok((_, Message::Client(ClientCommand::Partial { .. }))) => Ok(None),
                Ok(_) => Err("unexpected command".into()),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// The frames of an MDP client REQUEST carrying `payload`.
fn mdp_request(service: &str, dialect: Dialect, payload: &[u8]) -> Vec<Frame> {
    let mut out = Vec::with_capacity(5);
    let msg = Message::Client(ClientCommand::Request {
        service: Frame::from(service),
        body: vec![Frame::from(payload)],
    });
    // Encoding a REQUEST cannot fail in any dialect.
    let _ = protocol::encode(dialect, Direction::ToBroker, msg, &mut out);
    out
}

/// One load run's shape.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Endpoint the clients connect to; several separated by commas spread the clients over
    /// them (client `id` uses number `id % n`).
    pub endpoint: String,
    /// Parallel client sockets (one thread each).
    pub clients: usize,
    /// Requests in flight per client.
    pub window: usize,
    /// Body bytes per request.
    pub size: usize,
    /// Total requests across clients (ignored when `duration` is set).
    pub requests: u64,
    /// Run for this long instead of a fixed count.
    pub duration: Option<Duration>,
    /// Give up on a reply after this long.
    pub reply_timeout: Duration,
    /// The clients' CURVE keys, for a CURVE broker.
    pub curve: Option<plantd_worker_sdk::curve::ClientCurve>,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Replies verified.
    pub completed: u64,
    /// Wrong, error or missing replies.
    pub errors: u64,
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// Verified replies per second.
    pub requests_per_sec: f64,
    /// Latency percentiles in microseconds.
    pub latency_us: Percentiles,
    /// First error seen, if any.
    pub first_error: Option<String>,
}

/// Latency summary in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest.
    pub max: u64,
}

/// What one client of a run measured; merged into the [`LoadReport`].
pub(super) struct ClientOutcome {
    pub(super) completed: u64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) histogram: Histogram<u64>,
}

impl ClientOutcome {
    pub(super) fn new() -> Self {
        ClientOutcome {
            completed: 0,
            errors: 0,
            first_error: None,
            histogram: Histogram::<u64>::new(3).expect("histogram"),
        }
    }

    /// Counts a verified reply to a request sent at `sent`, and reports it to `progress`.
    pub(super) fn record(&mut self, sent: Instant, progress: &AtomicU64) {
        let _ = self.histogram.record(sent.elapsed().as_micros() as u64);
        self.completed += 1;
        progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed or wrong reply, keeping the first reason.
    pub(super) fn fail(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }

    /// Waits up to `timeout` for a reply on `socket`. If none comes, the `in_flight` requests
    /// are counted as timed out and it returns false: the client should stop.
    pub(super) fn await_reply(
        &mut self,
        socket: &zmq::Socket,
        timeout: Duration,
        in_flight: usize,
    ) -> bool {
        match socket.poll(zmq::POLLIN, timeout.as_millis() as i64) {
            Ok(n) if n > 0 => true,
            _ => {
                self.errors += in_flight as u64;
                self.first_error
                    .get_or_insert_with(|| format!("{in_flight} replies timed out"));
                false
            }
        }
    }

    /// Adds another outcome of the same client (one of its threads).
    pub(super) fn merge(&mut self, other: ClientOutcome) {
        self.completed += other.completed;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        let _ = self.histogram.add(&other.histogram);
    }
}

/// Runs the load and returns the merged report. `progress` counts completed replies as they come.
pub fn run_load(
    ctx: &zmq::Context,
    transport: &Transport,
    spec: &LoadSpec,
    progress: Arc<AtomicU64>,
) -> LoadReport {
    run_clients(spec, |id, total, deadline| {
        run_client(ctx, transport, spec, id, total, deadline, &progress)
    })
}

/// Runs `spec.clients` clients on threads of their own and merges what they measured. Each call
/// of `client` gets its id, its share of the requests and the run's deadline, if any.
pub(super) fn run_clients(
    spec: &LoadSpec,
    client: impl Fn(u64, u64, Option<Instant>) -> ClientOutcome + Sync,
) -> LoadReport {
    let per_client = spec.requests / spec.clients as u64;
    let deadline = spec.duration.map(|d| Instant::now() + d);
    let started = Instant::now();
    let client = &client;
    let outcomes: Vec<ClientOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.clients)
            .map(|id| scope.spawn(move || client(id as u64, per_client, deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench client thread panicked"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut merged = ClientOutcome::new();
    for o in outcomes {
        merged.merge(o);
    }
    let histogram = merged.histogram;
    LoadReport {
        completed: merged.completed,
        errors: merged.errors,
        seconds,
        requests_per_sec: merged.completed as f64 / seconds.max(1e-9),
        latency_us: Percentiles {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            max: histogram.max(),
        },
        first_error: merged.first_error,
    }
}

/// The payload of request `seq` from client `id`: the two numbers, then a repeating pattern.
pub(super) fn payload(id: u64, seq: u64, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(16));
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend((16..size).map(|i| (i as u8).wrapping_mul(31)));
    p.truncate(size.max(16));
    p
}

/// A load client's DEALER: no linger and no high-water mark, since the client bounds what it has
/// in flight itself (its window).
pub(super) fn bench_dealer(ctx: &zmq::Context) -> zmq::Result<zmq::Socket> {
    let socket = ctx.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.set_sndhwm(0)?;
    socket.set_rcvhwm(0)?;
    Ok(socket)
}

fn run_client(
    ctx: &zmq::Context,
    transport: &Transport,
    spec: &LoadSpec,
    id: u64,
    total: u64,
    deadline: Option<Instant>,
    progress: &AtomicU64,
) -> ClientOutcome {
    let mut outcome = ClientOutcome::new();
    let socket = match bench_dealer(ctx).and_then(|s| {
        plantd_worker_sdk::curve::apply_client(spec.curve.as_ref(), &s)?;
        let endpoints: Vec<&str> = spec.endpoint.split(',').collect();
        s.connect(endpoints[id as usize % endpoints.len()])?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            outcome.fail(format!("socket: {e}"));
            return outcome;
        }
    };
    let more = |sent: u64| match deadline {
        Some(d) => Instant::now() < d,
        None => sent < total,
    };
    let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(spec.window * 2);
    let mut next_seq = 0u64;
    loop {
        while in_flight.len() < spec.window && more(next_seq) {
            let frames = transport.request(&payload(id, next_seq, spec.size));
            if let Err(e) = protocol::send_frames(&socket, frames, 0) {
                outcome.fail(format!("send: {e}"));
                return outcome;
            }
            in_flight.insert(next_seq, Instant::now());
            next_seq += 1;
        }
        if in_flight.is_empty() {
            return outcome;
        }
        if !outcome.await_reply(&socket, spec.reply_timeout, in_flight.len()) {
            return outcome;
        }
        // Drain everything that is ready before refilling the window.
        while let Ok(frames) = protocol::recv_frames(&socket, zmq::DONTWAIT) {
            match transport.reply(frames) {
                Ok(None) => {}
                Ok(Some(body)) => {
                    let seq = body
                        .get(8..16)
                        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
                    let sent = seq.and_then(|s| in_flight.remove(&s));
                    match sent {
                        Some(at) if *body == *payload(id, seq.unwrap_or_default(), spec.size) => {
                            outcome.record(at, progress);
                        }
                        _ => outcome.fail("reply does not match any request".into()),
                    }
                }
                Err(e) => outcome.fail(e),
            }
        }
    }
}
