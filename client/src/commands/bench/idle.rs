//! `plant bench idle`: what a broker costs when nothing happens. Starts the `plantd-broker` binary
//! (or, without one, `plant bench serve-broker`) as a child process on free ports with its buses
//! off ([`super::process`], so it runs beside a `plantd up`), connects many idle clients (each makes one MMI call, so the broker has seen
//! it) and many idle workers (which only heartbeat), then samples the child's resident memory and
//! CPU time from `/proc` over a quiet window.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use plantd_worker_sdk::protocol::{
    self, ClientCommand, Dialect, Direction, Frame, Message, WorkerCommand,
};
use serde_json::json;

use super::peers::ContextPool;
use super::process::{BrokerBinary, BrokerProcess};

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
    /// Path of the plantd-broker binary (default: next to this `plant`, else this `plant` as
    /// `plant bench serve-broker`).
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
}

/// Runs the idle measurement.
pub fn run(args: IdleArgs, json_out: bool) -> Result<()> {
    let binary = BrokerBinary::locate(args.broker_bin.as_deref())?;
    let env = [(
        "PLANTD_BROKER_HEARTBEAT_INTERVAL_MS".to_owned(),
        args.heartbeat_ms.to_string(),
    )];
    let mut broker = BrokerProcess::spawn(&binary, &env)?;
    broker.wait_ready(Duration::from_secs(20))?;
    let endpoint = broker.endpoint.clone();

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
    let (rss_before, cpu_before, started) =
        (broker.rss_kib()?, broker.cpu_seconds()?, Instant::now());
    heartbeat_until(
        &workers,
        heartbeat,
        started + Duration::from_secs(args.seconds),
    )?;
    let (rss_after, cpu_after) = (broker.rss_kib()?, broker.cpu_seconds()?);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_percent = (cpu_after - cpu_before) / elapsed * 100.0;
    let rss_mb = rss_after.max(rss_before) as f64 / 1024.0;

    if json_out {
        println!(
            "{}",
            json!({"mode": "idle", "broker": binary.describe(), "clients": args.clients,
                   "workers": args.workers, "seconds": elapsed, "rss_mb": rss_mb,
                   "cpu_percent_of_one_core": cpu_percent})
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
