//! Smoke tests of `plant bench broker` and `plant bench ceiling`: short real runs whose JSON
//! reports have the documented shape and verified every reply. No timing is asserted: rates
//! depend on the machine (the measured figures live in docs/benchmarks.md).

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

fn assert_clean(report: &Value, requests: u64) {
    assert_eq!(report["completed"], requests, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["requests_per_sec"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_us"];
    assert!(latency["p50"].as_u64().unwrap() <= latency["max"].as_u64().unwrap());
}

#[test]
fn broker_and_ceiling_runs_verify_every_reply() {
    for extra in [
        &[][..],
        &["--protocol", "0.1"][..],
        &["--credit", "1"][..],
        &["--clients", "1", "--window", "1"][..],
        &["--sdk-workers"][..],
        &["--sdk-workers", "--inline-handler"][..],
        &["--sdk-client", "async"][..],
        &[
            "--sdk-client",
            "blocking",
            "--clients",
            "2",
            "--window",
            "4",
        ][..],
    ] {
        let mut args = vec!["broker", "--requests", "2000"];
        args.extend_from_slice(extra);
        let run = bench(&args);
        assert_eq!(run["mode"], "broker", "{run}");
        assert_clean(&run["report"], 2000);
    }
    let plain = bench(&["broker", "--requests", "400", "--credit", "1"]);
    assert!(
        plain["shape"].as_str().unwrap().contains("× credit 1"),
        "plain MDP when asked: {plain}"
    );
    assert_eq!(plain["load"]["workers"]["credit"], 1);
    assert_eq!(
        plain["load"]["workers"]["sessions"], 64,
        "sessions cover the window"
    );
    let default = bench(&["broker", "--requests", "400"]);
    assert_eq!(default["load"]["workers"]["sessions"], 1);
    assert_eq!(
        default["load"]["workers"]["credit"], 500,
        "credit covers 4 × 250 in flight over 2 threads"
    );
    for extra in [&[][..], &["--mdp-frames"][..]] {
        let mut args = vec!["ceiling", "--requests", "2000"];
        args.extend_from_slice(extra);
        let run = bench(&args);
        assert_eq!(run["mode"], "ceiling");
        assert_clean(&run["report"], 2000);
    }
}

#[test]
fn compare_ceiling_reports_both_ratios() {
    let report = bench(&[
        "broker",
        "--compare-ceiling",
        "--rounds",
        "1",
        "--requests",
        "2000",
    ]);
    assert_eq!(report["mode"], "compare");
    for series in ["ceiling", "mdp_framed_ceiling", "broker"] {
        let runs = report[series].as_array().expect(series);
        assert_eq!(runs.len(), 1, "{series}");
        assert_clean(&runs[0], 2000);
    }
    for ratio in [
        "throughput_ratio",
        "p50_latency_ratio",
        "throughput_ratio_mdp_framed",
        "p50_latency_ratio_mdp_framed",
    ] {
        assert!(report[ratio].as_f64().is_some_and(|r| r > 0.0), "{ratio}");
    }
}

#[test]
fn bad_shapes_are_refused_with_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(["bench", "broker", "--window", "0"])
        .output()
        .expect("run plant");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--clients and --window must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn cluster_runs_through_several_brokers_verify_every_reply() {
    let run = bench(&[
        "cluster",
        "--brokers",
        "3",
        "--rounds",
        "1",
        "--requests",
        "3000",
        "--clients",
        "3",
    ]);
    assert_eq!(
        (&run["mode"], &run["brokers"]),
        (&"cluster".into(), &3.into())
    );
    assert_clean(&run["one_broker"][0], 3000);
    assert_clean(&run["brokers_runs"][0], 3000);
    assert!(run["throughput_ratio"].as_f64().unwrap() > 0.0, "{run}");
}

#[test]
fn the_nats_comparison_runs_both_systems_and_verifies_every_reply() {
    let found = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("PLANTD_REQUIRE_NATS").is_none(),
            "nats-server is missing and PLANTD_REQUIRE_NATS is set"
        );
        eprintln!("skipped: nats-server is not installed (Debian: apt-get install nats-server)");
        return;
    }
    let run = bench(&[
        "nats",
        "--rounds",
        "1",
        "--duration",
        "0.3",
        "--clients",
        "2",
        "--window",
        "8",
    ]);
    assert_eq!(run["mode"], "nats", "{run}");
    let round = &run["rounds"][0];
    for report in [
        "nats_pipelined",
        "plantd_pipelined",
        "lean_pipelined",
        "nats_synchronous",
        "plantd_synchronous",
        "lean_synchronous",
    ] {
        let r = &round[report];
        assert!(r["completed"].as_u64().unwrap() > 0, "{report}: {r}");
        assert_eq!(r["errors"], 0, "{report}: {r}");
    }
    assert!(run["throughput_ratio"].as_f64().unwrap() > 0.0, "{run}");
}
