//! Several brokers as DESIGN.md §8 grows plantd: three broker processes, two echo workers
//! registered with all three, and one SDK client given all three endpoints under steady load.
//! Brokers are SIGKILLed and restarted under it: every request is answered (after failover), the
//! workers stay registered at the survivors, and a restarted broker has them back within two
//! heartbeat intervals. `plant services --all` merges what the brokers report.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{healthz, isolated, plant_binary, workspace_binary, Background};
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::{free_port, wait_until};
use plantd_worker_sdk::worker::DEFAULT_HEARTBEAT;

const ECHO: &str = "org.plantd.module.Echo";

/// One broker process on fixed ports, so a restart comes back where clients and workers look.
struct BrokerProcess {
    endpoint: String,
    health_port: u16,
    process: Option<Background>,
}

impl BrokerProcess {
    fn new() -> BrokerProcess {
        BrokerProcess {
            endpoint: format!("tcp://127.0.0.1:{}", free_port()),
            health_port: free_port(),
            process: None,
        }
    }

    /// Starts the broker and waits for its `/healthz`; returns when it is UP.
    fn start(&mut self, dir: &std::path::Path) -> Instant {
        let child = isolated(workspace_binary("plantd-broker", "plantd-broker"), dir)
            .env("PLANTD_BROKER_ENDPOINT", &self.endpoint)
            .env("PLANTD_BROKER_HEALTH_PORT", self.health_port.to_string())
            .env("PLANTD_BROKER_BUS__ENABLED", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.process = Some(Background::new(child, "plantd-broker"));
        wait_until("the broker is healthy", || {
            healthz(self.health_port).map(|(s, _)| s) == Some(200)
        });
        Instant::now()
    }

    /// SIGKILL: no DISCONNECT to anyone, connections just drop.
    fn kill(&mut self) {
        drop(self.process.take().expect("running"));
    }

    /// The echo workers this broker has registered, as `mmi.workers` says.
    fn echo_workers(&self) -> usize {
        Client::connect(&self.endpoint)
            .unwrap()
            .with_timeout(Duration::from_secs(2))
            .workers(ECHO)
            .map_or(0, |w| w.len())
    }
}

/// A load of blocking requests from a few threads through one client, each checking its reply.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(client: &Client, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|thread| {
                let (client, stop) = (client.clone(), Arc::clone(&stop));
                let (answered, failures) = (Arc::clone(&answered), Arc::clone(&failures));
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body = format!("{thread}-{n}").into_bytes();
                        match client.request(ECHO, vec![body.clone()]) {
                            Ok(reply) if reply == vec![body] => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures
                                .lock()
                                .unwrap()
                                .push(format!("request {thread}-{n}: {other:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            failures,
            threads,
        }
    }

    /// Waits until `more` further requests were answered: the load flows (again).
    fn flows(&self, more: u64, what: &str) {
        let target = self.answered.load(Ordering::Relaxed) + more;
        wait_until(what, || self.answered.load(Ordering::Relaxed) >= target);
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.answered.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn requests_fail_over_across_three_brokers_killed_and_restarted_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut brokers: Vec<BrokerProcess> = (0..3).map(|_| BrokerProcess::new()).collect();
    for broker in &mut brokers {
        broker.start(dir.path());
    }
    let all: Vec<&str> = brokers.iter().map(|b| b.endpoint.as_str()).collect();
    let all = all.join(",");

    let mut workers = Vec::new();
    for _ in 0..2 {
        let health = free_port();
        let echo = isolated(
            workspace_binary("plantd-module-echo", "plantd-module-echo"),
            dir.path(),
        )
        .env("PLANTD_ECHO_BROKER_ENDPOINT", &all)
        .env("PLANTD_ECHO_HEALTH_PORT", health.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        workers.push(Background::new(echo, "plantd-module-echo"));
    }
    for broker in &brokers {
        wait_until("both echo workers are registered at every broker", || {
            broker.echo_workers() == 2
        });
    }

    // `plant services --all` merges the three brokers' views.
    let out = isolated(plant_binary(), dir.path())
        .args(["--endpoint", &all, "--output", "json", "services", "--all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let echo = view["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == ECHO)
        .cloned()
        .unwrap_or_else(|| panic!("no echo in {view}"));
    assert_eq!(echo["brokers"], 3, "{view}");
    assert_eq!(echo["workers"], serde_json::json!([2, 2, 2]), "{view}");

    // Echo is idempotent: resends are allowed, so a request lost with a broker is sent again.
    let client = Client::connect(&all)
        .unwrap()
        .with_timeout(Duration::from_secs(3))
        .with_retries(3);
    let load = Load::start(&client, 4);
    load.flows(200, "the load flows through the first broker");

    brokers[0].kill();
    load.flows(
        200,
        "the load flows again after the first broker was killed",
    );
    brokers[1].kill();
    load.flows(
        200,
        "the load flows again after the second broker was killed",
    );
    assert_eq!(
        brokers[2].echo_workers(),
        2,
        "the survivor keeps both workers"
    );

    // `--all` with two brokers down: the survivor's view, and a warning for each of the others.
    let out = isolated(plant_binary(), dir.path())
        .args(["--endpoint", &all, "--timeout", "1s", "services", "--all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&brokers[0].endpoint) && stderr.contains(&brokers[1].endpoint),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1/3"),
        "{out:?}"
    );

    // Restarted on their ports, the brokers have both workers back within two heartbeats.
    for index in [0, 1] {
        let up = brokers[index].start(dir.path());
        wait_until("both workers re-register at the restarted broker", || {
            brokers[index].echo_workers() == 2
        });
        let took = up.elapsed();
        assert!(
            took <= DEFAULT_HEARTBEAT * 2,
            "re-registration took {took:?}, more than two heartbeats"
        );
    }

    // The client stays on the survivor; when that one goes too, it wraps round to the first.
    brokers[2].kill();
    load.flows(200, "the load flows again through a restarted broker");

    let (answered, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} unanswered: {failures:#?}",
        failures.len()
    );
    assert!(answered >= 800, "{answered}");
}
