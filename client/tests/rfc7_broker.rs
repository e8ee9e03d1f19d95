//! The `plant` binary behind an RFC 7 (MDP/0.1-only) broker written in Python
//! (`tests/interop/mdp_peers.py`): with `--protocol 0.1` (or `PLANTD_CLIENT_PROTOCOL=0.1`) its
//! commands, and `plant bench broker`'s preflight `mmi.service` check, speak the broker's version.

use std::process::{Command, Output};

use plantd_module_echo::{EchoConfig, SERVICE};
use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::testing::interop::{python_ready, PythonPeer};
use plantd_worker_sdk::testing::{free_endpoint, free_port, wait_until};
use plantd_worker_sdk::Shutdown;
use serde_json::Value;

/// Runs `plant --endpoint <endpoint> args...`, ignoring the caller's `PLANTD_CLIENT_*` setup.
fn plant(endpoint: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plant"))
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .env_remove("PLANTD_CLIENT_OUTPUT")
        .env_remove("PLANTD_CLIENT_PROTOCOL")
        .envs(env.iter().copied())
        .output()
        .expect("run plant")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn plant_with_protocol_0_1_reaches_the_echo_module_behind_an_rfc7_broker() {
    if !python_ready() {
        return;
    }
    let endpoint = free_endpoint();
    let _broker = PythonPeer::rfc7_broker(&endpoint);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shutdown = Shutdown::new();
    // The echo module configured for 0.1, heartbeating at the Python broker's 250 ms.
    runtime.spawn(plantd_module_echo::run(
        EchoConfig {
            broker_endpoint: endpoint.clone(),
            protocol: Dialect::V01,
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            heartbeat_interval_ms: 250,
            heartbeat_liveness: 5,
            ..EchoConfig::default()
        },
        shutdown.clone(),
    ));
    // `plant service` asks mmi.service, which the Python broker answers in 0.1.
    wait_until("the echo module is registered", || {
        plant(&endpoint, &[], &["--protocol", "0.1", "service", SERVICE])
            .status
            .success()
    });

    let out = plant(&endpoint, &[], &["--protocol", "0.1", "echo", "hi"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    let out = plant(
        &endpoint,
        &[("PLANTD_CLIENT_PROTOCOL", "0.1")],
        &["echo", "env"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "env\n");

    // In 0.2 (the default) the 0.1-only broker drops every message unanswered.
    let out = plant(&endpoint, &[], &["--timeout", "300ms", "echo", "hi"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unreachable"),
        "{}",
        text(&out.stderr)
    );
    shutdown.cancel();
}

#[test]
fn plant_bench_broker_checks_for_its_workers_in_the_bench_protocol() {
    if !python_ready() {
        return;
    }
    let endpoint = free_endpoint();
    let _broker = PythonPeer::rfc7_broker(&endpoint);
    let out = plant(
        &endpoint,
        &[],
        &[
            "--output",
            "json",
            "bench",
            "broker",
            "--broker",
            &endpoint,
            "--protocol",
            "0.1",
            "--requests",
            "200",
            "--clients",
            "1",
            "--window",
            "2",
            "--workers",
            "1",
            "--credit",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(run["load"]["protocol"], "0.1", "{run}");
    assert_eq!(run["report"]["completed"], 200, "{run}");
    assert_eq!(run["report"]["errors"], 0, "{run}");
}
