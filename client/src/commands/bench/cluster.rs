//! `plant bench cluster`: echo throughput through N in-process brokers, the clients spread over
//! them, against one broker, alternated round by round (DESIGN.md §8's scale-out).
//!
//! Each broker gets `--workers` lean echo worker threads of its own: a worker process serving N
//! brokers keeps one session per broker, and the bench's lean workers are one session each.
//! Client `i` talks to broker `i % N`. On a machine with few cores every broker competes for
//! them with the others and with the load, so the ratio shows what scale-out costs or gains
//! here, not what N hosts would give.

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::json;

use super::load::{self, LoadReport, Transport};
use super::{
    check, echo_workers, load_json, measure, median, peers, shape, spec, wait_for_service,
    InProcessBroker, LoadArgs,
};

/// `plant bench cluster` arguments.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The load, as for `plant bench broker` (`--rounds` alternations).
    #[command(flatten)]
    pub load: LoadArgs,
    /// Brokers of the scaled-out runs.
    #[arg(long, default_value_t = 3)]
    pub brokers: usize,
}

/// Alternates one broker and `--brokers` brokers and reports the throughput ratio.
pub fn run(args: ClusterArgs, json: bool) -> Result<()> {
    let brokers = args.brokers.max(1);
    let load = &args.load;
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for round in 0..load.rounds.max(1) {
        let single = run_on(load, 1)?;
        check(&single)?;
        let spread = run_on(load, brokers)?;
        check(&spread)?;
        if !json {
            println!(
                "round {}: 1 broker {:>7.0} req/s p50 {:>5} µs | {brokers} brokers {:>7.0} req/s p50 {:>5} µs",
                round + 1,
                single.requests_per_sec,
                single.latency_us.p50,
                spread.requests_per_sec,
                spread.latency_us.p50,
            );
        }
        one.push(single);
        many.push(spread);
    }
    let tput = |rs: &[LoadReport]| median(rs.iter().map(|r| r.requests_per_sec).collect());
    let (t1, tn) = (tput(&one), tput(&many));
    if json {
        println!(
            "{}",
            json!({
                "mode": "cluster", "shape": shape(load), "load": load_json(load),
                "brokers": brokers, "one_broker": one, "brokers_runs": many,
                "median_req_per_sec": {"one_broker": t1, "brokers": tn},
                "throughput_ratio": tn / t1,
            })
        );
    } else {
        println!("{} (echo workers per broker)", shape(load));
        println!(
            "  median throughput: {brokers} brokers {tn:.0} req/s / 1 broker {t1:.0} req/s = {:.2}×",
            tn / t1
        );
    }
    Ok(())
}

/// One measurement through `count` fresh in-process brokers, each with its own echo workers.
fn run_on(args: &LoadArgs, count: usize) -> Result<LoadReport> {
    let ctx = zmq::Context::new();
    let brokers = (0..count)
        .map(|_| InProcessBroker::start_with(None, args.broker_io_threads))
        .collect::<Result<Vec<_>>>()?;
    let heartbeat = Duration::from_millis(1000);
    let mut workers = Vec::new();
    for broker in &brokers {
        workers.push(
            peers::mdp_echo_workers(
                &ctx,
                &broker.endpoint,
                &args.service,
                args.protocol,
                echo_workers(args),
                heartbeat,
                None,
            )
            .context("cannot start bench echo workers")?,
        );
        wait_for_service(&broker.endpoint, &args.service, args.protocol, None)?;
    }
    let endpoints: Vec<&str> = brokers.iter().map(|b| b.endpoint.as_str()).collect();
    let spec = spec(args, endpoints.join(","))?;
    let transport = Transport::Mdp {
        service: args.service.clone(),
        dialect: args.protocol,
    };
    Ok(measure(&spec, "cluster", |progress| {
        load::run_load(&ctx, &transport, &spec, progress)
    }))
}
