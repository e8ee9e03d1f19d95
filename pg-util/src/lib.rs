//! PostgreSQL helpers the state service and the logger share, so each rule lives once.
//!
//! - [`blocking`]: [`BlockingRuntime`], a store's own runtime with a blocking `run`.
//! - [`config`]: [`PostgresConfig`], the `postgres:` settings block (DSN, password file, pool
//!   size, TLS root certificate), with the password kept out of logs and `--print-config`.
//! - [`tls`]: the rustls connector, verifying the server's certificate and host name.
//! - [`migrations`]: versioned schema migrations recorded in a table, applied once under an
//!   advisory lock so several services starting together take turns.
//! - [`testing`]: a private PostgreSQL cluster for tests (run as the `postgres` user when we are
//!   root), skipped with a message where PostgreSQL is not installed.

pub mod blocking;
pub mod config;
pub mod migrations;
pub mod testing;
pub mod tls;

pub use blocking::BlockingRuntime;
pub use config::{PgError, PostgresConfig};
pub use deadpool_postgres::{Object as PooledClient, Pool};
pub use {deadpool_postgres, tokio_postgres};

/// True when `e` is a failure worth retrying the whole transaction for: a serialization failure
/// (`40001`), a deadlock (`40P01`), or a foreign-key or unique violation caused by a concurrent
/// writer (`23503`, `23505`) that a fresh attempt resolves.
pub fn is_retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|code| {
        [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::FOREIGN_KEY_VIOLATION,
            SqlState::UNIQUE_VIOLATION,
        ]
        .contains(code)
    })
}
