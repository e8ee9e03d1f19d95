//! Smoke test of `plant bench bus`: a short real run (in-process broker bus, bare proxy,
//! PUSH→PULL) whose JSON report has the documented shape, loses nothing and measures something.
//! No timing is asserted: rates depend on the machine.

use std::process::Command;

use serde_json::Value;

const PATHS: [&str; 3] = ["bus", "proxy", "pushpull"];

fn bench(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(args)
        .output()
        .expect("run plant");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bench_bus_reports_every_path_without_losses() {
    let (ok, stdout, stderr) = bench(&[
        "--output",
        "json",
        "bench",
        "bus",
        "--messages",
        "20000",
        "--rounds",
        "1",
    ]);
    assert!(ok, "plant bench bus failed: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!(report["mode"], "bus");
    assert_eq!(report["messages"], 20000);
    assert_eq!(report["size"], 64);
    assert_eq!(report["publishers"], 1);
    assert_eq!(report["rounds"], 1);
    assert_eq!(
        report["hwm"],
        plantd_worker_sdk::bus::DEFAULT_HIGH_WATER_MARK,
        "the bus default"
    );
    assert_eq!(report["out_of_order"], 0);

    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "one run per path: {runs:?}");
    for path in PATHS {
        let run = runs
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("a {path} run in {runs:?}"));
        assert_eq!(run["round"], 1);
        assert_eq!(run["sent"], 20000, "{run}");
        assert_eq!(run["received"], 20000, "{run}");
        assert_eq!(run["lost"], 0, "{run}");
        assert_eq!(run["out_of_order"], 0, "{run}");
        for key in ["msgs_per_sec", "seconds", "publish_seconds"] {
            assert!(run[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {run}");
        }
        assert_eq!(report["lost"][path], 0);
        assert!(
            report["median_msgs_per_sec"][path]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "{report}"
        );
    }
    for ratio in ["bus_to_proxy", "bus_to_pushpull", "proxy_to_pushpull"] {
        assert!(
            report["ratio"][ratio].as_f64().is_some_and(|v| v > 0.0),
            "{ratio}: {report}"
        );
    }
}

#[test]
fn bench_bus_rejects_bad_options_with_a_reason() {
    let (ok, stdout, stderr) = bench(&["bench", "bus", "--size", "8"]);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("--size must be at least 16"), "{stderr}");

    let (ok, _, stderr) = bench(&["bench", "bus", "--publishers", "0"]);
    assert!(!ok);
    assert!(stderr.contains("--publishers"), "{stderr}");
}
