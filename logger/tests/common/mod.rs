//! Test harness: a real broker with its three buses, a real logger and (optionally) the real metric
//! module, all on free loopback ports in one tokio runtime, with the logger's SQLite in a tempdir.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::time::Duration;

use plantd_broker::bus::{BusConfig, BusSettings};
use plantd_broker::BrokerConfig;
pub use plantd_logger::store::Backend;
use plantd_logger::{BusSubscription, LoggerConfig};
use plantd_module_metric::MetricModuleConfig;
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::free_port;
use plantd_worker_sdk::Shutdown;
use serde_json::{json, Value};

/// Generous for a loaded 2-core machine; never waited for on success.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub use plantd_worker_sdk::testing::wait_until;

/// Broker + buses + logger (+ metric module) running until dropped.
pub struct System {
    pub runtime: tokio::runtime::Runtime,
    pub shutdown: Shutdown,
    /// Stops only the broker (a child of `shutdown`).
    broker_shutdown: Shutdown,
    pub broker_endpoint: String,
    pub broker_health: u16,
    pub buses: Vec<BusConfig>,
    pub logger: LoggerConfig,
    pub tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    _dir: tempfile::TempDir,
}

impl System {
    /// Starts the broker (buses `state`, `event`, `metric` on free ports) and a logger subscribed
    /// to all of them, tuned by `tweak`; returns once both report UP.
    pub fn start(tweak: impl FnOnce(&mut LoggerConfig)) -> System {
        let system = Self::launch(|_| {}, tweak);
        system.wait_healthy("logger", system.logger.health_port);
        system
    }

