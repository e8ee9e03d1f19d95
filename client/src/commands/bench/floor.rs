//! `plant bench floor`: what libzmq itself costs per message on this machine, against a bare TCP
//! echo, in one interleaved run (issue 16, target 0: "if a libzmq-imposed floor stops you, show it
//! with numbers").
//!
//! This module owns the three echo systems it alternates and their clients:
//!
//! - **TCP**: a std `TcpListener` on a free loopback port, one echo thread per connection reading
//!   length-prefixed messages (4-byte big-endian length, then the body) and writing them back,
//!   flushing only when no more input is buffered, so a pipelined batch goes back in few writes.
//!   Clients are threads with a connection each (`TCP_NODELAY`, as libzmq sets it) that write up
//!   to `--window` requests, flush once, and read the replies.
//! - **libzmq**: a ROUTER bound on a free loopback port, in a thread of its own and a context of
//!   its own, echoing `[identity, body]` as it came, and DEALER clients with the same window
//!   discipline, each in its own `zmq::Context` (as separate processes would be; with
//!   `--shared-client-context` one context for all, as threads of one process), one body frame
//!   per message.
//! - **libzmq, MDP-framed** (`--frames N`, default 4; `--frames 1` leaves it out): the same, each
//!   message sent as N frames (MDP's header, command and service frames, then the body) like an
//!   MDP client request, echoed whole.
//!
//! Each round measures every system pipelined (`--clients` × `--window`) and synchronous
//! (`--clients` × window 1), and every reply is checked against its request. The summary gives
//! the medians and the ratios libzmq/TCP: throughput, and synchronous p50.

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::load::{bench_dealer, run_clients, ClientOutcome, LoadReport, LoadSpec};
use super::{check, measure, median};

/// How long a client waits for a reply before it counts the run as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes a TCP client may have in flight: it writes its whole window before reading, so past
/// what the two kernels' socket buffers hold, client and echo thread would both block writing.
const MAX_TCP_IN_FLIGHT: usize = 128 * 1024;

/// The frames in front of the body in an MDP-framed message: an MDP/0.2 client REQUEST's header,
/// command and service (more frames than that repeat the service frame).
const MDP_PREFIX: [&[u8]; 3] = [b"MDPC02", &[0x01], b"bench.echo"];

/// `plant bench floor` arguments.
#[derive(Args, Debug, Clone)]
pub struct FloorArgs {
    /// Parallel clients (one thread and connection each).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Requests in flight per client in the pipelined runs.
    #[arg(long, default_value_t = 250)]
    pub window: usize,
    /// Body bytes per request (at least 16).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Alternations.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Frames per message of the MDP-framed libzmq system (4 is an MDP client request); 1 leaves
    /// that system out.
    #[arg(long, default_value_t = 4)]
    pub frames: usize,
    /// All libzmq clients share one context (one I/O thread) instead of a context each, as
    /// threads of one process would; tells the I/O threads' count from the hand-off itself.
    #[arg(long)]
    pub shared_client_context: bool,
}

/// The systems a round measures.
#[derive(Clone, Copy, Debug, PartialEq)]
enum System {
    Tcp,
    /// libzmq with this many frames per message.
    Zmq(usize),
}

/// One round's measurements; the MDP-framed ones are `None` with `--frames 1`.
#[derive(Serialize)]
struct Round {
    round: usize,
    tcp_pipelined: LoadReport,
    libzmq_pipelined: LoadReport,
    libzmq_framed_pipelined: Option<LoadReport>,
    tcp_synchronous: LoadReport,
    libzmq_synchronous: LoadReport,
    libzmq_framed_synchronous: Option<LoadReport>,
}

