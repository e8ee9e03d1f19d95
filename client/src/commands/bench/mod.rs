//! `plant bench`: measure the broker against the bare-libzmq ceiling on this machine.
//!
//! - `plant bench broker`: echo traffic through a broker (an in-process one on a free port unless
//!   `--broker` names a running one), with lean MDP echo workers started by the bench (credit
//!   workers by default, `--credit 1` for plain MDP). `--compare-ceiling` alternates the ceilings
//!   and the broker and prints the ratios, the figures that stay stable on noisy machines.
//!   `--sdk-client blocking|async` sends the requests through the SDK's clients instead of raw
//!   sockets, to see what the client costs.
//!   `--curve` alternates in-process brokers with and without CURVE, pipelined and synchronous,
//!   and prints the CURVE/NULL ratios (`curve.rs`).
//! - `plant bench ceiling`: the same traffic through a bare ROUTER↔DEALER `zmq_proxy`;
//!   `--mdp-frames` frames it like MDP client requests.
//! - `plant bench cluster`: the same echo load spread over N in-process brokers against one
//!   broker, alternated (`cluster.rs`).
//! - `plant bench state`: state-set/state-get against echo through an in-process broker.
//! - `plant bench state-postgres --dsn ...`: the state service on PostgreSQL against SQLite,
//!   interleaved (`state_postgres.rs`).
//! - `plant bench proxy`: echo through the HTTP proxy against the same echo over MDP with the
//!   async client, interleaved, plus a bare axum route (`proxy.rs`).
//! - `plant bench nats`: plantd with SDK workers and clients against NATS request-reply with
//!   async-nats peers, same shape, interleaved (`nats.rs`).
//! - `plant bench idle`: a `plantd-broker` child process with 1,000 idle clients and 100 idle
//!   workers (`--clients`, `--workers`); reports its resident memory and CPU use, and with
//!   `--with-load` a pipelined run with and without the idle peers, alternated (`idle.rs`).
//! - `plant bench churn`: a `plantd-broker` child process through which many short-lived clients
//!   each make one request; reports its resident memory before and after (`churn.rs`).
//! - `plant bench plain`: pipelined echo to 1, 2, 4, 8... plain MDP workers (no credit),
//!   alternated; reports the throughput ratios and the broker loop thread's CPU (`plain.rs`).
//! - `plant bench memory`: a `plantd-broker` child process under a load (malformed messages, a
//!   client that never reads, abandoned services); reports its resident memory before, at the
//!   peak and after the load.
//! - `plant bench floor`: a bare libzmq DEALER↔ROUTER echo against a bare TCP echo, interleaved:
//!   the per-message floor libzmq sets under everything above (`floor.rs`).
//!
//! Method and results: `docs/benchmarks.md`.

mod bus;
mod churn;
mod cluster;
mod curve;
mod floor;
mod idle;
mod load;
mod memory;
mod nats;
mod peers;
mod plain;
mod process;
mod proxy;
mod sdk_clients;
mod state;
mod state_postgres;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::testing::free_endpoint;
use plantd_worker_sdk::Shutdown;
use serde_json::json;

use load::{LoadReport, LoadSpec, Transport};
use sdk_clients::SdkClient;

