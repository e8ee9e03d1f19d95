//! [`ProxyError`]: why the proxy could not start or stopped with an error. (What a single HTTP
//! request answers when it fails is [`crate::reply::ApiError`].)

use plantd_worker_sdk::bus::BusError;
use plantd_worker_sdk::client::ClientError;
use plantd_worker_sdk::health::HealthError;

/// Why the proxy could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The HTTP API or the health/metrics server could not bind its address.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// The MDP client could not be created.
    #[error("broker client: {0}")]
    Client(#[from] ClientError),
    /// A bus publisher could not be created.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
