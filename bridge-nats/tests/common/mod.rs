//! Test harness: a real `nats-server` process on a free loopback port (optionally with
//! JetStream in a tempdir), real brokers with a metric bus on free ports, and real bridges
//! (`plantd_bridge_nats::run`), all cleaned up on drop.
//!
//! Without `nats-server` the tests skip with a message, unless `PLANTD_REQUIRE_NATS` is set
//! (CI), where its absence fails them.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plantd_bridge_nats::{BridgeConfig, BridgedBus, JetStreamSettings, NatsSettings};
use plantd_broker::bus::{BusConfig, BusSettings};
use plantd_broker::BrokerConfig;
use plantd_worker_sdk::bus::{BusMessage, Publisher, Subscriber};
use plantd_worker_sdk::testing::{free_port, wait_until};
use plantd_worker_sdk::Shutdown;

/// Generous for a loaded 2-core machine; only spent when something is wrong.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `nats-server` binary, or `None` (after saying so) when the tests should skip.
pub fn nats_server_binary() -> Option<PathBuf> {
    let candidates = [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ];
    for candidate in candidates {
        let found = Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(PathBuf::from(candidate));
        }
    }
    if std::env::var_os("PLANTD_REQUIRE_NATS").is_some() {
        panic!("nats-server is not installed and PLANTD_REQUIRE_NATS is set (apt-get install nats-server)");
    }
    eprintln!(
        "skipping: nats-server is not installed (apt-get install nats-server; set \
         PLANTD_REQUIRE_NATS=1 to make this a failure)"
    );
    None
}

/// A `nats-server` child process, killed on drop.
pub struct NatsServer {
    binary: PathBuf,
    pub port: u16,
    monitor_port: u16,
    store: Option<tempfile::TempDir>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server (with JetStream if asked), or `None` when the tests skip.
    pub fn start(jetstream: bool) -> Option<NatsServer> {
        let binary = nats_server_binary()?;
        let mut server = NatsServer {
            binary,
            port: free_port(),
            monitor_port: free_port(),
            store: jetstream.then(|| tempfile::tempdir().expect("tempdir")),
            child: None,
        };
        server.spawn();
        Some(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new(&self.binary);
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(store) = &self.store {
            command.arg("-js").arg("-sd").arg(store.path());
        }
        self.child = Some(command.spawn().expect("nats-server starts"));
        let port = self.port;
        let health = format!(
            "http://127.0.0.1:{}/healthz{}",
            self.monitor_port,
            if self.store.is_some() {
                "?js-enabled-only=true"
            } else {
                ""
            }
        );
        wait_until("nats-server accepts connections", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                && reqwest::blocking::get(&health).is_ok_and(|r| r.status() == 200)
        });
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (and store).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One site: a broker with a metric bus, running in the test's runtime.
pub struct Site {
    pub broker: BrokerConfig,
    pub bus: BusConfig,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Site {
    /// Starts a broker on free ports and returns once it is UP.
    pub fn start(runtime: &tokio::runtime::Runtime, parent: &Shutdown) -> Site {
        let bus = BusConfig {
            name: "metric".into(),
            frontend: format!("tcp://127.0.0.1:{}", free_port()),
            backend: format!("tcp://127.0.0.1:{}", free_port()),
            capture: None,
        };
        let broker = BrokerConfig {
            endpoint: format!("tcp://127.0.0.1:{}", free_port()),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            bus: BusSettings {
                buses: vec![bus.clone()],
                ..BusSettings::default()
            },
            ..BrokerConfig::default()
        };
        let mut site = Site {
            broker,
            bus,
            shutdown: parent.child_token(),
            task: None,
        };
        site.spawn(runtime);
        site
    }

    fn spawn(&mut self, runtime: &tokio::runtime::Runtime) {
        let config = self.broker.clone();
        let shutdown = self.shutdown.clone();
        self.task = Some(runtime.spawn(async move {
            plantd_broker::run(config, shutdown)
                .await
                .map_err(|e| e.to_string())
        }));
        wait_healthy("the broker", self.broker.health_port, self.task.as_ref());
    }

    /// Stops the broker, waits for it to return, and starts it again on the same ports.
    pub fn restart(&mut self, runtime: &tokio::runtime::Runtime, parent: &Shutdown) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let result = runtime
                .block_on(async { tokio::time::timeout(DEADLINE, task).await })
                .expect("broker stopped in time")
                .expect("broker task");
            result.expect("broker returned Ok");
        }
        self.shutdown = parent.child_token();
        self.spawn(runtime);
    }

    /// A publisher on this site's metric bus.
    pub fn publisher(&self) -> Publisher {
        Publisher::connect(&self.bus.frontend).expect("publisher")
    }

    /// A subscriber on this site's metric bus, for `prefix`.
    pub fn subscriber(&self, prefix: &str) -> Subscriber {
        let subscriber = Subscriber::connect(&self.bus.backend).expect("subscriber");
        subscriber.subscribe(prefix).expect("subscribe");
        subscriber
    }
}

/// A bridge running in the test's runtime.
pub struct Bridge {
    pub config: BridgeConfig,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Bridge {
    /// The configuration of a bridge `id` on `site`'s metric bus to `nats`, both ways.
    pub fn config(id: &str, site: &Site, nats: &NatsServer, jetstream: bool) -> BridgeConfig {
        BridgeConfig {
            bridge_id: id.into(),
            nats: NatsSettings {
                url: nats.url(),
                reconnect_max_delay_ms: 100,
                ..NatsSettings::default()
            },
            buses: vec![BridgedBus {
                name: "metric".into(),
                frontend: site.bus.frontend.clone(),
                backend: site.bus.backend.clone(),
                export: vec!["org.plantd.metric.".into()],
                import: vec!["plantd.metric.".into()],
            }],
            jetstream: jetstream.then(|| JetStreamSettings {
                stream: "PLANTD".into(),
                ack_timeout_ms: 2_000,
                ..JetStreamSettings::default()
            }),
            bus_settle_ms: 200,
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            ..BridgeConfig::default()
        }
    }

    /// Starts a bridge and returns once its `/healthz` is UP (NATS and bus sockets connected).
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        parent: &Shutdown,
        config: BridgeConfig,
    ) -> Bridge {
        let bridge = Bridge::launch(runtime, parent, config);
        wait_healthy(
            "the bridge",
            bridge.config.health_port,
            bridge.task.as_ref(),
        );
        bridge
    }