/// `plant bench` subcommands.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Echo traffic through the MDP broker.
    Broker(LoadArgs),
    /// The same traffic through a bare libzmq ROUTER↔DEALER proxy (the ceiling).
    Ceiling(LoadArgs),
    /// Echo through N brokers, clients spread over them, against one broker, alternated.
    Cluster(cluster::ClusterArgs),
    /// Broker memory and CPU with many idle clients and workers.
    Idle(idle::IdleArgs),
    /// Holds idle peers for `bench idle` (a helper process it starts).
    #[command(hide = true)]
    IdlePeers(idle::PeerHostArgs),
    /// Broker memory after many clients that each connect, make one request and disconnect.
    Churn(churn::ChurnArgs),
    /// Pipelined echo to plain MDP workers (no credit), for several worker counts, alternated;
    /// reports the ratios and the broker loop thread's CPU.
    Plain(plain::PlainArgs),
    /// Pub/sub throughput through a broker bus vs. a bare XSUB/XPUB proxy and PUSH→PULL.
    Bus(bus::BusArgs),
    /// State service set/get throughput as ratios to echo through the same broker.
    State(state::StateBenchArgs),
    /// The state service on PostgreSQL against the same on SQLite, interleaved.
    StatePostgres(state_postgres::StatePostgresArgs),
    /// Echo through the HTTP proxy vs. the same over MDP, interleaved, and a bare axum route.
    Proxy(proxy::ProxyBenchArgs),
    /// Broker resident memory before, at the peak and after a load (does memory come back?).
    Memory(memory::MemoryArgs),
    /// plantd (SDK workers and async clients) against NATS request-reply (nats-server,
    /// async-nats), pipelined and synchronous, interleaved.
    Nats(nats::NatsArgs),
    /// A bare libzmq DEALER↔ROUTER echo against a bare TCP echo, pipelined and synchronous,
    /// interleaved: the floor libzmq sets.
    Floor(floor::FloorArgs),
    /// Runs the broker library in this process, configured from the environment like
    /// plantd-broker (what `bench memory` and `bench idle` start when there is no plantd-broker
    /// binary).
    #[command(hide = true)]
    ServeBroker,
}

/// Shape of a load run.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Total requests per run (split across clients).
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
    /// Parallel client sockets.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Requests in flight per client (pipelining).
    #[arg(long, default_value_t = 250)]
    pub window: usize,
    /// Body bytes per request (at least 16).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Echo worker threads (or proxy echo peers) the bench starts; 0 uses workers already
    /// registered.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// MDP worker sessions per echo worker thread (the SDK's `concurrency`). Default: 1, or with
    /// `--credit 1` enough for every request in flight, at most 64 per thread.
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Requests each echo worker session may hold at once (plantd's credit extension, the SDK's
    /// `credit`; 1 is plain MDP, one request per session at a time). Default: enough for every
    /// request in flight.
    #[arg(long)]
    pub credit: Option<u32>,
    /// MDP dialect of the bench's clients, workers and preflight check: the global `--protocol`
    /// (which, global, may follow the subcommand: `plant bench broker --protocol 0.1`).
    #[arg(skip)]
    pub protocol: Dialect,
    /// Run each measurement for this many seconds instead of a fixed request count.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Use a running broker at this endpoint instead of starting one in-process.
    #[arg(long)]
    pub broker: Option<String>,
    /// libzmq I/O threads of the in-process broker's MDP socket (its `io_threads` setting).
    #[arg(long, default_value_t = 1)]
    pub broker_io_threads: i32,
    /// Service to call (with `--workers 0`, an existing one such as org.plantd.module.Echo).
    #[arg(long, default_value = "bench.echo")]
    pub service: String,
    /// Alternate ceiling and broker runs and report the ratios (broker only): against the bare
    /// ceiling and against the ceiling carrying MDP-framed messages.
    #[arg(long)]
    pub compare_ceiling: bool,
    /// Echo workers are SDK `Worker`s (one worker, `--workers` × `--sessions` sessions, handler
    /// on its session thread) instead of the bench's lean MDP loop: what a service built on the
    /// SDK gets.
    #[arg(long)]
    pub sdk_workers: bool,
    /// With `--sdk-workers`: the echo handler is an inline one (`WorkerBuilder::inline_handler`,
    /// run on the session's thread) instead of a handler thread's.
    #[arg(long, requires = "sdk_workers")]
    pub inline_handler: bool,
    /// Broker only: send the requests through the SDK's `Client` (`--window` threads per client)
    /// or `AsyncClient` (`--window` requests in flight per client) instead of raw DEALER sockets,
    /// so the run includes the client's own cost.
    #[arg(long, value_enum)]
    pub sdk_client: Option<SdkClient>,
    /// Ceiling only: frame each message like an MDP client request (header, command, service,
    /// body) instead of one bare frame, so the proxy moves as many frames as MDP needs.
    #[arg(long)]
    pub mdp_frames: bool,
    /// Alternations with --compare-ceiling or --curve.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Broker only: alternate in-process brokers with CURVE (keys made for the run) and without,
    /// pipelined (--window) and synchronous (window 1), and report the CURVE/NULL ratios.
    #[arg(long)]
    pub curve: bool,
}

