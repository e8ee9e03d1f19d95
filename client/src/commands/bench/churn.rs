//! `plant bench churn`: does a broker keep anything per peer that has gone? Starts a broker child
//! process ([`super::process`]) and a credit echo worker, then has many short-lived clients each
//! connect (a fresh DEALER socket, so a fresh connection and routing id), make one echo request,
//! verify the reply and disconnect, several at a time. Reports the broker's resident memory
//! when it started, after a warm-up share of the clients (the allocator's pools and the broker's
//! tables have grown to their working size by then), at the high-water mark, and after all the
//! clients have gone and the broker has had a few heartbeats and a trim interval to forget them.
//!
//! A per-peer leak shows as "after" growing with `--clients`; allocator warm-up does not.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use plantd_worker_sdk::protocol::{self, ClientCommand, Dialect, Direction, Frame, Message};
use serde_json::json;

use super::peers::{self, EchoWorkers};
use super::process::{counter, raise_open_files_limit, BrokerBinary, BrokerProcess};
use super::wait_for_service;

/// Options of `plant bench churn`.
#[derive(Args, Debug, Clone)]
pub struct ChurnArgs {
    /// Clients that each connect, make one request and disconnect.
    #[arg(long, default_value_t = 50_000)]
    pub clients: u64,
    /// Clients connected at once (one thread each, a new socket per client).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Clients run before the "start" figure is taken (warm-up), included in `--clients`.
    #[arg(long, default_value_t = 1000)]
    pub warmup: u64,
    /// Body bytes per request.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds to wait after the last client before the "after" figure (the broker's heartbeat
    /// and memory trim run in the meantime).
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
    /// Broker heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Path of the plantd-broker binary (default: next to this `plant`, else this `plant` as
    /// `plant bench serve-broker`).
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
}

/// The service the churning clients call.
const SERVICE: &str = "bench.churn";

/// Runs the churn measurement.
pub fn run(args: ChurnArgs, json_out: bool) -> Result<()> {
    if args.concurrency == 0 || args.clients == 0 {
        bail!("--clients and --concurrency must be at least 1");
    }
    if args.warmup >= args.clients {
        bail!("--warmup must be fewer than --clients");
    }
    if args.size < 16 {
        bail!("--size must be at least 16 bytes (the bench stamps each body)");
    }
    let fd_limit = raise_open_files_limit()?;
    let binary = BrokerBinary::locate(args.broker_bin.as_deref())?;
    let env = [
        (
            "PLANTD_BROKER_HEARTBEAT_INTERVAL_MS".to_owned(),
            args.heartbeat_ms.to_string(),
        ),
        // Trim on the heartbeat's scale, so the settle window sees at least one trim.
        (
            "PLANTD_BROKER_MEMORY_TRIM_INTERVAL_MS".to_owned(),
            args.heartbeat_ms.to_string(),
        ),
    ];
    let mut broker = BrokerProcess::spawn(&binary, &env)?;
    broker.wait_ready(Duration::from_secs(20))?;
    let ctx = zmq::Context::new();
    let _worker = peers::mdp_echo_workers(
        &ctx,
        &broker.endpoint,
        SERVICE,
        Dialect::V02,
        EchoWorkers {
            threads: 1,
            sessions: 1,
            credit: args.concurrency as u32,
        },
        Duration::from_millis(args.heartbeat_ms),
        None,
    )
    .context("cannot start the echo worker")?;
    wait_for_service(&broker.endpoint, SERVICE, Dialect::V02, None)?;
    let rss_start = broker.rss_kib()?;

    let warm = churn(&broker.endpoint, args.warmup, &args)?;
    let rss_warm = broker.rss_kib()?;
    let started = Instant::now();
    let main = churn(&broker.endpoint, args.clients - args.warmup, &args)?;
    let seconds = started.elapsed().as_secs_f64();
    let rss_end_of_load = broker.rss_kib()?;
    std::thread::sleep(Duration::from_secs_f64(args.settle));
    let rss_after = broker.rss_kib()?;
    let rss_peak = broker.peak_rss_kib()?;
    let info = plantd_worker_sdk::Client::connect(&broker.endpoint)?
        .with_timeout(Duration::from_secs(5))
        .broker_info()
        .context("mmi.broker after the churn")?;

    let mb = |kib: u64| kib as f64 / 1024.0;
    let verified = warm.verified + main.verified;
    let failed = warm.failed + main.failed;
    let growth_vs_warm = rss_after as f64 / rss_warm as f64 - 1.0;
    let growth_vs_start = rss_after as f64 / rss_start as f64 - 1.0;
    let clients_per_sec = main.verified as f64 / seconds;
    if json_out {
        println!(
            "{}",
            json!({
                "mode": "churn", "broker": binary.describe(), "clients": args.clients,
                "warmup": args.warmup, "concurrency": args.concurrency, "size": args.size,
                "open_files_limit": fd_limit,
                "verified": verified, "failed": failed, "first_error": warm.first_error.clone().or(main.first_error.clone()),
                "seconds": seconds, "clients_per_sec": clients_per_sec,
                "rss_mb": {"start": mb(rss_start), "after_warmup": mb(rss_warm),
                           "end_of_load": mb(rss_end_of_load), "peak": mb(rss_peak),
                           "after": mb(rss_after)},
                "growth_vs_after_warmup": growth_vs_warm, "growth_vs_start": growth_vs_start,
                "target_met": growth_vs_warm <= 0.10,
                "counters": {"requests": counter(&info, "requests"),
                             "replies": counter(&info, "replies")},
            })
        );
    } else {
        println!(
            "churn: {} clients ({} warm-up), {} at a time, each one request of {} B, {:.0} clients/s",
            args.clients, args.warmup, args.concurrency, args.size, clients_per_sec
        );
        println!(
            "  broker RSS: start {:.1} MB, after warm-up {:.1} MB, end of load {:.1} MB, peak {:.1} MB, after {:.1} s {:.1} MB",
            mb(rss_start),
            mb(rss_warm),
            mb(rss_end_of_load),
            mb(rss_peak),
            args.settle,
            mb(rss_after)
        );
        println!(
            "  after / after warm-up = {:+.1}%, after / start = {:+.1}%; {verified} replies verified, {failed} failed",
            growth_vs_warm * 100.0,
            growth_vs_start * 100.0
        );
    }
    if failed > 0 {
        bail!(
            "{failed} churning clients failed: {}",
            warm.first_error.or(main.first_error).unwrap_or_default()
        );
    }
    Ok(())
}

