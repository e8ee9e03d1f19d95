//! `plant bench bus`: pub/sub throughput through a broker bus, against a bare libzmq XSUB/XPUB
//! `zmq_proxy` and a bare PUSH→PULL stream, with every message accounted for.
//!
//! Each round runs the same traffic three ways, in an order that rotates from round to round so
//! no path always runs first (or last) on a busy machine:
//! - `bus`: a real in-process broker (`plantd_broker::run`) hosting one bus on free ports;
//! - `proxy`: `zmq_proxy` between an XSUB and an XPUB socket in a context of its own, the
//!   libzmq equivalent of the bus without the broker around it;
//! - `pushpull`: PUSH sockets connected straight to one PULL, the raw ceiling of moving these
//!   messages over loopback TCP with nothing in the middle.
//!
//! Publishers send `[topic, payload]` where the payload (`--size` bytes) starts with the
//! publisher's number and a sequence number; the one subscriber checks them and counts every
//! message that never arrived (`lost`) or arrived out of order. The rate is messages received per
//! second, from the moment the publishers start until the last message arrives.
//!
//! High-water marks: every socket on the path (the publishers' PUB, the bus or proxy XSUB and
//! XPUB, the subscriber's SUB; PUSH and PULL likewise) queues up to `--hwm` messages, by default
//! the SDK's and the broker's bus default (`DEFAULT_HIGH_WATER_MARK`, 2,000,000, twice the
//! default burst; its docs say why). Nothing is then dropped while the subscriber keeps up on
//! average. With libzmq's default of 1000 (`--hwm 1000`) PUB and XPUB drop what does not fit, and
//! the report shows how much.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use plantd_broker::bus::{BusConfig, BusSettings};
use plantd_worker_sdk::bus::{Publisher, DEFAULT_HIGH_WATER_MARK};
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use plantd_worker_sdk::Shutdown;
use serde::Serialize;
use serde_json::json;

/// Topic of the measured messages.
const DATA_TOPIC: &str = "bench.data";
/// Topic of the messages that prove the path works before the measurement starts.
const WARMUP_TOPIC: &str = "bench.warmup";
/// Prefix the subscriber subscribes to (both topics above).
const PREFIX: &str = "bench.";
/// A PUSH blocks at its high-water mark instead of dropping; a send stuck this long means the
/// receiver is gone.
const PUSH_SEND_TIMEOUT_MS: i32 = 10_000;
/// How long the path may take to carry a first message (sockets connecting, subscriptions
/// travelling upstream).
const WARMUP_DEADLINE: Duration = Duration::from_secs(15);
/// How often a publisher repeats its warm-up message until the subscriber has seen one.
const WARMUP_INTERVAL: Duration = Duration::from_millis(5);
/// After this long without any message the subscriber stops waiting and counts the rest lost.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Receive timeout of the subscriber, so it can watch the deadlines above.
const RECV_TIMEOUT_MS: i32 = 100;
/// Bytes of the payload header: publisher number (u32) and sequence number (u64), little-endian.
const HEADER: usize = 12;

/// Options of `plant bench bus`.
#[derive(Args, Debug, Clone)]
pub struct BusArgs {
    /// Messages per run (split across the publishers).
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Payload bytes per message (at least 16; the topic travels in its own frame).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Rounds; each runs the bus, the bare proxy and PUSH→PULL once.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Publisher sockets, each on its own thread.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// High-water mark (messages) of every socket on the path; 0 means unlimited.
    #[arg(long, default_value_t = DEFAULT_HIGH_WATER_MARK)]
    pub hwm: i32,
    /// Compare the broker's bus with CURVE (keys made for the run; the proxy loop that checks
    /// each key's rights per message) against the same bus without it, alternating.
    #[arg(long)]
    pub curve: bool,
}

/// The three paths a round measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Path {
    Bus,
    Proxy,
    PushPull,
}

