//! [`BridgeError`]: why the bridge could not start or stopped with an error. (Single messages
//! that cannot cross are dropped and counted, never errors: see [`crate::metrics`].)

use plantd_worker_sdk::bus::BusError;
use plantd_worker_sdk::health::HealthError;

/// Why the bridge could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The health/metrics server could not bind its address.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// A bus socket could not be created.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// The NATS client could not be set up (bad URL, unreadable credentials file, ...).
    #[error("nats: {0}")]
    Nats(String),
    /// A JetStream stream or consumer could not be found or created.
    #[error("jetstream: {0}")]
    JetStream(String),
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
