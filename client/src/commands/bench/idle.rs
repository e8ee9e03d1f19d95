//! `plant bench idle`: what a broker costs when nothing happens. Starts the `plantd-broker` binary
//! as a child process, connects many idle clients (each makes one MMI call, so the broker has seen
//! it) and many idle workers (which only heartbeat), then samples the child's resident memory and
//! CPU time from `/proc` over a quiet window.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use plantd_worker_sdk::protocol::{
    self, ClientCommand, Dialect, Direction, Frame, Message, WorkerCommand,
};
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use serde_json::json;

/// Options of `plant bench idle`.
#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// Idle client connections.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Idle workers (heartbeating only).
    #[arg(long, default_value_t = 100)]
    pub workers: usize,
    /// Length of the quiet measurement window in seconds.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Broker heartbeat interval in milliseconds (also used by the idle workers).
    #[arg(long, default_value_t = 2500)]
    pub heartbeat_ms: u64,
    /// Path of the plantd-broker binary (default: next to this `plant`).
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Linux reports process CPU time in clock ticks; 100 per second on every mainstream platform.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc status")
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("bad /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields
        .get(11)
        .and_then(|v| v.parse().ok())
        .context("no utime")?;
    let stime: u64 = fields
        .get(12)
        .and_then(|v| v.parse().ok())
        .context("no stime")?;
    Ok(utime + stime)
}

/// Runs the idle measurement.
pub fn run(args: IdleArgs, json_out: bool) -> Result<()> {
    let bin = match &args.broker_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("plantd-broker"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p plantd-broker)",
            bin.display()
        );
    }
    let endpoint = free_endpoint();
    let child = Command::new(&bin)
        .env("PLANTD_BROKER_ENDPOINT", &endpoint)
        .env("PLANTD_BROKER_HEALTH_PORT", free_port().to_string())
        .env(
            "PLANTD_BROKER_HEARTBEAT_INTERVAL_MS",
            args.heartbeat_ms.to_string(),
        )
        .env("PLANTD_BROKER_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let broker = KillOnDrop(child);
    let pid = broker.0.id();

    let mut pool = ContextPool::default();
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let s = pool.socket(zmq::DEALER)?;
        s.set_linger(0)?;
        s.connect(&endpoint)?;
        clients.push(s);
    }
    // One MMI round trip per client so every connection is live and known to the broker.
    for s in &clients {
        let mut out = Vec::new();
        let msg = Message::Client(ClientCommand::Request {
            service: Frame::from("mmi.service"),
            body: vec![Frame::from("bench.idle")],
        });
        let _ = protocol::encode(Dialect::V02, Direction::ToBroker, msg, &mut out);
        protocol::send_frames(s, out, 0)?;
    }
    for s in &clients {
        if s.poll(zmq::POLLIN, 20_000)? == 0 {
            bail!("broker did not answer an idle client's MMI query");
        }
        protocol::recv_frames(s, 0)?;
    }

    let heartbeat = Duration::from_millis(args.heartbeat_ms);
    let workers: Vec<zmq::Socket> = (0..args.workers)
        .map(|_| -> Result<zmq::Socket> {
            let s = pool.socket(zmq::DEALER)?;
            s.set_linger(0)?;
            s.connect(&endpoint)?;
            send_worker(
                &s,
                WorkerCommand::Ready {
                    service: Frame::from("bench.idle"),
                    credit: 1,
                },
            )?;
            Ok(s)
        })
        .collect::<Result<_>>()?;

    // Settle, then measure a quiet window while the workers keep heartbeating.
    let settle = Instant::now() + heartbeat * 2;
    heartbeat_until(&workers, heartbeat, settle)?;
    let (rss_before, ticks_before, started) = (rss_kib(pid)?, cpu_ticks(pid)?, Instant::now());
    heartbeat_until(
        &workers,
        heartbeat,
        started + Duration::from_secs(args.seconds),
    )?;
    let (rss_after, ticks_after) = (rss_kib(pid)?, cpu_ticks(pid)?);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_percent = (ticks_after - ticks_before) as f64 / CLOCK_TICKS_PER_SEC / elapsed * 100.0;
    let rss_mb = rss_after.max(rss_before) as f64 / 1024.0;

    if json_out {
        println!(
            "{}",
            json!({"mode": "idle", "clients": args.clients, "workers": args.workers,
                   "seconds": elapsed, "rss_mb": rss_mb, "cpu_percent_of_one_core": cpu_percent})
        );
    } else {
        println!(
            "idle: {} clients, {} workers, heartbeat {} ms, {:.0} s window",
            args.clients, args.workers, args.heartbeat_ms, elapsed
        );
        println!("  broker resident memory {rss_mb:.1} MB, CPU {cpu_percent:.2}% of one core");
    }
    Ok(())
}

fn send_worker(socket: &zmq::Socket, cmd: WorkerCommand) -> Result<()> {
    let mut out = Vec::new();
    let _ = protocol::encode(
        Dialect::V02,
        Direction::ToBroker,
        Message::Worker(cmd),
        &mut out,
    );
    protocol::send_frames(socket, out, 0)?;
    Ok(())
}

/// Keeps the idle workers alive: answer nothing, heartbeat on schedule, drain broker heartbeats.
fn heartbeat_until(workers: &[zmq::Socket], interval: Duration, until: Instant) -> Result<()> {
    let mut next = Instant::now();
    while Instant::now() < until {
        if Instant::now() >= next {
            for w in workers {
                send_worker(w, WorkerCommand::Heartbeat)?;
            }
            next = Instant::now() + interval;
        }
        for w in workers {
            while protocol::recv_frames(w, zmq::DONTWAIT).is_ok() {}
        }
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
    Ok(())
}

/// Hands out sockets from as many libzmq contexts as needed: one context holds at most 1,023
/// sockets by default, and the `zmq` crate cannot raise that limit.
#[derive(Default)]
struct ContextPool {
    contexts: Vec<zmq::Context>,
    in_last: usize,
}

impl ContextPool {
    const SOCKETS_PER_CONTEXT: usize = 500;

    fn socket(&mut self, kind: zmq::SocketType) -> Result<zmq::Socket> {
        if self.contexts.is_empty() || self.in_last == Self::SOCKETS_PER_CONTEXT {
            self.contexts.push(zmq::Context::new());
            self.in_last = 0;
        }
        self.in_last += 1;
        let context = self.contexts.last().expect("pushed above");
        Ok(context.socket(kind)?)
    }
}
