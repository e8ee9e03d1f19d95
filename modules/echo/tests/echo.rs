//! The echo module against the real broker: replies are the request's frames, and `/healthz`
//! reports the broker session.

use std::time::Duration;

use plantd_broker::BrokerConfig;
use plantd_module_echo::{EchoConfig, SERVICE};
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use plantd_worker_sdk::Shutdown;

const DEADLINE: Duration = Duration::from_secs(20);

use plantd_worker_sdk::testing::wait_until;

fn healthz(port: u16) -> (u16, serde_json::Value) {
    let response = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

#[test]
fn echoes_frames_and_reports_its_broker_session() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = free_endpoint();
    let broker_shutdown = Shutdown::new();
    let broker = runtime.spawn(plantd_broker::run(
        BrokerConfig {
            endpoint: endpoint.clone(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            heartbeat_interval_ms: 100,
            heartbeat_liveness: 5,
            // Several brokers run side by side in tests: no buses on the fixed default ports.
            bus: plantd_broker::bus::BusSettings::disabled(),
            ..BrokerConfig::default()
        },
        broker_shutdown.clone(),
    ));
    let health_port = free_port();
    let echo_shutdown = Shutdown::new();
    let echo = runtime.spawn(plantd_module_echo::run(
        EchoConfig {
            broker_endpoint: endpoint.clone(),
            health_host: "127.0.0.1".into(),
            health_port,
            heartbeat_interval_ms: 100,
            heartbeat_liveness: 5,
            credit: 4,
            ..EchoConfig::default()
        },
        echo_shutdown.clone(),
    ));
    let client = Client::connect(&endpoint)
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    wait_until("the echo worker is registered", || {
        client.service_available(SERVICE).unwrap_or(false)
    });
    let workers = client.workers(SERVICE).unwrap();
    assert_eq!(
        workers[0].credit, 4,
        "registered with its configured credit"
    );

    // The Go CLI's shape comes back identical, and so does anything else.
    let go_shape = vec![
        b"echo".to_vec(),
        br#"{"service":"org.plantd.Client","message":"hi"}"#.to_vec(),
    ];
    assert_eq!(client.request(SERVICE, go_shape.clone()).unwrap(), go_shape);
    let odd = vec![b"".to_vec(), b"\x00\xff".to_vec(), b"".to_vec()];
    assert_eq!(client.request(SERVICE, odd.clone()).unwrap(), odd);
    assert_eq!(
        client.request(SERVICE, vec![]).unwrap(),
        Vec::<Vec<u8>>::new()
    );

    wait_until("/healthz is UP", || healthz(health_port).0 == 200);
    let (_, body) = healthz(health_port);
    assert_eq!(body["status"], "UP");
    assert_eq!(body["checks"][0]["name"], "broker_connection");
    assert_eq!(body["checks"][0]["status"], "UP");

    // Without its broker, the module reports DOWN (and keeps trying).
    broker_shutdown.cancel();
    runtime.block_on(broker).unwrap().unwrap();
    wait_until("/healthz is DOWN", || healthz(health_port).0 == 503);
    assert_eq!(healthz(health_port).1["checks"][0]["status"], "DOWN");

    echo_shutdown.cancel();
    runtime
        .block_on(async { tokio::time::timeout(DEADLINE, echo).await })
        .expect("echo did not stop")
        .unwrap()
        .unwrap();
}

#[test]
fn default_config_matches_the_documented_ports() {
    let config = EchoConfig::default();
    assert_eq!(config.broker_endpoint, "tcp://127.0.0.1:9797");
    assert_eq!(config.health_port, 8086);
    assert_eq!(config.concurrency, 1);
    assert_eq!(config.credit, 1, "plain MDP unless asked");
}