impl Path {
    const ALL: [Path; 3] = [Path::Bus, Path::Proxy, Path::PushPull];

    fn name(self) -> &'static str {
        match self {
            Path::Bus => "bus",
            Path::Proxy => "proxy",
            Path::PushPull => "pushpull",
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
struct RunReport {
    round: usize,
    path: Path,
    sent: u64,
    received: u64,
    lost: u64,
    out_of_order: u64,
    /// From the publishers' start to the last message received.
    seconds: f64,
    msgs_per_sec: f64,
    /// How long the publishers took to hand every message to their sockets (the slowest one).
    publish_seconds: f64,
}

/// Runs `plant bench bus`; `json` selects machine-readable output.
pub fn run(args: BusArgs, json: bool) -> Result<()> {
    validate(&args)?;
    if args.curve {
        return compare_curve(&args, json);
    }
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        let mut line = Vec::new();
        for i in 0..Path::ALL.len() {
            // Rotate the order so no path always runs first on a machine that is warming up.
            let path = Path::ALL[(i + round) % Path::ALL.len()];
            let report = run_once(path, round + 1, &args, None)
                .with_context(|| format!("round {}, {}", round + 1, path.name()))?;
            line.push(format!(
                "{} {:>9.0} msg/s{}",
                path.name(),
                report.msgs_per_sec,
                if report.lost > 0 {
                    format!(" ({} lost)", report.lost)
                } else {
                    String::new()
                }
            ));
            runs.push(report);
        }
        if !json {
            println!("round {}: {}", round + 1, line.join(" | "));
        }
    }
    let medians = Path::ALL.map(|p| {
        median(
            runs.iter()
                .filter(|r| r.path == p)
                .map(|r| r.msgs_per_sec)
                .collect(),
        )
    });
    let [bus, proxy, pushpull] = medians;
    let lost = Path::ALL.map(|p| {
        runs.iter()
            .filter(|r| r.path == p)
            .map(|r| r.lost)
            .sum::<u64>()
    });
    let out_of_order: u64 = runs.iter().map(|r| r.out_of_order).sum();
    if json {
        println!(
            "{}",
            json!({
                "mode": "bus",
                "messages": args.messages,
                "size": args.size,
                "rounds": args.rounds,
                "publishers": args.publishers,
                "hwm": args.hwm,
                "runs": runs,
                "median_msgs_per_sec": {"bus": bus, "proxy": proxy, "pushpull": pushpull},
                "ratio": {
                    "bus_to_proxy": bus / proxy,
                    "bus_to_pushpull": bus / pushpull,
                    "proxy_to_pushpull": proxy / pushpull,
                },
                "lost": {"bus": lost[0], "proxy": lost[1], "pushpull": lost[2]},
                "out_of_order": out_of_order,
            })
        );
    } else {
        println!(
            "{} messages × {} B, {} publisher(s), HWM {}, {} round(s), medians:",
            args.messages, args.size, args.publishers, args.hwm, args.rounds
        );
        println!(
            "  bus {bus:.0} msg/s, bare proxy {proxy:.0} msg/s, PUSH→PULL {pushpull:.0} msg/s"
        );
        println!(
            "  bus / proxy = {:.2}×, bus / PUSH→PULL = {:.2}×, proxy / PUSH→PULL = {:.2}×",
            bus / proxy,
            bus / pushpull,
            proxy / pushpull
        );
        println!(
            "  lost: bus {}, proxy {}, PUSH→PULL {}; out of order: {out_of_order}",
            lost[0], lost[1], lost[2]
        );
    }
    let total_lost: u64 = lost.iter().sum();
    if total_lost > 0 || out_of_order > 0 {
        bail!(
            "{total_lost} messages lost and {out_of_order} out of order (a high-water mark below \
             the burst size drops messages; see --hwm)"
        );
    }
    Ok(())
}

fn validate(args: &BusArgs) -> Result<()> {
    if args.size < 16 {
        bail!("--size must be at least 16 bytes (each payload carries a sequence number)");
    }
    if args.publishers == 0 || args.rounds == 0 {
        bail!("--publishers and --rounds must be at least 1");
    }
    if args.messages < args.publishers as u64 {
        bail!("--messages must be at least --publishers");
    }
    if args.hwm < 0 {
        bail!("--hwm must not be negative (0 means unlimited)");
    }
    if u32::try_from(args.publishers).is_err() {
        bail!("--publishers is too large");
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// One measured run over `path`.
/// `--curve`: the broker's bus without and with CURVE, alternating, and the ratio of medians.
fn compare_curve(args: &BusArgs, json: bool) -> Result<()> {
    let keys = super::curve::BenchKeys::generate()?;
    let (mut null, mut curve) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let plain = run_once(Path::Bus, round, args, None)?;
        let secure = run_once(Path::Bus, round, args, Some(&keys))?;
        if !json {
            println!(
                "round {round}: NULL {:>9.0} msg/s | CURVE {:>9.0} msg/s",
                plain.msgs_per_sec, secure.msgs_per_sec
            );
        }
        null.push(plain);
        curve.push(secure);
    }
    let rate = |runs: &[RunReport]| median(runs.iter().map(|r| r.msgs_per_sec).collect());
    let (n, c) = (rate(&null), rate(&curve));
    let lost: u64 = null.iter().chain(&curve).map(|r| r.lost).sum();
    if json {
        println!(
            "{}",
            json!({"mode": "bus-curve", "messages": args.messages, "size": args.size,
                   "null": null, "curve": curve,
                   "median_msgs_per_sec": {"null": n, "curve": c}, "ratio": c / n, "lost": lost})
        );
    } else {
        println!(
            "{} messages × {} B, {} publisher(s): median CURVE {c:.0} msg/s / NULL {n:.0} msg/s = {:.2}× (lost {lost})",
            args.messages, args.size, args.publishers, c / n
        );
    }
    Ok(())
}

fn run_once(
    path: Path,
    round: usize,
    args: &BusArgs,
    keys: Option<&super::curve::BenchKeys>,
) -> Result<RunReport> {
    let curve = keys.map(|k| k.client.clone());
    let mut middle = Middle::start(path, args.hwm, keys)?;
    // The subscriber has a context of its own, as it would in its own process. The SDK's
    // publishers share the SDK's one context; the PUSH sockets share one too, for the same shape.
    let ctx = zmq::Context::new();
    let push_ctx = zmq::Context::new();
    let receiver = match path {
        Path::PushPull => {
            let pull = ctx.socket(zmq::PULL)?;
            pull.set_rcvhwm(args.hwm)?;
            pull.bind(&middle.receive_at)?;
            pull
        }
        Path::Bus | Path::Proxy => {
            let sub = ctx.socket(zmq::SUB)?;
            sub.set_rcvhwm(args.hwm)?;
            plantd_worker_sdk::curve::apply_client(curve.as_ref(), &sub)?;
            sub.set_subscribe(PREFIX.as_bytes())?;
            sub.connect(&middle.receive_at)?;
            sub
        }
    };
    receiver.set_linger(0)?;
    receiver.set_rcvtimeo(RECV_TIMEOUT_MS)?;

    let go = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for id in 0..args.publishers {
        // Spread the remainder so the shares add up to exactly `messages`.
        let share = args.messages / args.publishers as u64
            + u64::from((id as u64) < args.messages % args.publishers as u64);
        let sender = Sender::connect(
            path,
            &middle.publish_at,
            args.hwm,
            &push_ctx,
            curve.as_ref(),
        )?;
        publishers.push(spawn_publisher(
            sender,
            id as u32,
            share,
            args.size,
            go.clone(),
            abort.clone(),
        ));
    }
    let result = receive(&receiver, args, &go, &mut middle);
    // On error the publishers may still be warming up: let them go.
    abort.store(true, Ordering::Relaxed);
    let joined: Vec<Result<(Sender, f64)>> = publishers
        .into_iter()
        .map(|p| {
            p.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a publisher thread panicked")))
        })
        .collect();
    // The subscriber's error explains more than a publisher's that follows from it.
    let tally = result?;
    let mut publish_seconds: f64 = 0.0;
    let mut senders = Vec::new();
    for publisher in joined {
        let (sender, seconds) = publisher.context("publisher")?;
        publish_seconds = publish_seconds.max(seconds);
        senders.push(sender);
    }
    // Everything arrived or was given up on: the sockets may close now.
    drop(senders);
    drop(receiver);
    drop(middle);
    let seconds = tally.seconds.max(f64::EPSILON);
    Ok(RunReport {
        round,
        path,
        sent: args.messages,
        received: tally.received,
        lost: tally.lost,
        out_of_order: tally.out_of_order,
        seconds,
        msgs_per_sec: tally.received as f64 / seconds,
        publish_seconds,
    })
}

/// What the subscriber counted.
struct Tally {
    received: u64,
    lost: u64,
    out_of_order: u64,
    seconds: f64,
}

/// Waits until every publisher's warm-up message got through, starts the publishers, then
/// receives and checks the measured messages.
fn receive(
    receiver: &zmq::Socket,
    args: &BusArgs,
    go: &AtomicBool,
    middle: &mut Middle,
) -> Result<Tally> {
    let mut topic = zmq::Message::new();
    let mut payload = zmq::Message::new();
    let mut warmed = vec![false; args.publishers];
    let mut next = vec![0u64; args.publishers];
    let (mut received, mut out_of_order) = (0u64, 0u64);
    let warmup_end = Instant::now() + WARMUP_DEADLINE;
    let mut started: Option<Instant> = None;
    let mut last = Instant::now();
    while received < args.messages {
        match recv_message(receiver, &mut topic, &mut payload) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                match started {
                    None if Instant::now() > warmup_end => {
                        if let Some(reason) = middle.failure() {
                            bail!("the bus stopped: {reason}");
                        }
                        bail!(
                            "no message got through within {} s",
                            WARMUP_DEADLINE.as_secs()
                        );
                    }
                    Some(_) if last.elapsed() > IDLE_TIMEOUT => break,
                    _ => {}
                }
                continue;
            }
            Err(e) => return Err(e).context("receive"),
        }
        let Some((id, seq)) = header(&payload) else {
            bail!(
                "a payload without the bench header ({} bytes)",
                payload.len()
            );
        };
        let Some(slot) = next.get_mut(id as usize) else {
            bail!("a message from unknown publisher {id}");
        };
        if &topic[..] == WARMUP_TOPIC.as_bytes() {
            if started.is_none() {
                warmed[id as usize] = true;
                if warmed.iter().all(|w| *w) {
                    started = Some(Instant::now());
                    last = Instant::now();
                    go.store(true, Ordering::Release);
                }
            }
            continue;
        }
        received += 1;
        last = Instant::now();
        // Each publisher's sequence must come in order (ZeroMQ keeps per-connection order and
        // never duplicates), so anything behind the expected number arrived out of order.
        if seq >= *slot {
            *slot = seq + 1;
        } else {
            out_of_order += 1;
        }
    }
    let started = started.unwrap_or(last);
    Ok(Tally {
        received,
        // Every message sent and never received (gaps and missing tails alike).
        lost: args.messages.saturating_sub(received),
        out_of_order,
        seconds: last.duration_since(started).as_secs_f64(),
    })
}

