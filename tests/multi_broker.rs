//! A worker whose `broker_endpoint` lists several brokers serves through each of them (DESIGN.md
//! §8): what the Kubernetes manifests rely on to run several broker replicas.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{healthz, isolated, plant_binary, workspace_binary, Background};
use plantd_worker_sdk::testing::free_port;

#[test]
fn an_echo_worker_on_two_brokers_answers_through_both() {
    let dir = tempfile::tempdir().unwrap();
    let broker_bin = workspace_binary("plantd-broker", "plantd-broker");
    let mut endpoints = Vec::new();
    let mut running = Vec::new();
    for _ in 0..2 {
        let endpoint = format!("tcp://127.0.0.1:{}", free_port());
        let child = isolated(&broker_bin, dir.path())
            .env("PLANTD_BROKER_ENDPOINT", &endpoint)
            .env("PLANTD_BROKER_HEALTH_PORT", free_port().to_string())
            .env("PLANTD_BROKER_BUS__ENABLED", "false")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        running.push(Background::new(child, "plantd-broker"));
        endpoints.push(endpoint);
    }
    let health = free_port();
    let echo = isolated(
        workspace_binary("plantd-module-echo", "plantd-module-echo"),
        dir.path(),
    )
    .env("PLANTD_ECHO_BROKER_ENDPOINT", endpoints.join(","))
    .env("PLANTD_ECHO_HEALTH_PORT", health.to_string())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    running.push(Background::new(echo, "plantd-module-echo"));
    let end = Instant::now() + Duration::from_secs(30);
    while healthz(health).map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < end, "echo never became healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    for endpoint in &endpoints {
        let output = isolated(plant_binary(), dir.path())
            .args(["--endpoint", endpoint, "--timeout", "10s", "echo", "both"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{endpoint}: {output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "both");
    }
}
