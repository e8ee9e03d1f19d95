//! The `plant` binary against a real broker and echo module started in this process.

use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use plantd_broker::BrokerConfig;
use plantd_module_echo::EchoConfig;
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use plantd_worker_sdk::Shutdown;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);
const ECHO: &str = "org.plantd.module.Echo";

/// One broker (short queue TTL, so unknown services fail fast) and one echo module, shared by
/// every test and kept until the process ends.
struct System {
    endpoint: String,
    _runtime: tokio::runtime::Runtime,
}

fn system() -> &'static System {
    static SYSTEM: OnceLock<System> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let endpoint = free_endpoint();
        let shutdown = Shutdown::new();
        runtime.spawn(plantd_broker::run(
            BrokerConfig {
                endpoint: endpoint.clone(),
                health_host: "127.0.0.1".into(),
                health_port: free_port(),
                heartbeat_interval_ms: 100,
                heartbeat_liveness: 5,
                queue_ttl_ms: 300,
                // Several brokers run side by side in tests: no buses on the fixed default ports.
                bus: plantd_broker::bus::BusSettings::disabled(),
                ..BrokerConfig::default()
            },
            shutdown.clone(),
        ));
        runtime.spawn(plantd_module_echo::run(
            EchoConfig {
                broker_endpoint: endpoint.clone(),
                health_host: "127.0.0.1".into(),
                health_port: free_port(),
                heartbeat_interval_ms: 100,
                heartbeat_liveness: 5,
                ..EchoConfig::default()
            },
            shutdown,
        ));
        let client = Client::connect(&endpoint)
            .unwrap()
            .with_timeout(Duration::from_millis(500));
        let deadline = Instant::now() + DEADLINE;
        while !client.service_available(ECHO).unwrap_or(false) {
            assert!(Instant::now() < deadline, "echo module never registered");
            std::thread::sleep(Duration::from_millis(10));
        }
        System {
            endpoint,
            _runtime: runtime,
        }
    })
}

/// Runs `plant --endpoint <ours> args...`.
fn plant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plant"))
        .arg("--endpoint")
        .arg(&system().endpoint)
        .args(args)
        .env_remove("PLANTD_CLIENT_OUTPUT")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "plant failed: {}\n{}",
        output.status,
        stderr(output)
    );
    stdout(output)
}

/// Asserts a failure with exit code 1 and one `error:` line on stderr; returns that line.
fn failed(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "stdout: {}", stdout(output));
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    lines[0].to_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&succeeded(output)).expect("stdout is JSON")
}

#[test]
fn version_prints_the_crate_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        succeeded(&output).trim(),
        format!("plant {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn echo_prints_the_message_or_the_json_payload() {
    assert_eq!(succeeded(&plant(&["echo", "hello there"])), "hello there\n");
    let payload = json(&plant(&["--output", "json", "echo", "hi"]));
    assert_eq!(payload["message"], "hi");
    assert_eq!(payload["service"], "org.plantd.Client");
}

#[test]
fn request_sends_text_json_and_file_frames() {
    assert_eq!(
        succeeded(&plant(&["request", ECHO, "a", "", "b"])),
        "a\n\nb\n"
    );

    let reply = json(&plant(&[
        "request",
        ECHO,
        "--json",
        r#"{"k":1}"#,
        "[2]",
        "-o",
        "json",
    ]));
    assert_eq!(reply, serde_json::json!([{"k": 1}, [2]]));

    let file = std::env::temp_dir().join(format!("plant-cli-test-{}.bin", std::process::id()));
    std::fs::write(&file, b"\xff\x00binary").unwrap();
    let reply = json(&plant(&[
        "request",
        ECHO,
        "text",
        "--file",
        file.to_str().unwrap(),
        "--output",
        "json",
    ]));
    std::fs::remove_file(&file).unwrap();
    assert_eq!(reply[0], "text");
    assert!(reply[1]["base64"].is_string());

    let error = failed(&plant(&["request", ECHO, "--json", "not json"]));
    assert!(error.contains("frame 1 is not valid JSON"), "{error}");
}

#[test]
fn services_service_workers_and_broker_describe_the_system() {
    let text = succeeded(&plant(&["services"]));
    assert!(text.starts_with("SERVICE"), "{text}");
    assert!(text.contains(ECHO), "{text}");
    let services = json(&plant(&["services", "-o", "json"]));
    let echo = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == ECHO)
        .expect("echo listed");
    assert_eq!(echo["workers"], 1);

    assert_eq!(
        succeeded(&plant(&["service", ECHO])),
        format!("{ECHO}: available\n")
    );
    let status = json(&plant(&["service", ECHO, "-o", "json"]));
    assert_eq!(status["available"], true);

    let text = succeeded(&plant(&["workers", ECHO]));
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("ID"), "{text}");
    let workers = json(&plant(&["workers", ECHO, "-o", "json"]));
    assert_eq!(workers[0]["service"], ECHO);
    assert_eq!(workers[0]["dialect"], "0.2");

    let text = succeeded(&plant(&["broker"]));
    assert!(text.starts_with("version"), "{text}");
    let info = json(&plant(&["broker", "--output", "json"]));
    assert!(info["version"].is_string());
    assert!(info["workers"].as_u64().unwrap() >= 1);
}

#[test]
fn unknown_services_exit_non_zero_with_a_message() {
    let error = failed(&plant(&["request", "org.plantd.Nobody", "x"]));
    assert!(error.contains("org.plantd.Nobody not found"), "{error}");

    let output = plant(&["service", "org.plantd.Nobody"]);
    assert!(failed(&output).contains("not found"));
    assert_eq!(stdout(&output), "");

    let error = failed(&plant(&["workers", "org.plantd.Nobody"]));
    assert!(error.contains("org.plantd.Nobody not found"), "{error}");
}

#[test]
fn an_unreachable_broker_is_reported_quickly() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args([
            "--endpoint",
            &free_endpoint(),
            "--timeout",
            "300ms",
            "echo",
            "hi",
        ])
        .output()
        .unwrap();
    let error = failed(&output);
    assert!(error.contains("unreachable"), "{error}");
    assert!(started.elapsed() < DEADLINE);

    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args([
            "--endpoint",
            &free_endpoint(),
            "--timeout",
            "200ms",
            "services",
        ])
        .output()
        .unwrap();
    assert!(failed(&output).contains("unreachable"));
}

#[test]
fn bad_arguments_are_rejected() {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(["--timeout", "soon", "services"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(["--endpoint", "nonsense", "services"])
        .output()
        .unwrap();
    assert!(failed(&output).contains("invalid broker endpoint"));
}