/// Receives `[topic, payload, ...]` into the two buffers (further frames are skipped).
fn recv_message(
    socket: &zmq::Socket,
    topic: &mut zmq::Message,
    payload: &mut zmq::Message,
) -> zmq::Result<()> {
    socket.recv(topic, 0)?;
    if !topic.get_more() {
        // A topic-only message: an empty payload, which `header` rejects.
        *payload = zmq::Message::new();
        return Ok(());
    }
    socket.recv(payload, 0)?;
    let mut more = payload.get_more();
    while more {
        let mut extra = zmq::Message::new();
        socket.recv(&mut extra, 0)?;
        more = extra.get_more();
    }
    Ok(())
}

/// Publisher number and sequence number from the start of a payload.
fn header(payload: &[u8]) -> Option<(u32, u64)> {
    let id = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let seq = u64::from_le_bytes(payload.get(4..HEADER)?.try_into().ok()?);
    Some((id, seq))
}

/// The sending side: the SDK's [`Publisher`] on a bus or proxy, a raw PUSH for PUSH→PULL.
enum Sender {
    Pub(Publisher),
    Push(zmq::Socket),
}

impl Sender {
    fn connect(
        path: Path,
        endpoint: &str,
        hwm: i32,
        push_ctx: &zmq::Context,
        curve: Option<&plantd_worker_sdk::curve::ClientCurve>,
    ) -> Result<Sender> {
        Ok(match path {
            Path::Bus | Path::Proxy => {
                Sender::Pub(Publisher::connect_with(endpoint, hwm, curve)?.0)
            }
            Path::PushPull => {
                let push = push_ctx.socket(zmq::PUSH)?;
                push.set_sndhwm(hwm)?;
                push.set_sndtimeo(PUSH_SEND_TIMEOUT_MS)?;
                push.set_linger(1000)?;
                push.connect(endpoint)?;
                Sender::Push(push)
            }
        })
    }

