//! The logger's error type.

use thiserror::Error;

/// Why the logger could not start or had to stop.
#[derive(Debug, Error)]
pub enum LoggerError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database could not be opened or migrated.
    #[error("database {path}: {source}")]
    Database {
        /// The file, or the redacted PostgreSQL DSN.
        path: String,
        /// Cause.
        source: crate::store::StoreError,
    },
    /// The database failed its integrity check at startup.
    #[error(transparent)]
    Integrity(#[from] plantd_sqlite_util::IntegrityError),
    /// A bus subscriber could not be created.
    #[error(transparent)]
    Bus(#[from] plantd_worker_sdk::bus::BusError),
    /// The MDP worker could not start.
    #[error(transparent)]
    Worker(#[from] plantd_worker_sdk::worker::WorkerError),
    /// The health server could not start.
    #[error(transparent)]
    Health(#[from] plantd_worker_sdk::health::HealthError),
    /// A thread could not be started.
    #[error("cannot start thread: {0}")]
    Thread(#[from] std::io::Error),
}