    /// Starts a bridge and returns once its `/healthz` answers, UP or not.
    pub fn launch(
        runtime: &tokio::runtime::Runtime,
        parent: &Shutdown,
        config: BridgeConfig,
    ) -> Bridge {
        let shutdown = parent.child_token();
        let run_config = config.clone();
        let stop = shutdown.clone();
        let task = runtime.spawn(async move {
            plantd_bridge_nats::run(run_config, stop)
                .await
                .map_err(|e| e.to_string())
        });
        let url = format!("http://127.0.0.1:{}/healthz", config.health_port);
        wait_until("the bridge answers /healthz", || {
            assert!(!task.is_finished(), "the bridge exited during startup");
            reqwest::blocking::get(&url).is_ok()
        });
        Bridge {
            config,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the bridge and waits until it has returned `Ok`.
    pub fn stop(&mut self, runtime: &tokio::runtime::Runtime) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let result = runtime
                .block_on(async { tokio::time::timeout(DEADLINE, task).await })
                .expect("bridge stopped in time")
                .expect("bridge task");
            result.expect("bridge returned Ok");
        }
    }

    /// The sum of the samples of `name` whose labels include every `label="value"` of `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(self.config.health_port, name, labels)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The status of `GET /healthz` on `port`, and its body.
pub fn healthz(port: u16) -> (u16, String) {
    let response =
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).expect("GET /healthz");
    let status = response.status().as_u16();
    (status, response.text().expect("body"))
}

/// The sum of `name`'s samples at `http://127.0.0.1:<port>/metrics` with all of `labels`.
pub fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .and_then(|r| r.text())
        .expect("GET /metrics");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, l)) => (n, l),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

fn wait_healthy(what: &str, port: u16, task: Option<&tokio::task::JoinHandle<Result<(), String>>>) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    wait_until(&format!("{what} is UP"), || {
        if let Some(task) = task {
            assert!(!task.is_finished(), "{what} exited during startup");
        }
        reqwest::blocking::get(&url).is_ok_and(|r| r.status() == 200)
    });
}

/// A tokio runtime for the services of a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Publishes probes on `publisher` (topic `<topic>.<n>`) until one arrives at `subscriber`;
/// the readiness barrier of a path through the bridge. Returns how many were sent.
pub fn probe_until_through(publisher: &Publisher, subscriber: &Subscriber, topic: &str) -> u64 {
    let end = Instant::now() + DEADLINE;
    let mut sent = 0u64;
    loop {
        assert!(Instant::now() < end, "no probe on {topic} got through");
        publisher
            .publish(&format!("{topic}.{sent}"), b"probe")
            .expect("publish probe");
        sent += 1;
        let until = Instant::now() + Duration::from_millis(100);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match subscriber.recv_timeout(left).expect("recv") {
                Some(m) if m.topic.starts_with(topic) => return sent,
                Some(_) => {}
                None => break,
            }
        }
    }
}

/// Receives from `subscriber` until a message on `sentinel` arrives; returns what came before
/// it (the sentinel bounds the wait instead of a sleep).
pub fn collect_until(subscriber: &Subscriber, sentinel: &str) -> Vec<BusMessage> {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = end
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("the sentinel {sentinel} never arrived; saw {seen:?}"));
        match subscriber.recv_timeout(left).expect("recv") {
            Some(m) if m.topic == sentinel => return seen,
            Some(m) => seen.push(m),
            None => panic!("the sentinel {sentinel} never arrived; saw {seen:?}"),
        }
    }
}
