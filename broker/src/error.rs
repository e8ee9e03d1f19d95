//! Why the broker could not start or had to stop.

use thiserror::Error;

/// Errors returned by [`crate::run`].
#[derive(Debug, Error)]
pub enum BrokerError {
    /// A configuration value is unusable.
    #[error("invalid broker configuration: {0}")]
    Config(String),
    /// A ZeroMQ socket could not be created, configured or bound.
    #[error("cannot set up the broker socket on {endpoint}: {source}")]
    Socket {
        /// The endpoint (or `inproc` wake-up address) involved.
        endpoint: String,
        /// What libzmq said.
        source: zmq::Error,
    },
    /// The health/metrics HTTP server failed.
    #[error(transparent)]
    Health(#[from] plantd_worker_sdk::health::HealthError),
    /// Registering a Prometheus metric failed (a programming error, reported rather than panicking).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The broker loop thread could not be started, or it died.
    #[error("broker loop failed: {0}")]
    Loop(String),
}