/// Runs a bench subcommand speaking `protocol` (the global `--protocol`); `json` selects
/// machine-readable output.
pub fn run(command: BenchCommand, protocol: Dialect, json: bool) -> Result<()> {
    let command = match command {
        BenchCommand::Broker(args) => BenchCommand::Broker(LoadArgs { protocol, ..args }),
        BenchCommand::Ceiling(args) => BenchCommand::Ceiling(LoadArgs { protocol, ..args }),
        BenchCommand::Cluster(args) => BenchCommand::Cluster(cluster::ClusterArgs {
            load: LoadArgs {
                protocol,
                ..args.load
            },
            ..args
        }),
        other => other,
    };
    match command {
        BenchCommand::Broker(args) if args.curve => curve::compare(&args, json),
        BenchCommand::Broker(args) if args.compare_ceiling => compare(&args, json),
        BenchCommand::Broker(args) => {
            let report = broker_run(&args)?;
            print_report("broker", &args, &report, json);
            check(&report)
        }
        BenchCommand::Ceiling(args) => {
            let report = ceiling_run(&args, args.mdp_frames)?;
            print_report("ceiling", &args, &report, json);
            check(&report)
        }
        BenchCommand::Cluster(args) => cluster::run(args, json),
        BenchCommand::Idle(args) => idle::run(args, json),
        BenchCommand::IdlePeers(args) => idle::host_peers(args),
        BenchCommand::Churn(args) => churn::run(args, json),
        BenchCommand::Plain(args) => plain::run(args, json),
        BenchCommand::Bus(args) => bus::run(args, json),
        BenchCommand::State(args) => state::run(args, json),
        BenchCommand::StatePostgres(args) => state_postgres::run(args, json),
        BenchCommand::Memory(args) => memory::run(args, json),
        BenchCommand::Nats(args) => nats::run(args, json),
        BenchCommand::Floor(args) => floor::run(args, json),
        BenchCommand::Proxy(args) => proxy::run(args, json),
        BenchCommand::ServeBroker => serve_broker(),
    }
}

/// `plant bench serve-broker`: the broker as `plantd-broker` runs it, without its flags.
fn serve_broker() -> Result<()> {
    #[derive(serde::Serialize)]
    struct NoFlags {}
    plantd_worker_sdk::service::main(
        "broker",
        "plantd-broker",
        &plantd_worker_sdk::service::CommonArgs::default(),
        NoFlags {},
        plantd_broker::run,
    )?;
    Ok(())
}

