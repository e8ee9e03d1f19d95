//! `plant bench idle`: what a broker costs when nothing happens, and whether thousands of idle
//! peers slow down the traffic that does happen.
//!
//! Starts the `plantd-broker` binary (or, without one, `plant bench serve-broker`) as a child
//! process on free ports with its buses off ([`super::process`], so it runs beside a `plantd up`),
//! connects many idle clients (each makes one MMI call, so the broker has seen it) and many idle
//! workers (which only heartbeat), then samples the child's resident memory and CPU time from
//! `/proc` over a quiet window.
//!
//! The idle peers live in helper processes (`plant bench idle-peers`, hidden), at most
//! [`PEERS_PER_HOST`] sockets each: a libzmq socket costs its process two or more descriptors (the
//! connection and the socket's mailbox), so 11,000 peers in one process would be past a
//! 20,000-descriptor hard limit. The bench raises its own `RLIMIT_NOFILE` to the hard limit before
//! it starts the broker and the hosts, which inherit it, and says so when the hard limit is too
//! low for the peer count asked.
//!
//! With `--with-load`, each round also runs the same pipelined echo load (the bench's credit echo
//! workers and clients on `bench.echo`) through the same broker without the idle peers and then
//! with them (hosts started before, stopped after), and reports the with/without throughput ratio.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser};
use plantd_worker_sdk::protocol::{
    self, ClientCommand, Dialect, Direction, Frame, Message, WorkerCommand,
};
use serde_json::json;

use super::load::LoadReport;
use super::peers::ContextPool;
use super::process::{raise_open_files_limit, BrokerBinary, BrokerProcess};
use super::{broker_run, check, median, LoadArgs};

/// Peer sockets per helper process (`plant bench idle-peers`).
pub const PEERS_PER_HOST: usize = 4000;

/// Descriptors a process needs besides its peer sockets (libzmq contexts, stdio, the runtime).
const SPARE_FDS: u64 = 512;

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
    /// Also run a pipelined echo load through the broker without and then with the idle peers,
    /// each round, and report the throughput ratio.
    #[arg(long)]
    pub with_load: bool,
    /// Rounds of the `--with-load` alternation.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Requests per `--with-load` run (4 clients × window 250, 64 B bodies, 2 credit echo
    /// workers).
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
}

/// Options of the hidden `plant bench idle-peers`: a helper process holding idle peers.
#[derive(Args, Debug, Clone)]
pub struct PeerHostArgs {
    /// The broker's MDP endpoint.
    #[arg(long)]
    pub endpoint: String,
    /// Idle clients to connect (each makes one MMI call).
    #[arg(long, default_value_t = 0)]
    pub clients: usize,
    /// Idle workers to register (they only heartbeat).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Worker heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 2500)]
    pub heartbeat_ms: u64,
}

/// Runs the idle measurement.
pub fn run(args: IdleArgs, json_out: bool) -> Result<()> {
    let fd_limit = raise_open_files_limit()?;
    let broker_fds = (args.clients + args.workers) as u64 + SPARE_FDS;
    if fd_limit < broker_fds {
        bail!(
            "the open-files hard limit is {fd_limit}, too low for a broker with {} peers \
             (it needs about {broker_fds}); raise it (ulimit -Hn, or LimitNOFILE) or ask for fewer",
            args.clients + args.workers
        );
    }
    let binary = BrokerBinary::locate(args.broker_bin.as_deref())?;
    let env = [(
        "PLANTD_BROKER_HEARTBEAT_INTERVAL_MS".to_owned(),
        args.heartbeat_ms.to_string(),
    )];
    let mut broker = BrokerProcess::spawn(&binary, &env)?;
    broker.wait_ready(Duration::from_secs(20))?;
    let rss_empty = broker.rss_kib()?;
    let load = args.with_load.then(|| load_args(&args, &broker.endpoint));

    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut quiet = None;
    for round in 0..if args.with_load {
        args.rounds.max(1)
    } else {
        1
    } {
        if let Some(load) = &load {
            let run = broker_run(load)?;
            check(&run)?;
            without.push(run);
        }
        let connecting = Instant::now();
        let hosts = PeerHosts::start(&args, &broker.endpoint)?;
        let connect_secs = connecting.elapsed().as_secs_f64();
        // Settle (every worker has heartbeated and been heartbeated), then measure.
        std::thread::sleep(Duration::from_millis(args.heartbeat_ms * 2));
        if quiet.is_none() {
            let (rss_before, cpu_before, started) =
                (broker.rss_kib()?, broker.cpu_seconds()?, Instant::now());
            std::thread::sleep(Duration::from_secs(args.seconds));
            let (rss_after, cpu_after) = (broker.rss_kib()?, broker.cpu_seconds()?);
            let elapsed = started.elapsed().as_secs_f64();
            quiet = Some((
                elapsed,
                rss_after.max(rss_before) as f64 / 1024.0,
                (cpu_after - cpu_before) / elapsed * 100.0,
                connect_secs,
            ));
        }
        if let Some(load) = &load {
            let run = broker_run(load)?;
            check(&run)?;
            if !json_out {
                println!(
                    "round {}: without idle peers {:>8.0} req/s | with {:>8.0} req/s",
                    round + 1,
                    without[round].requests_per_sec,
                    run.requests_per_sec
                );
            }
            with.push(run);
        }
        hosts.stop()?;
    }
    let (elapsed, rss_mb, cpu_percent, connect_secs) = quiet.context("no quiet window ran")?;
    let rate = |runs: &[LoadReport]| median(runs.iter().map(|r| r.requests_per_sec).collect());
    let load_json = args.with_load.then(|| {
        json!({
            "shape": "4 clients × window 250, 64 B bodies, 2 credit echo workers",
            "without_idle_peers": without, "with_idle_peers": with,
            "median_req_per_sec": {"without_idle_peers": rate(&without), "with_idle_peers": rate(&with)},
            "throughput_ratio": rate(&with) / rate(&without),
        })
    });

    if json_out {
        println!(
            "{}",
            json!({"mode": "idle", "broker": binary.describe(), "clients": args.clients,
                   "workers": args.workers, "open_files_limit": fd_limit,
                   "connect_seconds": connect_secs, "seconds": elapsed,
                   "rss_mb_empty": rss_empty as f64 / 1024.0, "rss_mb": rss_mb,
                   "cpu_percent_of_one_core": cpu_percent, "load": load_json})
        );
    } else {
        println!(
            "idle: {} clients, {} workers, heartbeat {} ms, {:.0} s window (peers connected in {connect_secs:.1} s)",
            args.clients, args.workers, args.heartbeat_ms, elapsed
        );
        println!(
            "  broker resident memory {rss_mb:.1} MB ({:.1} MB with no peers), CPU {cpu_percent:.2}% of one core",
            rss_empty as f64 / 1024.0
        );
        if args.with_load {
            println!(
                "  pipelined: median {:.0} req/s with the idle peers / {:.0} req/s without = {:.2}×",
                rate(&with),
                rate(&without),
                rate(&with) / rate(&without)
            );
        }
    }
    Ok(())
}