    fn send(&self, topic: &str, payload: &[u8]) -> Result<()> {
        match self {
            Sender::Pub(publisher) => publisher.publish(topic, payload)?,
            Sender::Push(push) => {
                push.send(topic, zmq::SNDMORE)?;
                push.send(payload, 0)?;
            }
        }
        Ok(())
    }
}

/// A publisher thread: warm-up messages until `go`, then `count` measured messages as fast as the
/// socket takes them. Returns the sender (closed by the caller once everything arrived) and the
/// seconds the measured part took.
fn spawn_publisher(
    sender: Sender,
    id: u32,
    count: u64,
    size: usize,
    go: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
) -> JoinHandle<Result<(Sender, f64)>> {
    std::thread::spawn(move || {
        let mut payload = vec![0u8; size];
        payload[0..4].copy_from_slice(&id.to_le_bytes());
        while !go.load(Ordering::Acquire) {
            if abort.load(Ordering::Relaxed) {
                return Ok((sender, 0.0));
            }
            sender.send(WARMUP_TOPIC, &payload)?;
            std::thread::sleep(WARMUP_INTERVAL);
        }
        let start = Instant::now();
        for seq in 0..count {
            payload[4..HEADER].copy_from_slice(&seq.to_le_bytes());
            sender.send(DATA_TOPIC, &payload)?;
        }
        Ok((sender, start.elapsed().as_secs_f64()))
    })
}