/// Runs the comparison and prints the ratios.
pub fn run(args: FloorArgs, json: bool) -> Result<()> {
    if args.clients == 0 || args.window == 0 || args.frames == 0 {
        bail!("--clients, --window and --frames must be at least 1");
    }
    if args.size < 16 {
        bail!("--size must be at least 16 bytes (the bench stamps each body)");
    }
    if args.frames > 16 {
        bail!("--frames must be at most 16");
    }
    if args.window * (args.size + 4) > MAX_TCP_IN_FLIGHT {
        bail!(
            "--window × (--size + 4) must be at most {MAX_TCP_IN_FLIGHT} bytes: a TCP client \
             writes its whole window before reading, and past the socket buffers both ends block"
        );
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    let tcp = TcpEcho::start().context("cannot start the TCP echo server")?;
    let zmq = ZmqEcho::start().context("cannot start the libzmq echo ROUTER")?;
    let framed = (args.frames > 1).then_some(System::Zmq(args.frames));
    let mut rounds = Vec::new();
    for round in 1..=args.rounds.max(1) {
        let go = |system, window| measure_one(&args, &tcp, &zmq, system, window);
        let r = Round {
            round,
            tcp_pipelined: go(System::Tcp, args.window)?,
            libzmq_pipelined: go(System::Zmq(1), args.window)?,
            libzmq_framed_pipelined: framed.map(|s| go(s, args.window)).transpose()?,
            tcp_synchronous: go(System::Tcp, 1)?,
            libzmq_synchronous: go(System::Zmq(1), 1)?,
            libzmq_framed_synchronous: framed.map(|s| go(s, 1)).transpose()?,
        };
        if !json {
            let tput = |r: &Option<LoadReport>| match r {
                Some(r) => format!(", {} frames {:>7.0}", args.frames, r.requests_per_sec),
                None => String::new(),
            };
            let p50 = |r: &Option<LoadReport>| match r {
                Some(r) => format!(", {} frames {:>4}", args.frames, r.latency_us.p50),
                None => String::new(),
            };
            println!(
                "round {}: pipelined TCP {:>7.0}, libzmq {:>7.0}{} req/s | synchronous p50 TCP {:>4}, libzmq {:>4}{} µs",
                round,
                r.tcp_pipelined.requests_per_sec,
                r.libzmq_pipelined.requests_per_sec,
                tput(&r.libzmq_framed_pipelined),
                r.tcp_synchronous.latency_us.p50,
                r.libzmq_synchronous.latency_us.p50,
                p50(&r.libzmq_framed_synchronous),
            );
        }
        rounds.push(r);
    }
    drop(zmq);
    drop(tcp);
    summarise(&args, &rounds, json);
    Ok(())
}

/// Prints the medians and the ratios libzmq/TCP.
fn summarise(args: &FloorArgs, rounds: &[Round], json: bool) {
    let tput = |f: fn(&Round) -> Option<&LoadReport>| {
        let v: Vec<f64> = rounds
            .iter()
            .filter_map(f)
            .map(|r| r.requests_per_sec)
            .collect();
        (!v.is_empty()).then(|| median(v))
    };
    let pct = |f: fn(&Round) -> Option<&LoadReport>, p99: bool| {
        let v: Vec<f64> = rounds
            .iter()
            .filter_map(f)
            .map(|r| if p99 { r.latency_us.p99 } else { r.latency_us.p50 } as f64)
            .collect();
        (!v.is_empty()).then(|| median(v))
    };
    let tt = tput(|r| Some(&r.tcp_pipelined)).unwrap_or_default();
    let zt = tput(|r| Some(&r.libzmq_pipelined)).unwrap_or_default();
    let ft = tput(|r| r.libzmq_framed_pipelined.as_ref());
    let tl = pct(|r| Some(&r.tcp_synchronous), false).unwrap_or_default();
    let zl = pct(|r| Some(&r.libzmq_synchronous), false).unwrap_or_default();
    let fl = pct(|r| r.libzmq_framed_synchronous.as_ref(), false);
    let t99 = pct(|r| Some(&r.tcp_synchronous), true).unwrap_or_default();
    let z99 = pct(|r| Some(&r.libzmq_synchronous), true).unwrap_or_default();
    let f99 = pct(|r| r.libzmq_framed_synchronous.as_ref(), true);
    let shape = format!(
        "{} clients × window {} (synchronous: window 1), {} B bodies, {} s per measurement, libzmq clients in {}; libzmq MDP-framed: {}",
        args.clients,
        args.window,
        args.size,
        args.duration,
        if args.shared_client_context {
            "one shared context"
        } else {
            "a context each"
        },
        if args.frames > 1 {
            format!("{} frames", args.frames)
        } else {
            "not run".to_owned()
        }
    );
    if json {
        println!(
            "{}",
            json!({
                "mode": "floor", "shape": shape,
                "load": {
                    "clients": args.clients, "window": args.window, "size": args.size,
                    "duration": args.duration, "frames": args.frames,
                    "shared_client_context": args.shared_client_context,
                },
                "rounds": rounds,
                "median_req_per_sec": {"tcp": tt, "libzmq": zt, "libzmq_framed": ft},
                "median_synchronous_p50_us": {"tcp": tl, "libzmq": zl, "libzmq_framed": fl},
                "median_synchronous_p99_us": {"tcp": t99, "libzmq": z99, "libzmq_framed": f99},
                "throughput_ratio": zt / tt, "p50_latency_ratio": zl / tl,
                "framed_throughput_ratio": ft.map(|f| f / tt),
                "framed_p50_latency_ratio": fl.map(|f| f / tl),
            })
        );
        return;
    }
    println!("{shape}");
    let framed = |v: Option<f64>, unit: &str, base: f64| match v {
        Some(v) => format!(" ({} frames {v:.0} {unit}: {:.2}×)", args.frames, v / base),
        None => String::new(),
    };
    println!(
        "  median pipelined throughput: libzmq {zt:.0} req/s / TCP {tt:.0} req/s = {:.2}×{}",
        zt / tt,
        framed(ft, "req/s", tt)
    );
    println!(
        "  median synchronous p50: libzmq {zl:.0} µs / TCP {tl:.0} µs = {:.2}×, +{:.0} µs per round trip{}",
        zl / tl,
        zl - tl,
        framed(fl, "µs", tl)
    );
    println!(
        "  median synchronous p99: libzmq {z99:.0} µs, TCP {t99:.0} µs{}",
        match f99 {
            Some(f) => format!(", {} frames {f:.0} µs", args.frames),
            None => String::new(),
        }
    );
}

/// One measurement of `system` with `window` requests in flight per client.
fn measure_one(
    args: &FloorArgs,
    tcp: &TcpEcho,
    zmq: &ZmqEcho,
    system: System,
    window: usize,
) -> Result<LoadReport> {
    let (endpoint, label) = match system {
        System::Tcp => (tcp.addr.to_string(), "tcp"),
        System::Zmq(1) => (zmq.endpoint.clone(), "libzmq"),
        System::Zmq(_) => (zmq.endpoint.clone(), "framed"),
    };
    let spec = LoadSpec {
        endpoint,
        clients: args.clients,
        window,
        size: args.size,
        requests: 0,
        duration: Some(Duration::from_secs_f64(args.duration)),
        reply_timeout: REPLY_TIMEOUT,
        curve: None,
    };
    let shared = args.shared_client_context.then(zmq::Context::new);
    let report = measure(&spec, label, |progress| {
        run_clients(&spec, |id, _, deadline| {
            let deadline = deadline.unwrap_or_else(Instant::now);
            match system {
                System::Tcp => tcp_client(&spec, tcp.addr, id, deadline, &progress),
                System::Zmq(frames) => {
                    // A context per client unless shared: each its own libzmq I/O thread.
                    let ctx = shared.clone().unwrap_or_default();
                    zmq_client(&ctx, &spec, frames, id, deadline, &progress)
                }
            }
        })
    });
    check(&report)?;
    Ok(report)
}

/// Writes request `seq` of client `id` into `buf`: the two numbers, then a fixed pattern (the
/// same bodies as the other benches' `payload`, without an allocation per request).
fn stamp(buf: &mut Vec<u8>, id: u64, seq: u64, size: usize) {
    if buf.len() != size {
        *buf = super::load::payload(id, seq, size);
        return;
    }
    buf[..8].copy_from_slice(&id.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
}

/// One TCP client: a connection of its own, `spec.window` requests in flight until `deadline`.
/// Replies come back in order on the one connection, so each is checked against the oldest
/// request in flight.
fn tcp_client(
    spec: &LoadSpec,
    addr: SocketAddr,
    id: u64,
    deadline: Instant,
    progress: &AtomicU64,
) -> ClientOutcome {
    let mut outcome = ClientOutcome::new();
    if let Err(e) = tcp_client_loop(spec, addr, id, deadline, progress, &mut outcome) {
        outcome.fail(format!("tcp: {e}"));
    }
    outcome
}

fn tcp_client_loop(
    spec: &LoadSpec,
    addr: SocketAddr,
    id: u64,
    deadline: Instant,
    progress: &AtomicU64,
    outcome: &mut ClientOutcome,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(spec.reply_timeout))?;
    let mut writer = BufWriter::with_capacity(64 * 1024, stream.try_clone()?);
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(spec.window);
    let (mut body, mut expected, mut reply) = (Vec::new(), Vec::new(), vec![0u8; spec.size]);
    let mut next = 0u64;
    let prefix = (spec.size as u32).to_be_bytes();
    loop {
        let mut wrote = false;
        while in_flight.len() < spec.window && Instant::now() < deadline {
            stamp(&mut body, id, next, spec.size);
            writer.write_all(&prefix)?;
            writer.write_all(&body)?;
            in_flight.push_back((next, Instant::now()));
            next += 1;
            wrote = true;
        }
        if wrote {
            writer.flush()?;
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        // One reply, waiting for it, then every reply already buffered, before refilling.
        loop {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len)?;
            let len = u32::from_be_bytes(len) as usize;
            if len != spec.size {
                outcome.fail(format!("reply of {len} bytes, not {}", spec.size));
                return Ok(());
            }
            reader.read_exact(&mut reply)?;
            let Some((seq, sent)) = in_flight.pop_front() else {
                outcome.fail("a reply without a request".into());
                return Ok(());
            };
            stamp(&mut expected, id, seq, spec.size);
            if reply == expected {
                outcome.record(sent, progress);
            } else {
                outcome.fail("reply does not match its request".into());
            }
            if reader.buffer().is_empty() || in_flight.is_empty() {
                break;
            }
        }
    }
}

/// One libzmq client: a DEALER in `ctx`, `spec.window` messages of `frames` frames in flight
/// until `deadline`, replies (in order, from the one ROUTER) checked like the TCP ones.
fn zmq_client(
    ctx: &zmq::Context,
    spec: &LoadSpec,
    frames: usize,
    id: u64,
    deadline: Instant,
    progress: &AtomicU64,
) -> ClientOutcome {
    let mut outcome = ClientOutcome::new();
    let socket = match bench_dealer(ctx).and_then(|s| {
        s.connect(&spec.endpoint)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            outcome.fail(format!("socket: {e}"));
            return outcome;
        }
    };
    let prefix: Vec<&[u8]> = (0..frames - 1)
        .map(|i| MDP_PREFIX[i.min(MDP_PREFIX.len() - 1)])
        .collect();
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(spec.window);
    let (mut body, mut expected) = (Vec::new(), Vec::new());
    let mut next = 0u64;
    loop {
        while in_flight.len() < spec.window && Instant::now() < deadline {
            stamp(&mut body, id, next, spec.size);
            let sent = prefix
                .iter()
                .try_for_each(|f| socket.send(*f, zmq::SNDMORE))
                .and_then(|()| socket.send(&body[..], 0));
            if let Err(e) = sent {
                outcome.fail(format!("send: {e}"));
                return outcome;
            }
            in_flight.push_back((next, Instant::now()));
            next += 1;
        }
        if in_flight.is_empty() {
            return outcome;
        }
        if !outcome.await_reply(&socket, spec.reply_timeout, in_flight.len()) {
            return outcome;
        }
        // Everything that is ready before refilling the window.
        while let Ok(reply) = socket.recv_multipart(zmq::DONTWAIT) {
            let Some((seq, sent)) = in_flight.pop_front() else {
                outcome.fail("a reply without a request".into());
                return outcome;
            };
            stamp(&mut expected, id, seq, spec.size);
            if reply.len() == frames && reply.last() == Some(&expected) {
                outcome.record(sent, progress);
            } else {
                outcome.fail("reply does not match its request".into());
            }
        }
    }
}

/// The bare TCP echo server: an accept thread and an echo thread per connection; stopped on drop.
struct TcpEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpEcho {
    /// Binds a free loopback port; it accepts from then on (the kernel queues connections until
    /// the accept thread takes them).
    fn start() -> Result<TcpEcho> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let acceptor = std::thread::Builder::new()
            .name("floor-tcp-accept".into())
            .spawn(move || {
                let mut echoes = Vec::new();
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        echoes.push(std::thread::spawn(move || {
                            let _ = tcp_echo(stream);
                        }));
                    }
                }
                // Each echo thread ends when its client closes, which every client has by now.
                for echo in echoes {
                    let _ = echo.join();
                }
            })?;
        Ok(TcpEcho {
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }
}

