//! `plant bench broker --curve`: what CURVE costs through the broker. Each round runs the same
//! load on a fresh in-process broker without CURVE (NULL) and with it (keys made for the run,
//! clients and echo workers all CURVE), pipelined (`--window` requests in flight per client) and
//! synchronous (one at a time), alternating so both see the same machine; medians and the
//! CURVE/NULL ratios are printed (`docs/benchmarks.md`).

use anyhow::Result;
use plantd_broker::security::CurveSettings;
use plantd_worker_sdk::curve::{write_key_pair, ClientCurve};
use serde_json::json;

use super::load::LoadReport;
use super::{broker_run_on, check, median, shape, LoadArgs};

/// Requests of a synchronous run at most: one request at a time is slow.
const SYNC_REQUESTS: u64 = 20_000;

/// The keys of a CURVE run: the broker's, an allow list, and the clients' and workers' keys.
pub struct BenchKeys {
    _dir: tempfile::TempDir,
    /// The broker's `curve` settings.
    pub settings: CurveSettings,
    /// The load clients' keys.
    pub client: ClientCurve,
    /// The echo workers' keys.
    pub worker: ClientCurve,
}

impl BenchKeys {
    /// Fresh keys in a temporary directory, allowed to call and register everything.
    pub fn generate() -> Result<BenchKeys> {
        let dir = tempfile::tempdir()?;
        let (broker, broker_key, _) = write_key_pair(&dir.path().join("broker"))?;
        let (client, _, _) = write_key_pair(&dir.path().join("client"))?;
        let (worker, _, _) = write_key_pair(&dir.path().join("worker"))?;
        let list = dir.path().join("authorized_keys");
        std::fs::write(
            &list,
            format!(
                "{} bench-client call=*;bus.publish=*;bus.subscribe=*\n{} bench-worker register=*\n",
                client.public, worker.public
            ),
        )?;
        Ok(BenchKeys {
            settings: CurveSettings {
                secret_key_file: Some(broker_key),
                authorized_keys: Some(list),
                reload_interval_ms: 0,
            },
            client: ClientCurve::new(client, broker.public),
            worker: ClientCurve::new(worker, broker.public),
            _dir: dir,
        })
    }
}

/// One measured mode: its label, load and the reports of each security setting.
struct Mode {
    label: &'static str,
    args: LoadArgs,
    null: Vec<LoadReport>,
    curve: Vec<LoadReport>,
}

/// Runs the comparison and prints it.
pub fn compare(args: &LoadArgs, json: bool) -> Result<()> {
    let keys = BenchKeys::generate()?;
    let synchronous = LoadArgs {
        window: 1,
        requests: args.requests.min(SYNC_REQUESTS),
        ..args.clone()
    };
    let mut modes = [
        Mode {
            label: "pipelined",
            args: args.clone(),
            null: Vec::new(),
            curve: Vec::new(),
        },
        Mode {
            label: "synchronous",
            args: synchronous,
            null: Vec::new(),
            curve: Vec::new(),
        },
    ];
    if !json {
        println!(
            "broker: in-process, {} libzmq I/O thread(s)",
            args.broker_io_threads
        );
    }
    for round in 0..args.rounds.max(1) {
        for mode in &mut modes {
            let null = broker_run_on(&mode.args, None)?;
            check(&null)?;
            let curve = broker_run_on(&mode.args, Some(&keys))?;
            check(&curve)?;
            if !json {
                println!(
                    "round {} {:<11}: NULL {:>7.0} req/s p50 {:>5} µs | CURVE {:>7.0} req/s p50 {:>5} µs",
                    round + 1,
                    mode.label,
                    null.requests_per_sec,
                    null.latency_us.p50,
                    curve.requests_per_sec,
                    curve.latency_us.p50
                );
            }
            mode.null.push(null);
            mode.curve.push(curve);
        }
    }
    let tput = |rs: &[LoadReport]| median(rs.iter().map(|r| r.requests_per_sec).collect());
    let p50 = |rs: &[LoadReport]| median(rs.iter().map(|r| r.latency_us.p50 as f64).collect());
    let mut summary = Vec::new();
    for mode in &modes {
        let (nt, ct) = (tput(&mode.null), tput(&mode.curve));
        let (nl, cl) = (p50(&mode.null), p50(&mode.curve));
        if json {
            summary.push(json!({
                "mode": mode.label, "shape": shape(&mode.args),
                "null": mode.null, "curve": mode.curve,
                "median_req_per_sec": {"null": nt, "curve": ct},
                "median_p50_us": {"null": nl, "curve": cl},
                "throughput_ratio": ct / nt, "p50_latency_ratio": cl / nl,
            }));
        } else {
            println!("{}: {}", mode.label, shape(&mode.args));
            println!(
                "  median throughput: CURVE {ct:.0} req/s / NULL {nt:.0} req/s = {:.2}×",
                ct / nt
            );
            println!(
                "  median p50 latency: CURVE {cl:.0} µs / NULL {nl:.0} µs = {:.2}×",
                cl / nl
            );
        }
    }
    if json {
        println!(
            "{}",
            json!({ "mode": "curve", "broker_io_threads": args.broker_io_threads, "modes": summary })
        );
    }
    Ok(())
}
