//! The `plantd-module-metric` binary: configuration layering, its variable names (`PLANTD_METRIC_*`,
//! with the Go system's `PLANTD_MODULE_METRIC_*` still read) and bad values.

use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_plantd-module-metric");

fn command(dir: &std::path::Path) -> Command {
    let mut command = plantd_worker_sdk::testing::service_command(BIN, dir, "PLANTD_METRIC_CONFIG");
    command.env_remove("PLANTD_MODULE_METRIC_CONFIG");
    command
}

/// The effective configuration `--print-config` shows, and its stderr.
fn print_config(command: &mut Command) -> (Value, String) {
    let output: Output = command.arg("--print-config").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let config = serde_json::from_slice(&output.stdout).expect("JSON config");
    (config, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn print_config_shows_flags_over_env_over_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metric.yaml"),
        "interval_ms: 11\nsource: file\nmode: consumer\n",
    )
    .unwrap();
    let (config, stderr) = print_config(
        command(dir.path())
            .env("PLANTD_METRIC_SOURCE", "env")
            .env("PLANTD_METRIC_MODE", "consumer")
            .env("PLANTD_METRIC_HEALTH_PORT", "18087")
            .args(["--mode", "producer"]),
    );
    assert_eq!(config["mode"], "producer", "flag wins");
    assert_eq!(config["source"], "env", "env beats file");
    assert_eq!(
        config["health_port"], 18087,
        "PLANTD_METRIC_HEALTH_PORT is read"
    );
    assert_eq!(config["interval_ms"], 11, "file beats default");
    assert_eq!(stderr, "", "no warning without the former names");
}

#[test]
fn the_go_systems_variable_names_still_work_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("module-metric.yaml"), "interval_ms: 12\n").unwrap();
    let (config, stderr) = print_config(
        command(dir.path())
            .env("PLANTD_MODULE_METRIC_SOURCE", "old")
            .env("PLANTD_MODULE_METRIC_HEALTH_PORT", "18088")
            .env("PLANTD_METRIC_HEALTH_PORT", "18089"),
    );
    assert_eq!(config["source"], "old");
    assert_eq!(config["interval_ms"], 12, "module-metric.yaml is read");
    assert_eq!(config["health_port"], 18089, "the new name wins");
    for warning in [
        "PLANTD_MODULE_METRIC_SOURCE is read as PLANTD_METRIC_SOURCE",
        "PLANTD_MODULE_METRIC_HEALTH_PORT is ignored: PLANTD_METRIC_HEALTH_PORT is set",
        "module-metric.yaml under the former name",
    ] {
        assert!(
            stderr.contains(warning),
            "{warning:?} missing from {stderr}"
        );
    }
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
