//! Smoke test of `plant bench memory`: a short real run of every load against a broker child
//! process, whose JSON report has the documented shape and whose loads went through. No memory
//! figure is asserted: they depend on the machine (the measured ones live in
//! docs/benchmarks.md).

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_memory_runs_every_load_and_reports_rss() {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(["--output", "json", "bench", "memory"])
        .args(["--idle", "0.2", "--settle", "0.3"])
        .args(["--senders", "4", "--messages", "2000"])
        .args(["--large-every", "500", "--large-max-mb", "2"])
        .args([
            "--requests",
            "2000",
            "--services",
            "50",
            "--linger-ms",
            "100",
        ])
        .output()
        .expect("run plant");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "plant bench memory failed: {stderr}"
    );
    let report: Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document on stdout");
    assert_eq!(report["mode"], "memory");
    let runs = report["runs"].as_array().expect("runs");
    let loads: Vec<&str> = runs.iter().map(|r| r["load"].as_str().unwrap()).collect();
    assert_eq!(loads, ["garbage", "unread", "services"]);
    for run in runs {
        let rss = &run["rss_mb"];
        let before = rss["before"].as_f64().unwrap();
        assert!(before > 0.0, "{run}");
        assert!(
            rss["peak"].as_f64().unwrap() >= before,
            "the peak is a high-water mark: {run}"
        );
        assert!(run["target_mb"].as_f64().unwrap() > before, "{run}");
        assert!(run["target_met"].is_boolean(), "{run}");
    }
    let garbage = &runs[0];
    assert_eq!(garbage["sent"], 2000, "{garbage}");
    assert!(garbage["received"].as_u64().unwrap() > 0, "{garbage}");
    assert!(garbage["messages_per_sec"].as_f64().unwrap() > 0.0);
    assert!(garbage["broker_cpu_secs"].as_f64().is_some());
    assert!(
        garbage["counters"]["malformed"].as_u64().unwrap() > 0,
        "{garbage}"
    );
    let unread = &runs[1];
    assert_eq!(unread["requests"], 2000);
    assert!(unread["counters"]["requests"].as_u64().unwrap() >= 2000);
    let services = &runs[2];
    assert_eq!(services["services"], 50);
    assert!(services["forgotten"].is_boolean(), "{services}");
}

#[test]
fn bench_memory_refuses_a_zero_shape() {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(["bench", "memory", "--load", "garbage", "--senders", "0"])
        .output()
        .expect("run plant");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must be at least 1"), "{stderr}");
}
