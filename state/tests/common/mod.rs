//! Test harness: a real broker and a real state service on free loopback ports, in one tokio
//! runtime, with a blocking SDK client for the test thread.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use plantd_broker::BrokerConfig;
pub use plantd_state::store::Backend;
use plantd_state::{StateConfig, StateError};
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use plantd_worker_sdk::Shutdown;
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Generous deadline for anything that should happen quickly on an idle machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Harness {
    pub rt: Runtime,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    /// Frontend and backend of the broker's `state` bus.
    pub bus_frontend: String,
    pub bus_backend: String,
    broker_stop: Shutdown,
    broker: Option<JoinHandle<()>>,
    state_stop: Shutdown,
    state: Option<JoinHandle<Result<(), StateError>>>,
    pub state_config: StateConfig,
}

impl Harness {
    /// A broker (with a `state` bus) and nothing else yet.
    pub fn broker_only() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let endpoint = free_endpoint();
        let (front, back) = (free_port(), free_port());
        let broker = BrokerConfig {
            endpoint: endpoint.clone(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            heartbeat_interval_ms: 250,
            // Several brokers run side by side in tests: only a `state` bus, on free ports.
            bus: plantd_broker::bus::BusSettings {
                buses: vec![plantd_broker::bus::BusConfig {
                    name: "state".into(),
                    frontend: format!("tcp://127.0.0.1:{front}"),
                    backend: format!("tcp://127.0.0.1:{back}"),
                    capture: None,
                }],
                ..plantd_broker::bus::BusSettings::default()
            },
            ..BrokerConfig::default()
        };
        let broker_stop = Shutdown::new();
        let stop = broker_stop.clone();
        let broker = rt.spawn(async move {
            plantd_broker::run(broker, stop).await.expect("broker runs");
        });
        let state_config = StateConfig {
            db: dir.path().join("state.db"),
            broker_endpoint: endpoint.clone(),
            heartbeat_ms: 250,
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            bus_endpoint: format!("tcp://127.0.0.1:{front}"),
            // Token checks have their own tests (tests/auth.rs); these test the store.
            auth: plantd_worker_sdk::auth::AuthConfig::off(),
            ..StateConfig::default()
        };
        Harness {
            rt,
            dir,
            endpoint,
            bus_frontend: format!("tcp://127.0.0.1:{front}"),
            bus_backend: format!("tcp://127.0.0.1:{back}"),
            broker_stop,
            broker: Some(broker),
            state_stop: Shutdown::new(),
            state: None,
            state_config,
        }
    }

    /// [`broker_only`](Self::broker_only) with the state service configured for `backend` (a fresh
    /// database in this binary's private PostgreSQL cluster); `None` when PostgreSQL is not
    /// installed here (the test is skipped, with a message, unless `PLANTD_REQUIRE_POSTGRES`).
    pub fn broker_only_on(backend: Backend) -> Option<Self> {
        let mut h = Self::broker_only();
        if backend == Backend::Postgres {
            h.state_config.store = Backend::Postgres;
            h.state_config.postgres = plantd_pg_util::PostgresConfig::with_dsn(
                plantd_pg_util::testing::fresh_database()?,
            );
        }
        Some(h)
    }

    /// [`start`](Self::start) on `backend` (see [`broker_only_on`](Self::broker_only_on)).
    pub fn start_on(backend: Backend) -> Option<Self> {
        let mut h = Self::broker_only_on(backend)?;
        h.start_state();
        Some(h)
    }

    /// A broker and a state service with the default test configuration, ready to serve.
    pub fn start() -> Self {
        let mut h = Self::broker_only();
        h.start_state();
        h
    }

    /// Starts the state service with `self.state_config` and waits until it serves.
    pub fn start_state(&mut self) {
        assert!(self.state.is_none(), "state already running");
        self.state_stop = Shutdown::new();
        let (config, stop) = (self.state_config.clone(), self.state_stop.clone());
        self.state = Some(self.rt.spawn(plantd_state::run(config, stop)));
        self.wait_until_serving();
    }

