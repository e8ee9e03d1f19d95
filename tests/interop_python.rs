//! Interop with MDP peers that share no code with ours: the Python clients, workers and broker in
//! `tests/interop/mdp_peers.py`, written straight from RFC 7 and RFC 18 with pyzmq.
//!
//! Needs `python3` with `pyzmq`. Without it these tests print why and pass, unless
//! `PLANTD_REQUIRE_INTEROP=1` (set by `.ci/run`, which installs pyzmq) makes that a failure
//! (`plantd_worker_sdk::testing::interop`).

use std::time::{Duration, Instant};

use plantd_broker::BrokerConfig;
use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::testing::interop::{hex, python_ready, run_client, PythonPeer};
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use plantd_worker_sdk::{Client, Frames, Shutdown, Worker};

/// An in-process plantd broker on a free port, heartbeating at the Python peers' interval.
struct TestBroker {
    endpoint: String,
    shutdown: Shutdown,
    runtime: tokio::runtime::Runtime,
}

impl TestBroker {
    fn start() -> Self {
        let endpoint = free_endpoint();
        let config = BrokerConfig {
            endpoint: endpoint.clone(),
            health_port: free_port(),
            heartbeat_interval_ms: 250,
            heartbeat_liveness: 5,
            // Several brokers run side by side in tests: no buses on the fixed default ports.
            bus: plantd_broker::bus::BusSettings::disabled(),
            ..BrokerConfig::default()
        };
        let shutdown = Shutdown::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(plantd_broker::run(config, shutdown.clone()));
        TestBroker {
            endpoint,
            shutdown,
            runtime,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.endpoint)
            .unwrap()
            .with_timeout(Duration::from_secs(10))
    }

    fn wait_for_service(&self, name: &str) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !client.service_available(name).unwrap_or(false) {
            assert!(Instant::now() < deadline, "service {name} never registered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.runtime
            .block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    }
}

#[test]
fn rfc7_client_and_worker_through_our_broker() {
    if !python_ready() {
        return;
    }
    let broker = TestBroker::start();
    let _worker = PythonPeer::spawn(&["worker01", &broker.endpoint, "py.v01"]);
    broker.wait_for_service("py.v01");
    let body: &[&[u8]] = &[b"hi", b"", b"\x00\xff"];
    let mut args = vec![
        "client01".to_string(),
        broker.endpoint.clone(),
        "py.v01".into(),
    ];
    args.extend(hex(body));
    let reply = run_client(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut want = hex(&[b"py01"]);
    want.extend(hex(body));
    assert_eq!(reply, serde_json::json!(want));
}

#[test]
fn rfc18_client_and_worker_through_our_broker_with_streaming() {
    if !python_ready() {
        return;
    }
    let broker = TestBroker::start();
    let _worker = PythonPeer::spawn(&["worker02", &broker.endpoint, "py.v02"]);
    broker.wait_for_service("py.v02");
    let reply = run_client(&["client02", &broker.endpoint, "py.v02", "6869", ""]);
    assert_eq!(
        reply,
        serde_json::json!([
            ["partial", hex(&[b"py02-partial"])],
            ["final", hex(&[b"py02", b"hi", b""])]
        ])
    );
    // A 7/MDP client of the same 18/MDP worker sees only the FINAL.
    let reply = run_client(&["client01", &broker.endpoint, "py.v02", "6869"]);
    assert_eq!(reply, serde_json::json!(hex(&[b"py02", b"hi"])));
}

#[test]
fn python_clients_reach_our_sdk_worker_and_our_client_reaches_python_worker() {
    if !python_ready() {
        return;
    }
    let broker = TestBroker::start();
    let shutdown = Shutdown::new();
    let worker = Worker::builder("rust.echo")
        .endpoint(&broker.endpoint)
        .heartbeat(Duration::from_millis(250))
        .liveness(5)
        .handler(|req: Frames| Ok(req))
        .build()
        .unwrap();
    broker.runtime.spawn(worker.run(shutdown.clone()));
    broker.wait_for_service("rust.echo");
    let reply = run_client(&["client02", &broker.endpoint, "rust.echo", "6869", "", "00"]);
    assert_eq!(
        reply,
        serde_json::json!([["final", hex(&[b"hi", b"", b"\x00"])]])
    );
    let reply = run_client(&["client01", &broker.endpoint, "rust.echo", "6869"]);
    assert_eq!(reply, serde_json::json!(hex(&[b"hi"])));

    let _py = PythonPeer::spawn(&["worker01", &broker.endpoint, "py.v01"]);
    broker.wait_for_service("py.v01");
    let reply = broker
        .client()
        .request("py.v01", vec![b"x".to_vec(), vec![]])
        .unwrap();
    assert_eq!(reply, vec![b"py01".to_vec(), b"x".to_vec(), vec![]]);
    shutdown.cancel();
}

#[test]
fn our_sdk_worker_and_client_behind_a_minimal_rfc7_broker() {
    if !python_ready() {
        return;
    }
    let endpoint = free_endpoint();
    let _broker = PythonPeer::rfc7_broker(&endpoint);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let worker = Worker::builder("rust.v01")
        .endpoint(&endpoint)
        .dialect(Dialect::V01)
        .heartbeat(Duration::from_millis(250))
        .liveness(5)
        .handler(|req: Frames| Ok([vec![b"rust".to_vec()], req].concat()))
        .build()
        .unwrap();
    runtime.spawn(worker.run(shutdown.clone()));
    let client = Client::connect(&endpoint)
        .unwrap()
        .with_dialect(Dialect::V01)
        .with_timeout(Duration::from_secs(10));
    // The minimal broker queues the request until the worker's READY arrives.
    let reply = client
        .request("rust.v01", vec![b"hi".to_vec(), vec![], vec![0, 255]])
        .unwrap();
    assert_eq!(
        reply,
        vec![b"rust".to_vec(), b"hi".to_vec(), vec![], vec![0, 255]]
    );
    shutdown.cancel();
}