/// The `--with-load` run: the default `plant bench broker` shape against the child broker.
fn load_args(args: &IdleArgs, endpoint: &str) -> LoadArgs {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        load: LoadArgs,
    }
    let requests = args.requests.to_string();
    let argv = ["load", "--broker", endpoint, "--requests", &requests];
    // Every flag above exists and takes a value of its type.
    Wrap::try_parse_from(argv)
        .expect("the load flags parse")
        .load
}

/// The helper processes holding the idle peers, killed on drop.
struct PeerHosts {
    children: Vec<Child>,
}

impl PeerHosts {
    /// Starts enough `plant bench idle-peers` processes for `args.clients` clients and
    /// `args.workers` workers and returns once each says every one of its peers is connected.
    fn start(args: &IdleArgs, endpoint: &str) -> Result<Self> {
        let me = std::env::current_exe()?;
        let mut hosts = PeerHosts {
            children: Vec::new(),
        };
        let (mut clients, mut workers) = (args.clients, args.workers);
        while clients + workers > 0 {
            let c = clients.min(PEERS_PER_HOST);
            let w = workers.min(PEERS_PER_HOST - c);
            clients -= c;
            workers -= w;
            let child = Command::new(&me)
                .args(["bench", "idle-peers", "--endpoint", endpoint])
                .args(["--clients", &c.to_string(), "--workers", &w.to_string()])
                .args(["--heartbeat-ms", &args.heartbeat_ms.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("cannot start {} bench idle-peers", me.display()))?;
            hosts.children.push(child);
        }
        for child in &mut hosts.children {
            let stdout = child.stdout.take().context("no stdout")?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            if line.trim_end() != "ready" {
                let status = child.wait()?;
                bail!("an idle-peers helper stopped before its peers were connected ({status})");
            }
        }
        Ok(hosts)
    }

    /// Closes each host's stdin (it disconnects its workers and exits) and waits for it.
    fn stop(mut self) -> Result<()> {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        for child in &mut self.children {
            child.wait()?;
        }
        self.children.clear();
        Ok(())
    }
}

impl Drop for PeerHosts {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `plant bench idle-peers`: connects the idle peers, prints `ready`, keeps the workers alive
/// until stdin closes, then disconnects them.
pub fn host_peers(args: PeerHostArgs) -> Result<()> {
    raise_open_files_limit()?;
    let endpoint = &args.endpoint;
    let mut pool = ContextPool::default();
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let s = pool.socket(zmq::DEALER)?;
        s.set_linger(0)?;
        s.connect(endpoint)?;
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
        if s.poll(zmq::POLLIN, 30_000)? == 0 {
            bail!("broker did not answer an idle client's MMI query");
        }
        protocol::recv_frames(s, 0)?;
    }
    let workers: Vec<zmq::Socket> = (0..args.workers)
        .map(|_| -> Result<zmq::Socket> {
            let s = pool.socket(zmq::DEALER)?;
            s.set_linger(0)?;
            s.connect(endpoint)?;
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
    println!("ready");
    let (closed_tx, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = closed_tx.send(());
    });
    keep_alive(&workers, Duration::from_millis(args.heartbeat_ms), || {
        closed.try_recv().is_ok()
    })?;
    for w in &workers {
        send_worker(w, WorkerCommand::Disconnect)?;
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

/// Keeps the idle workers alive until `done()`: answer nothing, heartbeat on schedule, drain
/// broker heartbeats as they come.
fn keep_alive(
    workers: &[zmq::Socket],
    interval: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let mut next = Instant::now();
    while !done() {
        if Instant::now() >= next {
            for w in workers {
                send_worker(w, WorkerCommand::Heartbeat)?;
            }
            next = Instant::now() + interval;
        }
        if workers.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let mut items: Vec<zmq::PollItem> = workers
            .iter()
            .map(|s| s.as_poll_item(zmq::POLLIN))
            .collect();
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        zmq::poll(&mut items, wait.as_millis() as i64)?;
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        for (w, _) in workers.iter().zip(ready).filter(|(_, r)| *r) {
            while protocol::recv_frames(w, zmq::DONTWAIT).is_ok() {}
        }
    }
    Ok(())
}
