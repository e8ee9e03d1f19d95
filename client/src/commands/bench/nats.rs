//! `plant bench nats`: plantd against NATS request-reply, the system users would pick instead,
//! in one interleaved run of the same shape (issue 16's target 0).
//!
//! - **plantd**: an in-process broker, `--workers` SDK echo workers (credit covering every request
//!   in flight) and SDK `AsyncClient`s, exactly `plant bench broker --sdk-workers --sdk-client
//!   async`.
//! - **NATS**: Debian's `nats-server` started for the run on a free loopback port,
//!   `--workers` async-nats responders in one queue group (each its own connection, on a runtime of
//!   one thread, like an SDK worker), and async-nats requesters with `--window` requests in flight
//!   each on a current-thread runtime of their own (like the SDK's async client).
//!
//! - **plantd, lean peers**: the same broker with the bench's lean MDP echo workers and raw DEALER
//!   clients (`plant bench broker`), to tell what the broker costs from what the SDK's peers cost.
//!
//! Each round measures both pipelined (`--clients` × `--window`) and synchronous (`--clients` ×
//! window 1) and the ratios are of the medians: plantd's throughput over NATS's, and plantd's p50
//! over NATS's.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use tokio::task::JoinSet;

use super::load::{payload, run_clients, ClientOutcome, LoadReport, LoadSpec};
use super::sdk_clients::SdkClient;
use super::{broker_run, check, measure, median, LoadArgs};

/// The subject the NATS responders serve.
const SUBJECT: &str = "bench.echo";

/// `plant bench nats` arguments.
#[derive(Args, Debug, Clone)]
pub struct NatsArgs {
    /// The nats-server binary (Debian's `nats-server` package).
    #[arg(long, default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// Parallel clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Requests in flight per client in the pipelined runs.
    #[arg(long, default_value_t = 250)]
    pub window: usize,
    /// Body bytes per request (at least 16).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Echo workers (plantd) and responders (NATS).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Alternations.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// plantd's SDK echo workers use an inline handler (run on the session's thread,
    /// `WorkerBuilder::inline_handler`), as a NATS responder runs its handler in its own task.
    #[arg(long)]
    pub inline_handler: bool,
}

/// One round's four measurements.
#[derive(serde::Serialize)]
struct Round {
    nats_pipelined: LoadReport,
    plantd_pipelined: LoadReport,
    lean_pipelined: LoadReport,
    nats_synchronous: LoadReport,
    plantd_synchronous: LoadReport,
    lean_synchronous: LoadReport,
}

/// Runs the comparison and prints the ratios.
pub fn run(args: NatsArgs, json: bool) -> Result<()> {
    if args.clients == 0 || args.window == 0 || args.workers == 0 || args.size < 16 {
        bail!("--clients, --window and --workers must be at least 1, --size at least 16");
    }
    let server = NatsServer::start(&args.nats_server)?;
    let responders = Responders::start(&server.url, args.workers)?;
    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        let r = Round {
            nats_pipelined: nats_run(&args, &server.url, args.window)?,
            plantd_pipelined: plantd_run(&args, args.window, true)?,
            lean_pipelined: plantd_run(&args, args.window, false)?,
            nats_synchronous: nats_run(&args, &server.url, 1)?,
            plantd_synchronous: plantd_run(&args, 1, true)?,
            lean_synchronous: plantd_run(&args, 1, false)?,
        };
        if !json {
            println!(
                "round {}: pipelined NATS {:>7.0}, plantd SDK {:>7.0}, lean {:>7.0} req/s | synchronous p50 NATS {:>4}, plantd SDK {:>4}, lean {:>4} µs",
                round + 1,
                r.nats_pipelined.requests_per_sec,
                r.plantd_pipelined.requests_per_sec,
                r.lean_pipelined.requests_per_sec,
                r.nats_synchronous.latency_us.p50,
                r.plantd_synchronous.latency_us.p50,
                r.lean_synchronous.latency_us.p50,
            );
        }
        rounds.push(r);
    }
    drop(responders);
    let tput = |f: fn(&Round) -> &LoadReport| {
        median(rounds.iter().map(|r| f(r).requests_per_sec).collect())
    };
    let p50 = |f: fn(&Round) -> &LoadReport| {
        median(rounds.iter().map(|r| f(r).latency_us.p50 as f64).collect())
    };
    let (nt, pt) = (tput(|r| &r.nats_pipelined), tput(|r| &r.plantd_pipelined));
    let (nl, pl) = (p50(|r| &r.nats_synchronous), p50(|r| &r.plantd_synchronous));
    let (lt, ll) = (tput(|r| &r.lean_pipelined), p50(|r| &r.lean_synchronous));
    let shape = format!(
        "{} clients × window {} (synchronous: window 1), {} B bodies, {} echo workers / responders, {} s per measurement",
        args.clients, args.window, args.size, args.workers, args.duration
    );
    if json {
        println!(
            "{}",
            json!({
                "mode": "nats", "shape": shape, "rounds": rounds,
                "median_req_per_sec": {"nats": nt, "plantd": pt, "plantd_lean": lt},
                "median_synchronous_p50_us": {"nats": nl, "plantd": pl, "plantd_lean": ll},
                "throughput_ratio": pt / nt, "p50_latency_ratio": pl / nl,
                "lean_throughput_ratio": lt / nt, "lean_p50_latency_ratio": ll / nl,
            })
        );
    } else {
        println!("{shape}");
        println!(
            "  median pipelined throughput: plantd SDK {pt:.0} req/s / NATS {nt:.0} req/s = {:.2}× (lean peers {lt:.0} req/s: {:.2}×)",
            pt / nt,
            lt / nt
        );
        println!(
            "  median synchronous p50: plantd SDK {pl:.0} µs / NATS {nl:.0} µs = {:.2}× (lean peers {ll:.0} µs: {:.2}×)",
            pl / nl,
            ll / nl
        );
    }
    Ok(())
}