/// What a batch of churning clients did.
struct ChurnOutcome {
    verified: u64,
    failed: u64,
    first_error: Option<String>,
}

/// Runs `count` one-request clients, `args.concurrency` at a time.
fn churn(endpoint: &str, count: u64, args: &ChurnArgs) -> Result<ChurnOutcome> {
    let next = AtomicU64::new(0);
    let outcomes: Vec<ChurnOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let ctx = zmq::Context::new();
                    let mut outcome = ChurnOutcome {
                        verified: 0,
                        failed: 0,
                        first_error: None,
                    };
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= count {
                            break;
                        }
                        match one_client(&ctx, endpoint, n, args.size) {
                            Ok(()) => outcome.verified += 1,
                            Err(e) => {
                                outcome.failed += 1;
                                outcome.first_error.get_or_insert(e.to_string());
                            }
                        }
                    }
                    outcome
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or(ChurnOutcome {
                    verified: 0,
                    failed: 1,
                    first_error: Some("a churn thread panicked".into()),
                })
            })
            .collect()
    });
    let mut total = ChurnOutcome {
        verified: 0,
        failed: 0,
        first_error: None,
    };
    for o in outcomes {
        total.verified += o.verified;
        total.failed += o.failed;
        if total.first_error.is_none() {
            total.first_error = o.first_error;
        }
    }
    Ok(total)
}

/// One client: a new socket (connection, routing id), one stamped echo request, its reply
/// verified, the socket closed.
fn one_client(ctx: &zmq::Context, endpoint: &str, n: u64, size: usize) -> Result<()> {
    let socket = ctx.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.connect(endpoint)?;
    let mut body = vec![b'.'; size];
    body[..8].copy_from_slice(&n.to_le_bytes());
    let mut out = Vec::with_capacity(5);
    let msg = Message::Client(ClientCommand::Request {
        service: Frame::from(SERVICE),
        body: vec![Frame::from(&body[..])],
    });
    let _ = protocol::encode(Dialect::V02, Direction::ToBroker, msg, &mut out);
    protocol::send_frames(&socket, out, 0)?;
    if socket.poll(zmq::POLLIN, 10_000)? == 0 {
        bail!("no reply within 10 s");
    }
    let frames = protocol::recv_frames(&socket, 0)?;
    match protocol::decode(Direction::FromBroker, frames) {
        Ok((_, Message::Client(ClientCommand::Final { body: reply, .. }))) => {
            if let Some(e) = protocol::ErrorReply::parse(&reply) {
                bail!("error reply {}: {}", e.code, e.message);
            }
            if reply.len() != 1 || reply[0][..] != body[..] {
                bail!("the reply is not the request's body");
            }
            Ok(())
        }
        Ok(_) => bail!("unexpected reply command"),
        Err(e) => bail!("undecodable reply: {e}"),
    }
}