/// What sits between the publishers and the subscriber, stopped on drop.
struct Middle {
    /// Where publishers connect.
    publish_at: String,
    /// Where the subscriber connects (or, for PUSH→PULL, binds).
    receive_at: String,
    kind: MiddleKind,
}

enum MiddleKind {
    /// A broker in its own runtime.
    Broker {
        shutdown: Shutdown,
        runtime: tokio::runtime::Runtime,
        task: Option<tokio::task::JoinHandle<Result<(), plantd_broker::BrokerError>>>,
    },
    /// A `zmq_proxy` thread; it returns (ETERM) when its context is terminated.
    Proxy {
        context: Option<zmq::Context>,
        thread: Option<JoinHandle<()>>,
    },
    /// Nothing: PUSH connects straight to PULL.
    Direct,
}

impl Middle {
    fn start(path: Path, hwm: i32, keys: Option<&super::curve::BenchKeys>) -> Result<Middle> {
        let (publish_at, receive_at) = (free_endpoint(), free_endpoint());
        let kind = match path {
            Path::Bus => start_broker(&publish_at, &receive_at, hwm, keys)?,
            Path::Proxy => start_proxy(&publish_at, &receive_at, hwm)?,
            Path::PushPull => MiddleKind::Direct,
        };
        let receive_at = match path {
            // The PULL binds where the PUSH sockets connect.
            Path::PushPull => publish_at.clone(),
            Path::Bus | Path::Proxy => receive_at,
        };
        Ok(Middle {
            publish_at,
            receive_at,
            kind,
        })
    }

