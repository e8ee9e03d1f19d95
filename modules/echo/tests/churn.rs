//! Worker churn under load: credit-8 echo processes are killed with SIGKILL mid-load and replaced
//! at once, while a client keeps 100 requests in flight. Every request must get exactly one reply
//! (or a clear error), and the broker's books must balance afterwards.

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plantd_broker::BrokerConfig;
use plantd_module_echo::SERVICE;
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::{
    assert_broker_balanced, free_endpoint, free_port, service_command, wait_until, RequestLoad,
};
use plantd_worker_sdk::Shutdown;

const CREDIT: &str = "8";
const REQUESTS: usize = 20_000;
/// Fewer than the two workers' credit together, so a worker often has room when it dies.
const IN_FLIGHT: usize = 12;
const KILLS: usize = 6;

/// An echo process, killed when dropped.
struct Echo(Child);

impl Echo {
    fn spawn(endpoint: &str, dir: &std::path::Path) -> Echo {
        let child = service_command(
            env!("CARGO_BIN_EXE_plantd-module-echo"),
            dir,
            "PLANTD_ECHO_CONFIG",
        )
        .env("PLANTD_ECHO_BROKER_ENDPOINT", endpoint)
        .env("PLANTD_ECHO_CREDIT", CREDIT)
        .env("PLANTD_ECHO_HEALTH_HOST", "127.0.0.1")
        .env("PLANTD_ECHO_HEALTH_PORT", free_port().to_string())
        .env("PLANTD_ECHO_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn plantd-module-echo");
        Echo(child)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn killed_and_replaced_credit_workers_lose_no_request() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = free_endpoint();
    let shutdown = Shutdown::new();
    // Broker defaults for heartbeats (2.5 s): a dead worker stays listed for a while, which is
    // exactly when requests used to vanish.
    let broker = runtime.spawn(plantd_broker::run(
        BrokerConfig {
            endpoint: endpoint.clone(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            bus: plantd_broker::bus::BusSettings::disabled(),
            ..BrokerConfig::default()
        },
        shutdown.clone(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut echoes = vec![
        Echo::spawn(&endpoint, dir.path()),
        Echo::spawn(&endpoint, dir.path()),
    ];
    let client = Client::connect(&endpoint).unwrap();
    wait_until("both echo processes are registered", || {
        client
            .workers(SERVICE)
            .map(|w| w.len() == 2)
            .unwrap_or(false)
    });

    let done = Arc::new(AtomicUsize::new(0));
    let load = {
        let (endpoint, done) = (endpoint.clone(), done.clone());
        std::thread::spawn(move || {
            RequestLoad {
                endpoint: &endpoint,
                service: SERVICE,
                total: REQUESTS,
                in_flight: IN_FLIGHT,
                timeout: Duration::from_secs(20),
            }
            .run(
                |i| vec![i.to_string().into_bytes()],
                |i, reply| match reply.as_slice() {
                    [one] if *one == i.to_string().into_bytes() => Ok(()),
                    other => Err(format!("unexpected reply {other:?}")),
                },
                done,
            )
        })
    };
    for kill in 0..KILLS {
        let at = REQUESTS * (kill + 1) / (KILLS + 2);
        wait_until("the load reaches the next kill", || {
            done.load(Ordering::Relaxed) >= at || load.is_finished()
        });
        // SIGKILL one process and start its replacement at once.
        drop(echoes.remove(kill % 2));
        echoes.insert(kill % 2, Echo::spawn(&endpoint, dir.path()));
    }
    let tally = load.join().expect("load thread");

    assert_eq!(tally.total(), REQUESTS);
    assert_eq!(
        tally.timeouts, 0,
        "requests lost without an answer: {tally:?}"
    );
    assert!(tally.wrong.is_empty(), "wrong replies: {:?}", tally.wrong);
    // Re-dispatch makes errors unlikely; any that come must be the broker's clear 500.
    for (i, error) in &tally.errors {
        assert!(
            error.contains("worker lost"),
            "request {i}: unexpected error {error}"
        );
    }
    assert_broker_balanced(&endpoint);

    shutdown.cancel();
    runtime.block_on(broker).unwrap().unwrap();
}