fn check(report: &LoadReport) -> Result<()> {
    if report.errors > 0 {
        bail!(
            "{} requests failed: {}",
            report.errors,
            report.first_error.as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}

fn spec(args: &LoadArgs, endpoint: String) -> Result<LoadSpec> {
    if args.clients == 0 || args.window == 0 {
        bail!("--clients and --window must be at least 1");
    }
    if args.size < 16 {
        bail!("--size must be at least 16 bytes (the bench stamps each body)");
    }
    Ok(LoadSpec {
        endpoint,
        clients: args.clients,
        window: args.window,
        size: args.size,
        requests: args.requests.max(args.clients as u64),
        duration: args.duration.map(Duration::from_secs_f64),
        reply_timeout: Duration::from_secs(10),
        curve: None,
    })
}

/// An in-process broker on a free port, and any services run beside it; all stopped on drop.
struct InProcessBroker {
    endpoint: String,
    shutdown: Shutdown,
    runtime: tokio::runtime::Runtime,
    /// The broker first, then the services, each reduced to "has it ended".
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl InProcessBroker {
    /// Starts the broker (free MDP and health ports on loopback, no buses, so it never meets a
    /// running system), with CURVE if `curve` is given, and returns once it answers MMI; a broker
    /// that cannot start is an error saying why (a taken port names the port).
    fn start(keys: Option<&curve::BenchKeys>) -> Result<Self> {
        InProcessBroker::start_with(keys, 1)
    }

    /// [`start`](Self::start) with `io_threads` libzmq I/O threads for the broker's MDP socket.
    fn start_with(keys: Option<&curve::BenchKeys>, io_threads: i32) -> Result<Self> {
        let endpoint = free_endpoint();
        let config = plantd_broker::BrokerConfig {
            endpoint: endpoint.clone(),
            health_host: "127.0.0.1".into(),
            health_port: plantd_worker_sdk::testing::free_port(),
            // The buses bind fixed default ports, which a running plantd holds.
            bus: plantd_broker::bus::BusSettings::disabled(),
            curve: keys.map(|k| k.settings.clone()).unwrap_or_default(),
            io_threads,
            ..Default::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let mut broker = InProcessBroker {
            endpoint,
            shutdown: Shutdown::new(),
            runtime,
            tasks: Vec::new(),
        };
        let (ended_tx, ended) = std::sync::mpsc::channel();
        let run = plantd_broker::run(config, broker.shutdown.clone());
        broker.tasks.push(broker.runtime.spawn(async move {
            let _ = ended_tx.send(run.await);
        }));
        let client = plantd_worker_sdk::Client::connect_with(
            &broker.endpoint,
            keys.map(|k| k.client.clone()),
        )?
        .with_timeout(Duration::from_millis(500));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while client.broker_info().is_err() {
            if let Ok(ended) = ended.try_recv() {
                match ended {
                    Err(e) => bail!("the bench's broker could not start: {e}"),
                    Ok(()) => bail!("the bench's broker stopped at startup"),
                }
            }
            if std::time::Instant::now() > deadline {
                bail!("the bench's broker at {} did not answer", broker.endpoint);
            }
        }
        Ok(broker)
    }

    /// Runs a service (`run(config, shutdown)` future) on the broker's runtime until drop.
    fn spawn<F, E>(&mut self, service: F)
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        self.tasks.push(self.runtime.spawn(async move {
            let _ = service.await;
        }));
    }
}

impl Drop for InProcessBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        // Services stop within a second or two; never hang the bench on them.
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), async {
                for task in tasks {
                    let _ = task.await;
                }
            })
            .await
        });
    }
}

fn broker_run(args: &LoadArgs) -> Result<LoadReport> {
    broker_run_on(args, None)
}

/// [`broker_run`], on a CURVE broker when `keys` are given (in-process only).
fn broker_run_on(args: &LoadArgs, keys: Option<&curve::BenchKeys>) -> Result<LoadReport> {
    let ctx = zmq::Context::new();
    let local = match &args.broker {
        Some(_) if keys.is_some() => bail!("--curve starts its own brokers; drop --broker"),
        Some(_) => None,
        None => Some(InProcessBroker::start_with(keys, args.broker_io_threads)?),
    };
    let endpoint = args
        .broker
        .clone()
        .or_else(|| local.as_ref().map(|b| b.endpoint.clone()))
        .unwrap_or_default();
    let shape = echo_workers(args);
    let heartbeat = Duration::from_millis(1000);
    let (_lean, _sdk) = if args.sdk_workers && shape.threads > 0 {
        let sdk = peers::sdk_echo_workers(
            &endpoint,
            &args.service,
            args.protocol,
            shape,
            heartbeat,
            keys.map(|k| k.worker.clone()),
            args.inline_handler,
        )
        .context("cannot start SDK echo workers")?;
        (None, Some(sdk))
    } else {
        let lean = peers::mdp_echo_workers(
            &ctx,
            &endpoint,
            &args.service,
            args.protocol,
            shape,
            heartbeat,
            keys.map(|k| &k.worker),
        )
        .context("cannot start bench echo workers")?;
        (Some(lean), None)
    };
    let client_keys = keys.map(|k| k.client.clone());
    wait_for_service(&endpoint, &args.service, args.protocol, client_keys.clone())?;
    let mut spec = spec(args, endpoint)?;
    spec.curve = client_keys;
    if let Some(kind) = args.sdk_client {
        return Ok(measure(&spec, "broker", |progress| {
            sdk_clients::run_load(kind, &args.service, args.protocol, &spec, &progress)
        }));
    }
    let transport = Transport::Mdp {
        service: args.service.clone(),
        dialect: args.protocol,
    };
    Ok(measure(&spec, "broker", |progress| {
        load::run_load(&ctx, &transport, &spec, progress)
    }))
}