    /// [`start`](Self::start) with the logger storing into `backend` (on PostgreSQL, a fresh
    /// database in this binary's private cluster); `None` when PostgreSQL is not installed here
    /// (the test is skipped, with a message, unless `PLANTD_REQUIRE_POSTGRES` is set).
    pub fn start_on(backend: Backend, tweak: impl FnOnce(&mut LoggerConfig)) -> Option<System> {
        let postgres = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(plantd_pg_util::testing::fresh_database()?),
        };
        Some(Self::start(|c| {
            if let Some(dsn) = postgres {
                c.store = Backend::Postgres;
                c.postgres = plantd_pg_util::PostgresConfig::with_dsn(dsn);
            }
            tweak(c)
        }))
    }

    /// Like [`start`](Self::start) with the broker tuned too, and returning once the broker is UP
    /// and the logger started (not waiting for the logger to report UP).
    pub fn launch(
        broker_tweak: impl FnOnce(&mut BrokerConfig),
        tweak: impl FnOnce(&mut LoggerConfig),
    ) -> System {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let shutdown = Shutdown::new();
        let buses: Vec<BusConfig> = ["state", "event", "metric"]
            .into_iter()
            .map(|name| BusConfig {
                name: name.into(),
                frontend: format!("tcp://127.0.0.1:{}", free_port()),
                backend: format!("tcp://127.0.0.1:{}", free_port()),
                capture: None,
            })
            .collect();
        let broker = BrokerConfig {
            endpoint: format!("tcp://127.0.0.1:{}", free_port()),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            heartbeat_interval_ms: 250,
            bus: BusSettings {
                buses: buses.clone(),
                ..BusSettings::default()
            },
            ..BrokerConfig::default()
        };
        let mut broker = broker;
        broker_tweak(&mut broker);
        let mut logger = LoggerConfig {
            broker_endpoint: broker.endpoint.clone(),
            db: dir.path().join("logger.db"),
            buses: buses
                .iter()
                .map(|b| BusSubscription {
                    name: b.name.clone(),
                    endpoint: b.backend.clone(),
                })
                .collect(),
            flush_interval_ms: 20,
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            auth: plantd_worker_sdk::auth::AuthConfig::off(),
            ..LoggerConfig::default()
        };
        tweak(&mut logger);
        let mut system = System {
            broker_endpoint: broker.endpoint.clone(),
            broker_health: broker.health_port,
            buses,
            logger: logger.clone(),
            tasks: Vec::new(),
            broker_shutdown: shutdown.child_token(),
            shutdown: shutdown.clone(),
            runtime,
            _dir: dir,
        };
        let broker_shutdown = system.broker_shutdown.clone();
        let task = system.runtime.spawn(async move {
            plantd_broker::run(broker, broker_shutdown)
                .await
                .map_err(|e| e.to_string())
        });
        system.tasks.push(task);
        system.wait_healthy("broker", system.broker_health);
        let shutdown = system.shutdown.clone();
        let task = system.runtime.spawn(async move {
            plantd_logger::run(logger, shutdown)
                .await
                .map_err(|e| e.to_string())
        });
        system.tasks.push(task);
        system
    }

    /// Stops the broker (the first task) and waits until it has returned `Ok`.
    pub fn stop_broker(&mut self) {
        self.broker_shutdown.cancel();
        let task = self.tasks.remove(0);
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(DEADLINE, task).await });
        let result = result.expect("broker stopped in time").expect("task");
        result.expect("broker returned Ok");
    }

    /// Starts the metric module producer on the metric bus, sampling every `interval_ms`.
    pub fn start_metric_producer(&mut self, source: &str, interval_ms: u64) -> u16 {
        let config = MetricModuleConfig {
            bus_frontend: self.bus("metric").frontend.clone(),
            interval_ms,
            source: source.into(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            ..MetricModuleConfig::default()
        };
        let port = config.health_port;
        let shutdown = self.shutdown.clone();
        let task = self.runtime.spawn(async move {
            plantd_module_metric::run(config, shutdown)
                .await
                .map_err(|e| e.to_string())
        });
        self.tasks.push(task);
        self.wait_healthy("metric module", port);
        port
    }

    pub fn bus(&self, name: &str) -> &BusConfig {
        self.buses
            .iter()
            .find(|b| b.name == name)
            .expect("configured bus")
    }

    fn wait_healthy(&self, what: &str, port: u16) {
        let url = format!("http://127.0.0.1:{port}/healthz");
        wait_until(&format!("the {what} is UP"), || {
            if let Some(done) = self.tasks.iter().find(|t| t.is_finished()) {
                panic!("a service exited during startup: {done:?}");
            }
            reqwest::blocking::get(&url).is_ok_and(|r| r.status() == 200)
        });
    }

    /// GET `http://127.0.0.1:<port><path>` as text.
    pub fn http(&self, port: u16, path: &str) -> (u16, String) {
        let response =
            reqwest::blocking::get(format!("http://127.0.0.1:{port}{path}")).expect("GET");
        let status = response.status().as_u16();
        (status, response.text().expect("body"))
    }

    /// Sends `[operation, params]` to `org.plantd.Logger` and returns the parsed reply envelope.
    pub fn query(&self, operation: &str, params: Value) -> Value {
        let client = Client::connect(&self.broker_endpoint)
            .expect("client")
            .with_timeout(DEADLINE);
        let reply = client
            .request(
                plantd_logger::SERVICE,
                vec![
                    operation.as_bytes().to_vec(),
                    params.to_string().into_bytes(),
                ],
            )
            .expect("logger reply");
        assert_eq!(reply.len(), 1, "one JSON frame");
        serde_json::from_slice(&reply[0]).expect("JSON reply")
    }

    /// Like [`query`](Self::query), insisting on success and returning `data`.
    pub fn data(&self, operation: &str, params: Value) -> Value {
        let reply = self.query(operation, params.clone());
        assert_eq!(
            reply["success"],
            json!(true),
            "{operation} {params}: {reply}"
        );
        reply["data"].clone()
    }

    /// Stops everything and checks every service returned `Ok`.
    pub fn stop(mut self) {
        self.shutdown.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let result = self
                .runtime
                .block_on(async { tokio::time::timeout(DEADLINE, task).await });
            let result = result.expect("service stopped in time").expect("task");
            result.expect("service returned Ok");
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The value of one Prometheus sample line (`name{labels}` exactly as rendered), or 0.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}
