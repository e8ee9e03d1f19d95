//! The echo module: an MDP worker for `org.plantd.module.Echo` that replies with the request's
//! frames unchanged (any number of frames, empty ones included), plus `/healthz` and `/metrics`.
//!
//! The Go CLI's `["echo", json]` requests therefore come back identical. `/healthz` reports the
//! `broker_connection` check: UP while at least one session is registered with the broker.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use plantd_worker_sdk::health::{self, Health, HealthError};
use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::telemetry::LogFormat;
use plantd_worker_sdk::worker::WorkerError;
use plantd_worker_sdk::{Frames, Shutdown, Worker};
use prometheus::{IntCounter, Registry};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::info;

/// The MDP service this module serves.
pub const SERVICE: &str = "org.plantd.module.Echo";

/// Configuration (env `PLANTD_ECHO_<KEY>`, file `echo.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EchoConfig {
    /// Broker MDP endpoint to register with.
    /// Several brokers, comma-separated, get one worker session set each (DESIGN.md §8).
    pub broker_endpoint: String,
    /// MDP version spoken to the broker: `0.2` (default), `0.1` (zguide brokers) or `go`.
    pub protocol: Dialect,
    /// Address `/healthz` and `/metrics` listen on.
    pub health_host: String,
    /// Port `/healthz` and `/metrics` listen on.
    pub health_port: u16,
    /// Sessions with the broker, i.e. requests echoed in parallel.
    pub concurrency: usize,
    /// Requests each session may hold at once (plantd's credit extension; 1 is plain MDP).
    pub credit: u32,
    /// Heartbeat interval in milliseconds; should match the broker's.
    pub heartbeat_interval_ms: u64,
    /// Silent heartbeat intervals before the broker is considered lost.
    pub heartbeat_liveness: u32,
    /// Log filter (an `EnvFilter` directive such as `info`).
    pub log_level: String,
    /// Log line format: `text` or `json`.
    pub log_format: LogFormat,
    /// CURVE keys (`curve.secret_key_file`, `curve.server_key` or `curve.server_key_file`;
    /// `PLANTD_ECHO_CURVE__...`): with them every broker socket is a CURVE client. Unset: plain.
    pub curve: plantd_worker_sdk::curve::CurveConfig,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            broker_endpoint: "tcp://127.0.0.1:9797".into(),
            protocol: Dialect::V02,
            health_host: "0.0.0.0".into(),
            health_port: 8086,
            concurrency: 1,
            credit: 1,
            heartbeat_interval_ms: 2500,
            heartbeat_liveness: 3,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            curve: Default::default(),
        }
    }
}

/// Why the echo module stopped with an error.
#[derive(Debug, Error)]
pub enum EchoError {
    /// A setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The worker could not start.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The health server could not start or failed.
    #[error(transparent)]
    Health(#[from] HealthError),
}

/// Runs the echo worker and its health server until `shutdown` is cancelled.
pub async fn run(config: EchoConfig, shutdown: Shutdown) -> Result<(), EchoError> {
    let host: IpAddr = config
        .health_host
        .parse()
        .map_err(|e| EchoError::Config(format!("health_host {:?}: {e}", config.health_host)))?;
    let health = Health::new(env!("CARGO_PKG_VERSION"));
    let registry = Registry::new();
    let requests = IntCounter::new(
        "plantd_echo_requests_total",
        "Requests echoed by this module",
    )
    .and_then(|c| registry.register(Box::new(c.clone())).map(|()| c))
    .map_err(|e| EchoError::Config(format!("metrics: {e}")))?;

    let curve = config
        .curve
        .client()
        .map_err(|e| EchoError::Config(format!("curve: {e}")))?;
    let worker = Worker::builder(SERVICE)
        .endpoints(plantd_worker_sdk::config::broker_endpoints(
            &config.broker_endpoint,
        ))
        .curve(curve)
        .dialect(config.protocol)
        .heartbeat(Duration::from_millis(config.heartbeat_interval_ms))
        .liveness(config.heartbeat_liveness)
        .concurrency(config.concurrency)
        .credit(config.credit)
        .connection_check(health.check("broker_connection"))
        .handler(move |request: Frames| {
            requests.inc();
            Ok(request)
        })
        .build()?;

    // Either half failing stops the other.
    let stop = shutdown.child_token();
    let addr = SocketAddr::new(host, config.health_port);
    let server = health::serve(addr, health, registry, stop.clone()).await?;
    info!(
        service = SERVICE,
        broker = %config.broker_endpoint,
        protocol = %config.protocol,
        health = %addr,
        "echo module started"
    );
    let server = async {
        let result = server.await;
        stop.cancel();
        result
    };
    let worker = async {
        let result = worker.run(stop.clone()).await;
        stop.cancel();
        result
    };
    let (worker, server) = tokio::join!(worker, server);
    worker?;
    server?;
    info!("echo module stopped");
    Ok(())
}

impl plantd_worker_sdk::service::ServiceConfig for EchoConfig {
    fn log_level(&self) -> &str {
        &self.log_level
    }
    fn log_format(&self) -> plantd_worker_sdk::telemetry::LogFormat {
        self.log_format
    }
}