/// Sessions and credit of the bench's echo workers: unless told otherwise, every request in flight
/// finds a place at a worker, through credit (one session per thread) or, with `--credit 1`,
/// through sessions.
fn echo_workers(args: &LoadArgs) -> peers::EchoWorkers {
    let threads = args.workers;
    let per_thread = (args.clients * args.window).div_ceil(threads.max(1));
    let max_credit = plantd_worker_sdk::protocol::credit::MAX_CREDIT;
    let (sessions, credit) = match (args.sessions, args.credit) {
        (Some(sessions), Some(credit)) => (sessions, credit),
        (Some(sessions), None) => (sessions, 1),
        (None, Some(credit)) => (
            per_thread.div_ceil(credit.max(1) as usize).clamp(1, 64),
            credit,
        ),
        (None, None) => (1, (per_thread as u32).clamp(1, max_credit)),
    };
    peers::EchoWorkers {
        threads,
        sessions: sessions.max(1),
        credit: credit.clamp(1, max_credit),
    }
}

/// The same load through the bare proxy; `mdp_frames` frames it like MDP client requests.
fn ceiling_run(args: &LoadArgs, mdp_frames: bool) -> Result<LoadReport> {
    let ctx = zmq::Context::new();
    let frontend = free_endpoint();
    let _proxy = peers::ceiling_proxy(&ctx, &frontend, &free_endpoint(), args.workers.max(1))
        .context("cannot start the ceiling proxy")?;
    let transport = if mdp_frames {
        Transport::RawMdpShaped {
            service: args.service.clone(),
        }
    } else {
        Transport::Raw
    };
    let spec = spec(args, frontend)?;
    Ok(measure(&spec, "ceiling", |progress| {
        load::run_load(&ctx, &transport, &spec, progress)
    }))
}

