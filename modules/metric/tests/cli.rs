//! The `plantd-module-metric` binary: configuration layering and bad values.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_plantd-module-metric");

fn command(dir: &std::path::Path) -> Command {
    plantd_worker_sdk::testing::service_command(BIN, dir, "PLANTD_MODULE_METRIC_CONFIG")
}

#[test]
fn print_config_shows_flags_over_env_over_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("module-metric.yaml"),
        "interval_ms: 11\nsource: file\nmode: consumer\n",
    )
    .unwrap();
    let output = command(dir.path())
        .env("PLANTD_MODULE_METRIC_SOURCE", "env")
        .env("PLANTD_MODULE_METRIC_MODE", "consumer")
        .args(["--mode", "producer", "--print-config"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let config: Value = serde_json::from_slice(&output.stdout).expect("JSON config");
    assert_eq!(config["mode"], "producer", "flag wins");
    assert_eq!(config["source"], "env", "env beats file");
    assert_eq!(config["interval_ms"], 11, "file beats default");
}

#[test]
fn an_unknown_mode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .args(["--mode", "sideways", "--print-config"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sideways"), "{stderr}");
}
