//! Smoke test of `plant bench state`: a short real run (in-process broker, echo worker and state
//! service on a temporary SQLite file) whose JSON report has the documented shape and no errors.
//! No rate is asserted: rates depend on the machine.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_state_runs_every_phase_without_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args([
            "--output",
            "json",
            "bench",
            "state",
            "--clients",
            "4",
            "--seconds",
            "0.5",
            "--sessions",
            "2",
        ])
        .output()
        .expect("run plant");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "plant bench state failed: {stderr}"
    );
    let report: Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document on stdout");
    assert_eq!(report["mode"], "state");
    assert_eq!(report["clients"], 4);
    assert_eq!(report["sessions"], 2);
    let phases = report["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "state-set", "state-get", "echo"]);
    for phase in phases {
        assert_eq!(phase["errors"], 0, "{phase}");
        assert!(phase["completed"].as_u64().unwrap() > 0, "{phase}");
    }
    for ratio in ["set_ratio", "get_ratio"] {
        assert!(report[ratio].as_f64().is_some_and(|r| r > 0.0), "{ratio}");
    }
}

#[test]
fn bench_state_refuses_a_zero_shape() {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(["bench", "state", "--clients", "0"])
        .output()
        .expect("run plant");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must be positive"), "{stderr}");
}

#[test]
fn bench_state_auth_compares_required_with_off_and_every_token_request_succeeds() {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args([
            "--output",
            "json",
            "bench",
            "state",
            "--auth",
            "--clients",
            "2",
            "--seconds",
            "0.3",
        ])
        .output()
        .expect("run plant");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "plant bench state --auth failed: {stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["mode"], "state-auth");
    let phases = report["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "set off",
            "set required",
            "get off",
            "get required",
            "set required",
            "set off",
            "get required",
            "get off"
        ]
    );
    for phase in phases {
        // A refused token would count as an error here: the required phases really carry one.
        assert_eq!(phase["errors"], 0, "{phase}");
        assert!(phase["completed"].as_u64().unwrap() > 0, "{phase}");
    }
}