/// Waits until `mmi.service` says `service` has a worker, asking in `protocol`: the dialect of the
/// run itself, so a broker that speaks only that one (a zguide broker, 0.1) can answer.
fn wait_for_service(
    endpoint: &str,
    service: &str,
    protocol: Dialect,
    curve: Option<plantd_worker_sdk::curve::ClientCurve>,
) -> Result<()> {
    let client = plantd_worker_sdk::Client::connect_with(endpoint, curve)?
        .with_timeout(Duration::from_secs(2))
        .with_dialect(protocol);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !client.service_available(service).unwrap_or(false) {
        if std::time::Instant::now() > deadline {
            bail!("no worker for {service} registered at {endpoint}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs the load (`run`, counting completed replies in its argument) with a progress bar on a
/// terminal.
fn measure(
    spec: &LoadSpec,
    label: &str,
    run: impl FnOnce(Arc<AtomicU64>) -> LoadReport,
) -> LoadReport {
    let progress = Arc::new(AtomicU64::new(0));
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = match spec.duration {
            Some(_) => indicatif::ProgressBar::new_spinner(),
            None => indicatif::ProgressBar::new(spec.requests),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>8} {bar:40} {pos}/{len} {per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(label.to_owned());
        bar
    });
    let report = std::thread::scope(|scope| {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(bar) = &bar {
            let (progress, done) = (progress.clone(), done.clone());
            scope.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    bar.set_position(progress.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        let report = run(progress.clone());
        done.store(true, Ordering::Relaxed);
        report
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report
}

fn shape(args: &LoadArgs) -> String {
    let w = echo_workers(args);
    let workers = if args.workers == 0 {
        format!("the workers already registered for {}", args.service)
    } else {
        format!(
            "{} {}workers × {} sessions × credit {}",
            args.workers,
            if args.sdk_workers { "SDK " } else { "" },
            w.sessions,
            w.credit
        )
    };
    let clients = match args.sdk_client {
        Some(kind) => format!("{} SDK {} clients", args.clients, kind.name()),
        None => format!("{} clients", args.clients),
    };
    format!(
        "{clients} × window {}, {} B bodies, {workers}, MDP/{}",
        args.window,
        args.size,
        args.protocol.name()
    )
}

/// The run's shape for `--output json`: the same facts as [`shape`], as fields.
fn load_json(args: &LoadArgs) -> serde_json::Value {
    let w = echo_workers(args);
    json!({
        "clients": args.clients, "window": args.window, "size": args.size,
        "sdk_client": args.sdk_client.map(SdkClient::name),
        "protocol": args.protocol.name(),
        "workers": {
            "threads": args.workers, "sessions": w.sessions, "credit": w.credit,
            "sdk": args.sdk_workers, "existing": args.workers == 0,
        },
    })
}

fn print_report(label: &str, args: &LoadArgs, r: &LoadReport, json: bool) {
    if json {
        println!(
            "{}",
            json!({ "mode": label, "shape": shape(args), "load": load_json(args), "report": r })
        );
        return;
    }
    println!("{label}: {}", shape(args));
    println!(
        "  {:>10.0} req/s  p50 {} µs  p90 {} µs  p99 {} µs  max {} µs  ({} ok, {} errors, {:.2} s)",
        r.requests_per_sec,
        r.latency_us.p50,
        r.latency_us.p90,
        r.latency_us.p99,
        r.latency_us.max,
        r.completed,
        r.errors,
        r.seconds
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Alternates the two ceilings and the broker so all see the same machine conditions.
fn compare(args: &LoadArgs, json: bool) -> Result<()> {
    let mut ceiling = Vec::new();
    let mut framed = Vec::new();
    let mut broker = Vec::new();
    for round in 0..args.rounds.max(1) {
        let c = ceiling_run(args, false)?;
        check(&c)?;
        let f = ceiling_run(args, true)?;
        check(&f)?;
        let b = broker_run(args)?;
        check(&b)?;
        if !json {
            println!(
                "round {}: ceiling {:>7.0} req/s p50 {:>5} µs | MDP-framed ceiling {:>7.0} req/s p50 {:>5} µs | broker {:>7.0} req/s p50 {:>5} µs",
                round + 1,
                c.requests_per_sec,
                c.latency_us.p50,
                f.requests_per_sec,
                f.latency_us.p50,
                b.requests_per_sec,
                b.latency_us.p50
            );
        }
        ceiling.push(c);
        framed.push(f);
        broker.push(b);
    }
    let tput = |rs: &[LoadReport]| median(rs.iter().map(|r| r.requests_per_sec).collect());
    let p50 = |rs: &[LoadReport]| median(rs.iter().map(|r| r.latency_us.p50 as f64).collect());
    let (ct, ft, bt) = (tput(&ceiling), tput(&framed), tput(&broker));
    let (cl, fl, bl) = (p50(&ceiling), p50(&framed), p50(&broker));
    if json {
        println!(
            "{}",
            json!({
                "mode": "compare", "shape": shape(args), "load": load_json(args),
                "ceiling": ceiling, "mdp_framed_ceiling": framed, "broker": broker,
                "median_req_per_sec": {"ceiling": ct, "mdp_framed_ceiling": ft, "broker": bt},
                "median_p50_us": {"ceiling": cl, "mdp_framed_ceiling": fl, "broker": bl},
                "throughput_ratio": bt / ct, "p50_latency_ratio": bl / cl,
                "throughput_ratio_mdp_framed": bt / ft, "p50_latency_ratio_mdp_framed": bl / fl,
            })
        );
    } else {
        println!("{}", shape(args));
        // The MDP-framed ceiling moves the same frames as the broker: that ratio is the one a
        // broker can approach (docs/benchmarks.md), so it comes first.
        println!(
            "  median throughput: broker {bt:.0} req/s / MDP-framed ceiling {ft:.0} req/s = {:.2}× (bare ceiling {ct:.0} req/s: {:.2}×)",
            bt / ft,
            bt / ct
        );
        println!(
            "  median p50 latency: broker {bl:.0} µs / MDP-framed ceiling {fl:.0} µs = {:.2}× (bare ceiling {cl:.0} µs: {:.2}×)",
            bl / fl,
            bl / cl
        );
    }
    Ok(())
}
