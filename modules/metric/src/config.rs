//! The metric module's configuration. Its service name is [`SERVICE_NAME`] (`metric`), so every
//! key is `PLANTD_METRIC_<KEY>` and the file `metric.yaml`, like every other service's
//! `PLANTD_<SERVICE>_<KEY>`. The Go system's `PLANTD_MODULE_METRIC_<KEY>` (and
//! `module-metric.yaml`) still work, beneath the new names and with a deprecation warning, so
//! existing deployments keep their settings instead of silently losing them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use plantd_worker_sdk::bus::METRIC_TOPIC_PREFIX;
use plantd_worker_sdk::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

use crate::MetricModuleError;

/// The name the configuration is read under: `PLANTD_METRIC_*`, `metric.yaml`.
pub const SERVICE_NAME: &str = "metric";
/// The Go system's name, still read (deprecated): `PLANTD_MODULE_METRIC_*`, `module-metric.yaml`.
pub const FORMER_NAME: &str = "module-metric";

/// Producer or consumer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Sample this host and publish on the metric bus.
    #[default]
    Producer,
    /// Subscribe to the metric bus and print metrics as JSON lines.
    Consumer,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "producer" => Ok(Mode::Producer),
            "consumer" => Ok(Mode::Consumer),
            other => Err(format!(
                "unknown mode {other:?} (expected producer or consumer)"
            )),
        }
    }
}

/// Everything the metric module can be told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricModuleConfig {
    /// `producer` (default) or `consumer`. The Go variable `PLANTD_MODULE_METRIC_TYPE` is
    /// `PLANTD_METRIC_MODE` here.
    pub mode: Mode,
    /// Metric bus frontend the producer publishes to.
    pub bus_frontend: String,
    /// Metric bus backend the consumer subscribes to.
    pub bus_backend: String,
    /// Sampling interval of the producer, in milliseconds.
    pub interval_ms: u64,
    /// Source name in metrics and topics (default: this host's name).
    pub source: String,
    /// Topic prefix the consumer subscribes to.
    pub topic_prefix: String,
    /// Address `/healthz` and `/metrics` listen on.
    pub health_host: String,
    /// Port `/healthz` and `/metrics` listen on.
    pub health_port: u16,
    /// Log filter (an `EnvFilter` directive).
    pub log_level: String,
    /// Log line format: `text` or `json`.
    pub log_format: LogFormat,
    /// CURVE keys (`curve.secret_key_file`, `curve.server_key` or `curve.server_key_file`;
    /// `PLANTD_METRIC_CURVE__...`): with them every broker socket is a CURVE client. Unset: plain.
    pub curve: plantd_worker_sdk::curve::CurveConfig,
}

impl Default for MetricModuleConfig {
    fn default() -> Self {
        MetricModuleConfig {
            mode: Mode::Producer,
            bus_frontend: "tcp://127.0.0.1:13000".into(),
            bus_backend: "tcp://127.0.0.1:13001".into(),
            interval_ms: 5000,
            source: String::new(),
            topic_prefix: METRIC_TOPIC_PREFIX.into(),
            health_host: "0.0.0.0".into(),
            health_port: 8087,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            curve: Default::default(),
        }
    }
}

impl MetricModuleConfig {
    /// Rejects values that would make the module misbehave.
    pub fn validate(&self) -> Result<(), MetricModuleError> {
        if self.interval_ms == 0 {
            return Err(MetricModuleError::Config(
                "interval_ms must be at least 1".into(),
            ));
        }
        let endpoint = match self.mode {
            Mode::Producer => &self.bus_frontend,
            Mode::Consumer => &self.bus_backend,
        };
        if endpoint.trim().is_empty() {
            return Err(MetricModuleError::Config(
                "the bus endpoint must not be empty".into(),
            ));
        }
        self.health_addr().map(|_| ())
    }

    /// The `/healthz` listen address.
    pub fn health_addr(&self) -> Result<SocketAddr, MetricModuleError> {
        let ip: IpAddr = self.health_host.parse().map_err(|_| {
            MetricModuleError::Config(format!(
                "health_host {:?} is not an IP address",
                self.health_host
            ))
        })?;
        Ok(SocketAddr::new(ip, self.health_port))
    }

    /// The sampling interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The configured source, or this host's name, or `localhost`.
    pub fn source_name(&self) -> String {
        if !self.source.is_empty() {
            return self.source.clone();
        }
        sysinfo::System::host_name()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    }
}

impl plantd_worker_sdk::service::ServiceConfig for MetricModuleConfig {
    fn log_level(&self) -> &str {
        &self.log_level
    }
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
    const FORMER_NAME: Option<&'static str> = Some(FORMER_NAME);
}
