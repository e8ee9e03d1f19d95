//! Smoke tests of the benches issue 16 added for its targets 0, 2, 4 and 5: `plant bench floor`,
//! `plant bench plain`, `plant bench idle --with-load`, `plant bench churn`, and `plant bench
//! broker` with large bodies. Short real runs with tiny sizes whose JSON reports have the documented shape and
//! verified every reply. No timing or memory figure is asserted: they depend on the machine (the
//! measured ones live in docs/benchmarks.md, "Round two").

use std::process::Command;

use serde_json::Value;

/// Runs `plant --output json bench <args>` and parses its one JSON document.
fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(["--output", "json", "bench"])
        .args(args)
        .output()
        .expect("run plant");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "plant bench {args:?} failed: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).expect("one JSON document")
}

/// `plant bench <args>` fails, saying something that contains `needle`.
fn refused(args: &[&str], needle: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run plant");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} should fail");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

fn assert_clean(report: &Value, requests: u64) {
    assert_eq!(report["completed"], requests, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["requests_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn plain_alternates_worker_counts_and_reports_the_broker_loop_cpu() {
    let run = bench(&[
        "plain",
        "--workers",
        "1,2",
        "--rounds",
        "2",
        "--requests",
        "400",
        "--window",
        "8",
    ]);
    assert_eq!(run["mode"], "plain", "{run}");
    assert_eq!(run["baseline_workers"], 1);
    let runs = run["runs"].as_array().expect("runs");
    let order: Vec<(u64, u64)> = runs
        .iter()
        .map(|r| (r["round"].as_u64().unwrap(), r["workers"].as_u64().unwrap()))
        .collect();
    assert_eq!(order, [(1, 1), (1, 2), (2, 1), (2, 2)], "alternated: {run}");
    for r in runs {
        assert_clean(&r["report"], 400);
        let cpu = r["broker_loop_cpu_percent"].as_f64().unwrap();
        assert!((0.0..=400.0).contains(&cpu), "{r}");
    }
    let summary = run["summary"].as_array().expect("summary");
    assert_eq!(summary.len(), 2);
    assert_eq!(summary[0]["ratio_to_baseline"], 1.0);
    assert!(summary[1]["ratio_to_baseline"].as_f64().unwrap() > 0.0);
    assert!(summary[1]["median_broker_loop_cpu_percent"].is_number());
}

#[test]
fn idle_with_load_runs_the_load_without_and_with_the_idle_peers() {
    let run = bench(&[
        "idle",
        "--clients",
        "30",
        "--workers",
        "5",
        "--seconds",
        "1",
        "--heartbeat-ms",
        "200",
        "--with-load",
        "--rounds",
        "2",
        "--requests",
        "2000",
    ]);
    assert_eq!(run["mode"], "idle", "{run}");
    assert_eq!(run["clients"], 30);
    assert_eq!(run["workers"], 5);
    assert!(run["rss_mb"].as_f64().unwrap() > 0.0, "{run}");
    assert!(run["rss_mb_empty"].as_f64().unwrap() > 0.0, "{run}");
    assert!(run["cpu_percent_of_one_core"].as_f64().unwrap() >= 0.0);
    assert!(run["open_files_limit"].as_u64().unwrap() > 0);
    let load = &run["load"];
    for side in ["without_idle_peers", "with_idle_peers"] {
        let runs = load[side].as_array().expect(side);
        assert_eq!(runs.len(), 2, "{side}: {load}");
        for r in runs {
            assert_clean(r, 2000);
        }
    }
    assert!(load["throughput_ratio"].as_f64().unwrap() > 0.0, "{load}");
}

#[test]
fn idle_without_load_reports_no_load() {
    let run = bench(&[
        "idle",
        "--clients",
        "10",
        "--workers",
        "2",
        "--seconds",
        "1",
        "--heartbeat-ms",
        "200",
    ]);
    assert_eq!(run["mode"], "idle", "{run}");
    assert!(run["load"].is_null(), "{run}");
}

#[test]
fn churn_verifies_every_short_lived_client_and_reports_rss() {
    let run = bench(&[
        "churn",
        "--clients",
        "300",
        "--warmup",
        "50",
        "--concurrency",
        "4",
        "--settle",
        "0.3",
        "--heartbeat-ms",
        "200",
    ]);
    assert_eq!(run["mode"], "churn", "{run}");
    assert_eq!(run["verified"], 300, "{run}");
    assert_eq!(run["failed"], 0, "{run}");
    let rss = &run["rss_mb"];
    for key in ["start", "after_warmup", "end_of_load", "peak", "after"] {
        assert!(rss[key].as_f64().unwrap() > 0.0, "{key}: {run}");
    }
    assert!(rss["peak"].as_f64() >= rss["after"].as_f64(), "{run}");
    assert!(run["growth_vs_after_warmup"].is_number());
    assert!(run["target_met"].is_boolean());
    assert!(
        run["counters"]["requests"].as_u64().unwrap() >= 300,
        "the broker saw every request: {run}"
    );
}

#[test]
fn large_bodies_go_through_the_broker_and_the_ceiling() {
    let run = bench(&[
        "broker",
        "--compare-ceiling",
        "--rounds",
        "1",
        "--size",
        "1048576",
        "--window",
        "2",
        "--clients",
        "2",
        "--requests",
        "16",
    ]);
    assert_eq!(run["mode"], "compare", "{run}");
    assert_eq!(run["load"]["size"], 1048576);
    for side in ["ceiling", "mdp_framed_ceiling", "broker"] {
        assert_clean(&run[side][0], 16);
    }
    assert!(run["throughput_ratio_mdp_framed"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_shapes_are_refused_with_a_clear_error() {
    refused(&["plain", "--workers", "0,2"], "at least 1");
    refused(&["plain", "--size", "8"], "at least 16 bytes");
    refused(&["churn", "--clients", "10", "--warmup", "10"], "--warmup");
    refused(&["churn", "--concurrency", "0"], "at least 1");
}

#[test]
fn floor_alternates_bare_tcp_and_bare_libzmq_echo_and_reports_the_ratios() {
    let run = bench(&[
        "floor",
        "--duration",
        "0.2",
        "--rounds",
        "2",
        "--clients",
        "2",
        "--window",
        "16",
    ]);
    assert_eq!(run["mode"], "floor", "{run}");
    assert_eq!(run["load"]["frames"], 4, "{run}");
    let rounds = run["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{run}");
    for (i, round) in rounds.iter().enumerate() {
        assert_eq!(round["round"], i + 1, "{round}");
        for system in ["tcp", "libzmq", "libzmq_framed"] {
            for mode in ["pipelined", "synchronous"] {
                let report = &round[format!("{system}_{mode}")];
                assert!(report["completed"].as_u64().unwrap() > 0, "{report}");
                assert_eq!(report["errors"], 0, "{report}");
                assert!(report["latency_us"]["p99"].is_u64(), "{report}");
            }
        }
    }
    for system in ["tcp", "libzmq", "libzmq_framed"] {
        assert!(
            run["median_req_per_sec"][system].as_f64().unwrap() > 0.0,
            "{run}"
        );
        assert!(
            run["median_synchronous_p50_us"][system].is_number(),
            "{run}"
        );
        assert!(
            run["median_synchronous_p99_us"][system].is_number(),
            "{run}"
        );
    }
    for ratio in [
        "throughput_ratio",
        "p50_latency_ratio",
        "framed_throughput_ratio",
        "framed_p50_latency_ratio",
    ] {
        assert!(run[ratio].is_number(), "{ratio}: {run}");
    }
}

#[test]
fn floor_without_framing_leaves_the_framed_system_out_and_can_share_a_client_context() {
    let run = bench(&[
        "floor",
        "--duration",
        "0.1",
        "--rounds",
        "1",
        "--frames",
        "1",
    ]);
    let round = &run["rounds"][0];
    assert!(round["libzmq_framed_pipelined"].is_null(), "{run}");
    assert!(round["libzmq_framed_synchronous"].is_null(), "{run}");
    assert!(run["framed_throughput_ratio"].is_null(), "{run}");
    assert!(run["throughput_ratio"].as_f64().unwrap() > 0.0, "{run}");
    assert_eq!(round["tcp_pipelined"]["errors"], 0, "{run}");
    assert_eq!(round["libzmq_pipelined"]["errors"], 0, "{run}");
}

#[test]
fn floor_refuses_shapes_it_cannot_run() {
    refused(&["floor", "--window", "0"], "must be at least 1");
    refused(&["floor", "--size", "8"], "at least 16 bytes");
    refused(&["floor", "--window", "5000"], "--window × (--size + 4)");
    refused(&["floor", "--duration", "0"], "--duration");
}
