//! A configuration key that no setting reads stops every service at startup, by name: a misspelled
//! `PLANTD_STATE_DBB` or a `databse:` line in `state.yaml` (the Go system silently ignored both).
//! What must keep working does: `PLANTD_<SERVICE>_CONFIG`, the metric module's deprecated
//! `PLANTD_MODULE_METRIC_*` names, and `plantd up`, which loads every service's configuration.

mod common;

use common::ops::SERVICES;
use common::{isolated, workspace_binary};

#[test]
fn every_service_refuses_an_unknown_variable_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for service in &SERVICES {
        let name = format!("PLANTD_{}_HEALTH_PROT", service.prefixes[0]);
        let output = isolated(
            workspace_binary(service.binary, service.package),
            dir.path(),
        )
        .env(&name, "1")
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{} accepted {name}",
            service.binary
        );
        assert!(
            stderr.contains(&format!("health_prot (from environment variable {name})")),
            "{}: {stderr}",
            service.binary
        );
    }
}

#[test]
fn an_unknown_key_in_a_file_is_named_with_the_file_and_config_still_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("custom.yaml");
    std::fs::write(&file, "databse: x.db\n").unwrap();
    let state = workspace_binary("plantd-state", "plantd-state");
    let output = isolated(&state, dir.path())
        .env("PLANTD_STATE_CONFIG", &file)
        .arg("--print-config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("databse (from file ") && stderr.contains("custom.yaml"),
        "{stderr}"
    );

    std::fs::write(&file, "db: from-file.db\nbackup:\n  interval_secs: 60\n").unwrap();
    let output = isolated(&state, dir.path())
        .env("PLANTD_STATE_CONFIG", &file)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["db"], "from-file.db");
    assert_eq!(config["backup"]["interval_secs"], 60);
}

#[test]
fn the_metric_modules_former_names_still_work_and_are_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    let metric = workspace_binary("plantd-module-metric", "plantd-module-metric");
    let output = isolated(&metric, dir.path())
        .env("PLANTD_MODULE_METRIC_INTERVAL_MS", "1234")
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["interval_ms"], 1234);
    assert!(String::from_utf8_lossy(&output.stderr).contains("deprecated"));

    let output = isolated(&metric, dir.path())
        .env("PLANTD_MODULE_METRIC_INTERVL_MS", "1234")
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("environment variable PLANTD_MODULE_METRIC_INTERVL_MS"));
}

#[test]
fn plantd_up_refuses_an_unknown_key_of_any_service_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let output = isolated(env!("CARGO_BIN_EXE_plantd"), dir.path())
        .args(["up", "--print-ports"])
        .env("PLANTD_LOGGER_DBB", "x.db")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("dbb (from environment variable PLANTD_LOGGER_DBB)"),
        "{stderr}"
    );
}
