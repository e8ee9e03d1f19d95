//! `plantd up` as a user runs it: the real binary on free loopback ports, driven with the real
//! `plant` CLI, stopped with SIGINT.
//!
//! Covers the messaging issue's quick-start test (`plant echo hi`, SIGINT, exit 0) and the state
//! issue's CLI round trip against `plantd up`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use plantd_worker_sdk::testing::free_port;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

/// The `plant` binary next to `plantd`. `cargo test --workspace` builds it; when only this
/// package is tested, build it here.
fn plant_binary() -> PathBuf {
    let plantd = PathBuf::from(env!("CARGO_BIN_EXE_plantd"));
    let plant = plantd.with_file_name(format!("plant{}", std::env::consts::EXE_SUFFIX));
    if !plant.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "plantd-client", "--bin", "plant"]);
        if plantd.parent().and_then(Path::file_name) == Some("release".as_ref()) {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cannot build the plant binary");
    }
    plant
}

/// A running `plantd up`, killed if the test fails before stopping it.
struct Plantd {
    child: Option<Child>,
    endpoint: String,
    broker_health: u16,
    health_ports: Vec<u16>,
}

impl Plantd {
    fn start(data_dir: &Path) -> Plantd {
        let port = free_port();
        let endpoint = format!("tcp://127.0.0.1:{port}");
        let health: Vec<(&str, u16)> = ["BROKER", "ECHO", "STATE", "LOGGER", "MODULE_METRIC"]
            .into_iter()
            .map(|service| (service, free_port()))
            .collect();
        // Buses on free ports too, so this test never collides with a running plantd.
        let buses = ["state", "event", "metric"]
            .iter()
            .map(|name| {
                format!(
                    r#"{{name="{name}",frontend="tcp://127.0.0.1:{}",backend="tcp://127.0.0.1:{}"}}"#,
                    free_port(),
                    free_port()
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(env!("CARGO_BIN_EXE_plantd"));
        command
            .args(["up", "--endpoint", &endpoint, "--log-level", "warn"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("PLANTD_BROKER_BUS__BUSES", format!("[{buses}]"))
            .env_remove("PLANTD_STATE_DB")
            .env_remove("PLANTD_LOGGER_DB")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (service, port) in &health {
            command.env(format!("PLANTD_{service}_HEALTH_PORT"), port.to_string());
        }
        let mut child = command.spawn().expect("plantd starts");
        // Readiness: the banner is printed once every service has been started.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let banner = lines
            .next()
            .expect("plantd printed its banner")
            .expect("readable stdout");
        assert!(banner.contains("is up"), "{banner}");
        // Keep draining stdout so plantd never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Plantd {
            child: Some(child),
            endpoint,
            broker_health: health[0].1,
            health_ports: health.iter().map(|(_, p)| *p).collect(),
        }
    }

    fn plant(&self, args: &[&str]) -> Output {
        Command::new(plant_binary())
            .args(["--endpoint", &self.endpoint, "--timeout", "10s"])
            .args(args)
            .output()
            .expect("plant runs")
    }

    /// Runs `plant` and returns its stdout, failing the test on a non-zero exit.
    fn plant_ok(&self, args: &[&str]) -> String {
        let output = self.plant(args);
        assert!(
            output.status.success(),
            "plant {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    fn plant_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.plant_ok(&all)).expect("JSON output")
    }

    /// Sends SIGINT and waits for the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let killed = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < end, "plantd did not stop after SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Plantd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn healthz(port: u16) -> Option<(u16, Value)> {
    let response = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().ok()?))
}

use plantd_worker_sdk::testing::wait_until;

#[test]
fn plantd_up_serves_echo_and_state_and_stops_cleanly_on_sigint() {
    let data = tempfile::tempdir().unwrap();
    let mut plantd = Plantd::start(data.path());

    // The quick start: a request queued at the broker is served as soon as echo registers.
    assert_eq!(plantd.plant_ok(&["echo", "hi"]).trim(), "hi");

    // Every service's /healthz comes up.
    for port in plantd.health_ports.clone() {
        wait_until(&format!("/healthz on {port} is UP"), || {
            healthz(port).is_some_and(|(status, body)| status == 200 && body["status"] == "UP")
        });
    }
    let (_, broker) = healthz(plantd.broker_health).unwrap();
    assert_eq!(broker["status"], "UP");

    // The state CLI round trip against the real service and its database in the data dir.
    plantd.plant_ok(&["state", "create-scope", "--scope", "plant.test"]);
    plantd.plant_ok(&[
        "state",
        "set",
        "--scope",
        "plant.test",
        "limit",
        r#"{"max": 5}"#,
    ]);
    plantd.plant_ok(&["state", "set", "--scope", "plant.test", "name", "pump 7"]);
    plantd.plant_ok(&[
        "state",
        "set",
        "--scope",
        "plant.test",
        "--string",
        "code",
        "42",
    ]);
    let got = plantd.plant_json(&["state", "get", "--scope", "plant.test", "limit"]);
    assert_eq!(got["value"], serde_json::json!({"max": 5}));
    let got = plantd.plant_json(&["state", "get", "--scope", "plant.test", "name"]);
    assert_eq!(got["value"], "pump 7");
    let got = plantd.plant_json(&["state", "get", "--scope", "plant.test", "code"]);
    assert_eq!(got["value"], "42");
    let listed = plantd.plant_ok(&["state", "list", "--scope", "plant.test"]);
    for key in ["limit", "name", "code"] {
        assert!(listed.contains(key), "{listed}");
    }
    let scopes = plantd.plant_ok(&["state", "list-scopes"]);
    assert!(scopes.contains("plant.test"), "{scopes}");
    plantd.plant_ok(&["state", "delete", "--scope", "plant.test", "name"]);
    let missing = plantd.plant(&["state", "get", "--scope", "plant.test", "name"]);
    assert!(!missing.status.success());
    let error = String::from_utf8_lossy(&missing.stderr);
    assert!(
        error.contains("KEY_NOT_FOUND") || error.contains("not found"),
        "{error}"
    );

    // SIGINT stops everything with exit code 0, and the databases are in the data directory.
    let status = plantd.interrupt();
    assert!(status.success(), "plantd exited with {status}");
    assert!(data.path().join("plantd-state.db").is_file());
    assert!(data.path().join("plantd-logger.db").is_file());
}
