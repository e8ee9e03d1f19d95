//! The `plantd-broker` binary: configuration precedence and signals.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_plantd-broker");

fn command(dir: &std::path::Path) -> Command {
    plantd_worker_sdk::testing::service_command(BIN, dir, "PLANTD_BROKER_CONFIG")
}

/// The binary on a free endpoint and health port (buses off, logs at `info` to a pipe): the child,
/// its endpoint and its health port.
fn spawn_broker(dir: &std::path::Path) -> (std::process::Child, String, u16) {
    let health_port = plantd_worker_sdk::testing::free_port();
    let endpoint = plantd_worker_sdk::testing::free_endpoint();
    let child = command(dir)
        .args(["--endpoint", &endpoint])
        .args(["--health-port", &health_port.to_string()])
        .args(["--log-level", "info"])
        .env("PLANTD_BROKER_HEALTH_HOST", "127.0.0.1")
        .env("PLANTD_BROKER_BUS__ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plantd-broker");
    (child, endpoint, health_port)
}

#[test]
fn print_config_shows_flags_over_env_over_file_over_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("broker.yaml"),
        "queue_limit: 11\nmax_retries: 7\nhealth_port: 1111\n",
    )
    .expect("write broker.yaml");
    let output = command(dir.path())
        .env("PLANTD_BROKER_MAX_RETRIES", "5")
        .env("PLANTD_BROKER_HEALTH_PORT", "2222")
        .args(["--health-port", "3333", "--print-config"])
        .output()
        .expect("run plantd-broker");
    assert!(output.status.success(), "{output:?}");
    let config: Value = serde_json::from_slice(&output.stdout).expect("JSON config");
    assert_eq!(config["health_port"], 3333, "flag wins");
    assert_eq!(config["max_retries"], 5, "env beats file");
    assert_eq!(config["queue_limit"], 11, "file beats default");
    assert_eq!(config["endpoint"], "tcp://127.0.0.1:9797", "default");
}

#[test]
fn sigterm_stops_the_binary_cleanly_with_exit_code_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, _endpoint, health_port) = spawn_broker(dir.path());
    let url = format!("http://127.0.0.1:{health_port}/healthz");
    wait_until("the binary's /healthz is UP", || {
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "broker exited early"
        );
        reqwest::blocking::get(&url).is_ok_and(|r| r.status() == 200)
    });
    let signalled = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(signalled.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("plantd-broker ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert_eq!(status.code(), Some(0), "{status:?}; stderr:\n{stderr}");
    assert!(stderr.contains("broker listening"), "{stderr}");
    // A pipe is not a terminal: plain text, no colour codes.
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in piped logs: {stderr:?}"
    );
}

#[test]
fn a_flood_of_malformed_messages_is_not_logged_per_message() {
    use rand::SeedableRng;

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, endpoint, health_port) = spawn_broker(dir.path());
    let metrics = format!("http://127.0.0.1:{health_port}/metrics");
    let received = || -> f64 {
        let Ok(text) = reqwest::blocking::get(&metrics).and_then(|r| r.text()) else {
            return 0.0;
        };
        text.lines()
            .find_map(|l| l.strip_prefix("plantd_broker_messages_received_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    wait_until("the binary serves /metrics", || {
        reqwest::blocking::get(&metrics).is_ok()
    });

    // Garbage of every shape, including worker commands from peers that never registered.
    let ctx = zmq::Context::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let flooders: Vec<Peer> = (0..4)
        .map(|i| Peer::connect(&ctx, &endpoint, ALL_DIALECTS[i % 3]))
        .collect();
    const FLOOD: usize = 5_000;
    for i in 0..FLOOD {
        flooders[i % flooders.len()].send_raw(crate::robustness::random_message(&mut rng));
    }
    wait_until("the broker has read the flood", || {
        received() >= FLOOD as f64
    });

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    // Startup and shutdown lines only; a line per message would be thousands.
    let lines = stderr.lines().count();
    assert!(
        lines < 20,
        "{lines} log lines for {FLOOD} malformed messages:\n{stderr}"
    );
}
