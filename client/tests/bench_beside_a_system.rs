//! The benches that start their own broker run beside a running system: with every default port
//! of `plantd up` taken (held by this test, as a running `plantd up` would hold them) they still
//! work, and a broker that cannot bind its port fails at once with an error naming the port.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `plantd up`'s default ports: MDP, broker health, and the three buses' frontends and backends.
const DEFAULT_PORTS: [u16; 8] = [9797, 8081, 11000, 11001, 12000, 12001, 13000, 13001];

/// Holds every default port it can. A port something else holds already is just as taken.
fn occupy_default_ports() -> Vec<TcpListener> {
    DEFAULT_PORTS
        .iter()
        .filter_map(|&port| TcpListener::bind(("0.0.0.0", port)).ok())
        .collect()
}

fn plant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(args)
        .env_remove("PLANTD_CLIENT_OUTPUT")
        .output()
        .expect("plant runs")
}

fn assert_success(args: &[&str]) {
    let output = plant(args);
    assert!(
        output.status.success(),
        "plant {args:?} failed beside taken default ports: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn benches_with_their_own_broker_run_while_the_default_ports_are_taken() {
    let _held = occupy_default_ports();
    // `bench idle` starts a broker child process (which once bound the default bus ports and
    // then waited 20 s for an answer); `bench broker` and `bench state` an in-process broker.
    assert_success(&[
        "bench",
        "idle",
        "--clients",
        "4",
        "--workers",
        "2",
        "--seconds",
        "1",
        "--heartbeat-ms",
        "200",
    ]);
    assert_success(&["bench", "broker", "--requests", "200", "--clients", "1"]);
    assert_success(&["bench", "state", "--seconds", "0.2", "--clients", "2"]);
}

#[test]
fn a_bench_broker_that_cannot_bind_names_the_port() {
    // Bound on port 0 and held: a port found free and bound afterwards can be taken in between
    // (the other test's clients connect from ephemeral ports of the same range).
    let held = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let started = Instant::now();
    let output = plant(&[
        "bench",
        "memory",
        "--load",
        "garbage",
        "--messages",
        "10",
        "--broker-env",
        &format!("PLANTD_BROKER_ENDPOINT=tcp://127.0.0.1:{port}"),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // plant's own line comes last (the broker's own `error:` line may be relayed before it).
    let error = stderr
        .lines()
        .rev()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(error.contains("exited at startup"), "{error}");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a taken port is reported at once, not after a readiness timeout"
    );
}