/// Echoes length-prefixed messages until the peer closes; writes go out when no more input is
/// buffered, so a batch of requests goes back as a batch.
fn tcp_echo(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = BufWriter::with_capacity(64 * 1024, stream.try_clone()?);
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut body = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len) {
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return writer.flush(),
            other => other?,
        }
        body.resize(u32::from_be_bytes(len) as usize, 0);
        reader.read_exact(&mut body)?;
        writer.write_all(&len)?;
        writer.write_all(&body)?;
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A connection wakes the accept thread, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// The bare libzmq echo: a ROUTER in a thread and context of its own; stopped on drop through an
/// inproc control socket.
struct ZmqEcho {
    endpoint: String,
    control: zmq::Socket,
    thread: Option<JoinHandle<()>>,
    _ctx: zmq::Context,
}

impl ZmqEcho {
    /// Binds the ROUTER on a free loopback port; a bound socket queues what connecting DEALERs
    /// send, so it is ready on return.
    fn start() -> Result<ZmqEcho> {
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER)?;
        router.set_linger(0)?;
        router.set_sndhwm(0)?;
        router.set_rcvhwm(0)?;
        router.bind("tcp://127.0.0.1:0")?;
        let endpoint = router
            .get_last_endpoint()?
            .map_err(|_| anyhow::anyhow!("the ROUTER's endpoint is not UTF-8"))?;
        let control = ctx.socket(zmq::PAIR)?;
        let address = format!("inproc://floor-echo-{}", std::process::id());
        control.bind(&address)?;
        let stop = ctx.socket(zmq::PAIR)?;
        stop.connect(&address)?;
        let thread = std::thread::Builder::new()
            .name("floor-zmq-echo".into())
            .spawn(move || {
                let _ = zmq_echo(&router, &stop);
            })?;
        Ok(ZmqEcho {
            endpoint,
            control,
            thread: Some(thread),
            _ctx: ctx,
        })
    }
}

/// Echoes every message back to its sender as it came until `stop` receives anything.
fn zmq_echo(router: &zmq::Socket, stop: &zmq::Socket) -> zmq::Result<()> {
    loop {
        let mut items = [
            router.as_poll_item(zmq::POLLIN),
            stop.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, -1)?;
        if items[1].is_readable() {
            return Ok(());
        }
        // Drain what is ready: a poll per batch, not per message.
        loop {
            let first = match router.recv_msg(zmq::DONTWAIT) {
                Ok(m) => m,
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => return Err(e),
            };
            let mut more = router.get_rcvmore()?;
            router.send(first, if more { zmq::SNDMORE } else { 0 })?;
            while more {
                let frame = router.recv_msg(0)?;
                more = router.get_rcvmore()?;
                router.send(frame, if more { zmq::SNDMORE } else { 0 })?;
            }
        }
    }
}

impl Drop for ZmqEcho {
    fn drop(&mut self) {
        let _ = self.control.send("stop", 0);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