    /// Stops the state service and waits for it to finish (the database is closed after).
    pub fn stop_state(&mut self) {
        self.state_stop.cancel();
        if let Some(task) = self.state.take() {
            self.rt
                .block_on(task)
                .expect("state task")
                .expect("state service stops cleanly");
        }
    }

    /// Stops the broker (the state service keeps running and tries to reconnect).
    pub fn stop_broker(&mut self) {
        self.broker_stop.cancel();
        if let Some(task) = self.broker.take() {
            let _ = self.rt.block_on(task);
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.endpoint)
            .unwrap()
            .with_timeout(Duration::from_secs(10))
    }

    /// Sends `[op, body]` and returns the reply envelope.
    pub fn call(&self, op: &str, body: Value) -> Value {
        call(&self.client(), op, &body)
    }

    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.state_config.health_port)
    }

    pub fn db_path(&self) -> PathBuf {
        self.state_config.db.clone()
    }

    /// Polls until a state request succeeds through the broker.
    pub fn wait_until_serving(&self) {
        let client = Client::connect(&self.endpoint)
            .unwrap()
            .with_timeout(Duration::from_millis(500));
        wait_for("the state service to serve", || {
            client
                .request("org.plantd.State", vec![b"health".to_vec(), b"{}".to_vec()])
                .is_ok()
        });
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.state_stop.cancel();
        self.broker_stop.cancel();
        if let Some(task) = self.state.take() {
            let _ = self.rt.block_on(task);
        }
        if let Some(task) = self.broker.take() {
            let _ = self.rt.block_on(task);
        }
    }
}

/// Sends `[op, body]` with `client` and parses the one-frame reply.
pub fn call(client: &Client, op: &str, body: &Value) -> Value {
    let reply = client
        .request(
            "org.plantd.State",
            vec![op.as_bytes().to_vec(), body.to_string().into_bytes()],
        )
        .unwrap_or_else(|e| panic!("{op} {body}: {e}"));
    assert_eq!(reply.len(), 1, "one reply frame");
    serde_json::from_slice(&reply[0]).expect("reply is JSON")
}

/// The `data` of a success reply; panics with the reply otherwise.
pub fn data(reply: Value) -> Value {
    assert_eq!(reply["success"], Value::Bool(true), "{reply}");
    reply["data"].clone()
}

/// The error code of a failure reply.
pub fn code(reply: &Value) -> String {
    assert_eq!(reply["success"], Value::Bool(false), "{reply}");
    reply["error"]["code"].as_str().unwrap().to_owned()
}

pub use plantd_worker_sdk::testing::wait_until as wait_for;

/// A `plantd-state` process, killed with SIGKILL when dropped.
pub struct StateProcess(pub std::process::Child);

impl StateProcess {
    /// Starts the real `plantd-state` binary against the harness's broker and database, with
    /// extra environment `env` (`PLANTD_STATE_*` settings).
    pub fn spawn(h: &Harness, env: &[(&str, &str)]) -> StateProcess {
        let mut command = plantd_worker_sdk::testing::service_command(
            env!("CARGO_BIN_EXE_plantd-state"),
            h.dir.path(),
            "PLANTD_STATE_CONFIG",
        );
        if h.state_config.store == Backend::Postgres {
            command
                .env("PLANTD_STATE_STORE", "postgres")
                .env("PLANTD_STATE_POSTGRES__DSN", &h.state_config.postgres.dsn);
        }
        command
            .env("PLANTD_STATE_DB", h.db_path())
            .env("PLANTD_STATE_BROKER_ENDPOINT", &h.endpoint)
            .env("PLANTD_STATE_HEALTH_HOST", "127.0.0.1")
            .env("PLANTD_STATE_HEALTH_PORT", free_port().to_string())
            .env("PLANTD_STATE_HEARTBEAT_MS", "250")
            .env("PLANTD_STATE_AUTH__MODE", "off")
            .env("PLANTD_STATE_LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .args(["--bus-endpoint", ""])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        StateProcess(command.spawn().expect("spawn plantd-state"))
    }
}

impl Drop for StateProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