/// plantd's side: `plant bench broker --sdk-workers --sdk-client async` with this shape, or with
/// the bench's lean peers (`plant bench broker`) unless `sdk`.
fn plantd_run(args: &NatsArgs, window: usize, sdk: bool) -> Result<LoadReport> {
    let load = LoadArgs {
        requests: 0,
        clients: args.clients,
        window,
        size: args.size,
        workers: args.workers,
        sessions: None,
        credit: None,
        protocol: Default::default(),
        duration: Some(args.duration),
        broker: None,
        broker_io_threads: 1,
        service: "bench.echo".to_owned(),
        compare_ceiling: false,
        sdk_workers: sdk,
        inline_handler: sdk && args.inline_handler,
        sdk_client: sdk.then_some(SdkClient::Async),
        mdp_frames: false,
        rounds: 1,
        curve: false,
    };
    let report = broker_run(&load)?;
    check(&report)?;
    Ok(report)
}

/// NATS's side: `--clients` requesters with `window` requests in flight each.
fn nats_run(args: &NatsArgs, url: &str, window: usize) -> Result<LoadReport> {
    let spec = LoadSpec {
        endpoint: url.to_owned(),
        clients: args.clients,
        window,
        size: args.size,
        requests: 0,
        duration: Some(Duration::from_secs_f64(args.duration)),
        reply_timeout: Duration::from_secs(10),
        curve: None,
    };
    let report = measure(&spec, "nats", |progress| {
        run_clients(&spec, |id, _, deadline| {
            requester(&spec, id, deadline.unwrap_or_else(Instant::now), &progress)
        })
    });
    check(&report)?;
    Ok(report)
}

/// One NATS requester: its own connection and current-thread runtime, `spec.window` requests in
/// flight until `deadline`, each reply checked against its request.
fn requester(spec: &LoadSpec, id: u64, deadline: Instant, progress: &AtomicU64) -> ClientOutcome {
    let mut outcome = ClientOutcome::new();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            outcome.fail(format!("runtime: {e}"));
            return outcome;
        }
    };
    runtime.block_on(async {
        let client = match async_nats::connect(&spec.endpoint).await {
            Ok(client) => client,
            Err(e) => {
                outcome.fail(format!("connect: {e}"));
                return;
            }
        };
        let mut tasks = JoinSet::new();
        let mut next = 0u64;
        loop {
            while tasks.len() < spec.window && Instant::now() < deadline {
                let (client, seq) = (client.clone(), next);
                let body = payload(id, seq, spec.size);
                tasks.spawn(async move {
                    let sent = Instant::now();
                    let reply = client.request(SUBJECT, body.into()).await;
                    (seq, sent, reply)
                });
                next += 1;
            }
            match tasks.join_next().await {
                Some(Ok((seq, sent, Ok(message))))
                    if *message.payload == *payload(id, seq, spec.size) =>
                {
                    let _ = outcome.histogram.record(sent.elapsed().as_micros() as u64);
                    outcome.completed += 1;
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok((_, _, Ok(_)))) => outcome.fail("reply does not match its request".into()),
                Some(Ok((_, _, Err(e)))) => outcome.fail(format!("request: {e}")),
                Some(Err(e)) => outcome.fail(format!("request task: {e}")),
                None => return,
            }
        }
    });
    outcome
}

/// The echo responders: one connection each, in queue group `echo`, each on a runtime of one
/// thread. Stopped on drop.
struct Responders {
    runtimes: Vec<tokio::runtime::Runtime>,
}

impl Responders {
    fn start(url: &str, count: usize) -> Result<Responders> {
        let mut runtimes = Vec::new();
        for _ in 0..count {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let client = runtime
                .block_on(async_nats::connect(url))
                .with_context(|| format!("cannot connect a responder to {url}"))?;
            let mut requests = runtime
                .block_on(client.queue_subscribe(SUBJECT, "echo".into()))
                .context("cannot subscribe a responder")?;
            // The subscription is registered at the server once a round trip has passed.
            runtime.block_on(client.flush())?;
            runtime.spawn(async move {
                while let Some(request) = requests.next().await {
                    if let Some(reply) = request.reply {
                        let _ = client.publish(reply, request.payload).await;
                    }
                }
            });
            runtimes.push(runtime);
        }
        Ok(Responders { runtimes })
    }
}

impl Drop for Responders {
    fn drop(&mut self) {
        for runtime in self.runtimes.drain(..) {
            runtime.shutdown_background();
        }
    }
}

/// A `nats-server` child on a free loopback port, killed on drop.
struct NatsServer {
    url: String,
    child: Child,
}

impl NatsServer {
    fn start(binary: &std::path::Path) -> Result<NatsServer> {
        let port = plantd_worker_sdk::testing::free_port();
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {} (Debian: apt-get install nats-server; or --nats-server PATH)",
                    binary.display()
                )
            })?;
        let mut server = NatsServer {
            url: format!("nats://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("nats-server exited at startup: {status}");
            }
            if Instant::now() > deadline {
                bail!("nats-server did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
