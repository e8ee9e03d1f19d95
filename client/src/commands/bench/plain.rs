//! `plant bench plain`: pipelined echo through an in-process broker to plain MDP workers (no
//! credit, one request per worker at a time, as third-party workers are), for several worker
//! counts, alternated round by round so every count sees the same machine conditions.
//!
//! Each run reports its throughput, the ratio to the first worker count of the list (1 by
//! default), and the CPU time of the broker's loop thread (the thread named `plantd-broker`, read
//! from `/proc/self/task/<tid>/stat` before and after the run) divided by the run's wall time: the
//! share of one core the broker needs at the rate the workers allow. A plain worker holds one
//! request at a time, so each request costs a full round trip broker→worker→broker before that
//! worker can take the next; the rate grows with the worker count until the broker's loop thread
//! (or the machine) saturates.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use plantd_worker_sdk::protocol::Dialect;
use serde::Serialize;
use serde_json::json;

use super::load::{self, LoadReport, LoadSpec, Transport};
use super::peers::{self, EchoWorkers};
use super::{check, measure, median, wait_for_service, InProcessBroker};

/// Options of `plant bench plain`.
#[derive(Args, Debug, Clone)]
pub struct PlainArgs {
    /// Plain MDP worker counts to alternate (comma-separated); the first is the baseline of the
    /// ratios.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub workers: Vec<usize>,
    /// Rounds: each runs every worker count once, in order.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Total requests per run (split across clients).
    #[arg(long, default_value_t = 50_000)]
    pub requests: u64,
    /// Run each measurement for this many seconds instead of a fixed request count.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Parallel client sockets.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Requests in flight per client (they queue in the broker for a free worker).
    #[arg(long, default_value_t = 250)]
    pub window: usize,
    /// Body bytes per request (at least 16).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

/// One run: a worker count in a round.
#[derive(Debug, Serialize)]
struct PlainRun {
    round: usize,
    workers: usize,
    report: LoadReport,
    /// CPU time of the broker's loop thread during the run.
    broker_loop_cpu_secs: f64,
    /// The same as a share of one core over the run's wall time, in percent.
    broker_loop_cpu_percent: f64,
}

/// Runs the plain-worker comparison.
pub fn run(args: PlainArgs, json_out: bool) -> Result<()> {
    if args.workers.is_empty() || args.workers.contains(&0) {
        bail!("--workers needs one or more worker counts, each at least 1");
    }
    if args.clients == 0 || args.window == 0 {
        bail!("--clients and --window must be at least 1");
    }
    if args.size < 16 {
        bail!("--size must be at least 16 bytes (the bench stamps each body)");
    }
    let mut runs = Vec::new();
    for round in 0..args.rounds.max(1) {
        for &workers in &args.workers {
            let run = plain_run(&args, workers, round + 1)?;
            if !json_out {
                println!(
                    "round {}: {:>2} plain workers {:>8.0} req/s p50 {:>6} µs, broker loop {:>5.1}% of one core",
                    run.round,
                    run.workers,
                    run.report.requests_per_sec,
                    run.report.latency_us.p50,
                    run.broker_loop_cpu_percent
                );
            }
            runs.push(run);
        }
    }
    let rate = |w: usize| {
        median(
            runs.iter()
                .filter(|r| r.workers == w)
                .map(|r| r.report.requests_per_sec)
                .collect(),
        )
    };
    let baseline_workers = args.workers[0];
    let baseline = rate(baseline_workers);
    let summary: Vec<serde_json::Value> = args
        .workers
        .iter()
        .map(|&w| {
            let cpu = median(
                runs.iter()
                    .filter(|r| r.workers == w)
                    .map(|r| r.broker_loop_cpu_percent)
                    .collect(),
            );
            json!({
                "workers": w,
                "median_req_per_sec": rate(w),
                "ratio_to_baseline": rate(w) / baseline,
                "median_broker_loop_cpu_percent": cpu,
            })
        })
        .collect();
    let shape = format!(
        "{} clients × window {}, {} B bodies, plain MDP echo workers (1 session, credit 1 each)",
        args.clients, args.window, args.size
    );
    if json_out {
        println!(
            "{}",
            json!({"mode": "plain", "shape": shape, "baseline_workers": baseline_workers,
                   "runs": runs, "summary": summary})
        );
    } else {
        println!("{shape}");
        for s in &summary {
            println!(
                "  {:>2} workers: median {:>8.0} req/s = {:.2}× {} worker{}, broker loop {:.1}% of one core",
                s["workers"],
                s["median_req_per_sec"].as_f64().unwrap_or_default(),
                s["ratio_to_baseline"].as_f64().unwrap_or_default(),
                baseline_workers,
                if baseline_workers == 1 { "" } else { "s" },
                s["median_broker_loop_cpu_percent"]
                    .as_f64()
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// One run on a fresh in-process broker with `workers` plain echo workers.
fn plain_run(args: &PlainArgs, workers: usize, round: usize) -> Result<PlainRun> {
    let before = broker_threads()?;
    let broker = InProcessBroker::start(None)?;
    let tid = broker_threads()?
        .into_iter()
        .find(|t| !before.contains(t))
        .context("cannot find the in-process broker's loop thread (plantd-broker)")?;
    let ctx = zmq::Context::new();
    let service = "bench.plain";
    let _workers = peers::mdp_echo_workers(
        &ctx,
        &broker.endpoint,
        service,
        Dialect::V02,
        EchoWorkers {
            threads: workers,
            sessions: 1,
            credit: 1,
        },
        Duration::from_millis(1000),
        None,
    )
    .context("cannot start plain echo workers")?;
    wait_for_service(&broker.endpoint, service, Dialect::V02, None)?;
    let spec = LoadSpec {
        endpoint: broker.endpoint.clone(),
        clients: args.clients,
        window: args.window,
        size: args.size,
        requests: args.requests.max(args.clients as u64),
        duration: args.duration.map(Duration::from_secs_f64),
        reply_timeout: Duration::from_secs(10),
        curve: None,
    };
    let transport = Transport::Mdp {
        service: service.into(),
        dialect: Dialect::V02,
    };
    let ticks_before = thread_cpu_ticks(tid)?;
    let report = measure(&spec, "plain", |progress| {
        load::run_load(&ctx, &transport, &spec, progress)
    });
    let ticks_after = thread_cpu_ticks(tid)?;
    check(&report)?;
    let broker_loop_cpu_secs =
        (ticks_after - ticks_before) as f64 / super::process::CLOCK_TICKS_PER_SEC;
    Ok(PlainRun {
        round,
        workers,
        broker_loop_cpu_percent: broker_loop_cpu_secs / report.seconds.max(1e-9) * 100.0,
        broker_loop_cpu_secs,
        report,
    })
}

/// Thread ids of this process's threads named `plantd-broker` (broker loop threads).
fn broker_threads() -> Result<Vec<u32>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").context("cannot list /proc/self/task")? {
        let entry = entry?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "plantd-broker" {
            if let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) {
                tids.push(tid);
            }
        }
    }
    Ok(tids)
}

/// CPU time (user + system, clock ticks) of thread `tid` of this process.
fn thread_cpu_ticks(tid: u32) -> Result<u64> {
    super::process::stat_cpu_ticks(&format!("/proc/self/task/{tid}/stat"))
}