    /// Why the broker stopped, if it did (a port taken, say).
    fn failure(&mut self) -> Option<String> {
        let MiddleKind::Broker { runtime, task, .. } = &mut self.kind else {
            return None;
        };
        if !task.as_ref()?.is_finished() {
            return None;
        }
        // Finished, so this returns at once.
        Some(match runtime.block_on(task.take()?) {
            Ok(Ok(())) => "the in-process broker stopped".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        })
    }
}

impl Drop for Middle {
    fn drop(&mut self) {
        match &mut self.kind {
            MiddleKind::Broker {
                shutdown,
                runtime,
                task,
            } => {
                shutdown.cancel();
                if let Some(task) = task.take() {
                    // The broker stops within a second; never hang the bench on it.
                    let _ = runtime.block_on(async {
                        tokio::time::timeout(Duration::from_secs(5), task).await
                    });
                }
            }
            MiddleKind::Proxy { context, thread } => {
                if let Some(mut context) = context.take() {
                    // zmq_ctx_term makes the proxy return ETERM and waits until its sockets are
                    // closed. The handle must not terminate the context a second time when it
                    // drops (rust-zmq would), so it is forgotten: a few bytes, once per run.
                    let _ = context.destroy();
                    std::mem::forget(context);
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
            MiddleKind::Direct => {}
        }
    }
}

/// A real broker (MDP endpoint and health on free ports) hosting one bus.
fn start_broker(
    frontend: &str,
    backend: &str,
    hwm: i32,
    keys: Option<&super::curve::BenchKeys>,
) -> Result<MiddleKind> {
    let config = plantd_broker::BrokerConfig {
        endpoint: free_endpoint(),
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        bus: BusSettings {
            enabled: true,
            high_water_mark: hwm,
            buses: vec![BusConfig {
                name: "bench".into(),
                frontend: frontend.to_owned(),
                backend: backend.to_owned(),
                capture: None,
            }],
        },
        curve: keys.map(|k| k.settings.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let shutdown = Shutdown::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let task = Some(runtime.spawn(plantd_broker::run(config, shutdown.clone())));
    Ok(MiddleKind::Broker {
        shutdown,
        runtime,
        task,
    })
}

/// The bare libzmq equivalent of a bus: XSUB frontend, XPUB backend, `zmq_proxy`, with the same
/// high-water marks the broker sets (receive on the frontend, send on the backend).
fn start_proxy(frontend: &str, backend: &str, hwm: i32) -> Result<MiddleKind> {
    let context = zmq::Context::new();
    let xsub = context.socket(zmq::XSUB)?;
    xsub.set_rcvhwm(hwm)?;
    xsub.set_linger(0)?;
    xsub.bind(frontend)
        .with_context(|| format!("bind {frontend}"))?;
    let xpub = context.socket(zmq::XPUB)?;
    xpub.set_sndhwm(hwm)?;
    xpub.set_linger(0)?;
    xpub.bind(backend)
        .with_context(|| format!("bind {backend}"))?;
    let thread = std::thread::Builder::new()
        .name("bench-proxy".into())
        .spawn(move || {
            // Returns ETERM when the context is terminated; nothing else stops it.
            let _ = zmq::proxy(&xsub, &xpub);
        })?;
    Ok(MiddleKind::Proxy {
        context: Some(context),
        thread: Some(thread),
    })
}
