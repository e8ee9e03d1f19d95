//! The `plantd-logger` binary: configuration layering and a clean exit on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_plantd-logger");
const DEADLINE: Duration = Duration::from_secs(20);

fn command(dir: &std::path::Path) -> Command {
    plantd_worker_sdk::testing::service_command(BIN, dir, "PLANTD_LOGGER_CONFIG")
}

#[test]
fn print_config_shows_flags_over_env_over_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("logger.yaml"),
        "retention_max_rows: 11\ntopic_prefix: file\nhealth_port: 1111\n",
    )
    .unwrap();
    let output = command(dir.path())
        .env("PLANTD_LOGGER_TOPIC_PREFIX", "env")
        .env("PLANTD_LOGGER_HEALTH_PORT", "2222")
        .args(["--health-port", "3333", "--print-config"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let config: Value = serde_json::from_slice(&output.stdout).expect("JSON config");
    assert_eq!(config["health_port"], 3333, "flag wins");
    assert_eq!(config["topic_prefix"], "env", "env beats file");
    assert_eq!(config["retention_max_rows"], 11, "file beats default");
    assert_eq!(config["broker_endpoint"], "tcp://127.0.0.1:9797", "default");
}

#[test]
fn a_bad_setting_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .env("PLANTD_LOGGER_HEALTH_PORT", "not-a-port")
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("health_port"), "{stderr}");
}

#[test]
fn sigterm_stops_the_binary_cleanly_with_exit_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let health_port = plantd_worker_sdk::testing::free_port();
    // No broker: the logger keeps trying to reach it, and must still stop on a signal.
    let mut child = command(dir.path())
        .args([
            "--db",
            dir.path().join("logger.db").to_str().unwrap(),
            "--broker-endpoint",
            &plantd_worker_sdk::testing::free_endpoint(),
            "--health-port",
            &health_port.to_string(),
        ])
        .env("PLANTD_LOGGER_HEALTH_HOST", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{health_port}/healthz");
    let started = Instant::now();
    while reqwest::blocking::get(&url).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "logger exited early");
        assert!(started.elapsed() < DEADLINE, "/healthz never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("logger did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_damaged_database_refuses_to_start_naming_the_file_and_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logger.db");
    plantd_sqlite_util::testing::fill(&db, 1 << 20);
    plantd_sqlite_util::testing::corrupt_middle(&db);
    let mut child = command(dir.path())
        .args([
            "--db",
            db.to_str().unwrap(),
            "--broker-endpoint",
            &plantd_worker_sdk::testing::free_endpoint(),
            "--health-port",
            &plantd_worker_sdk::testing::free_port().to_string(),
        ])
        .env("PLANTD_LOGGER_HEALTH_HOST", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the logger is serving a damaged database");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains(db.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("quick_check"), "{stderr}");
}
