//! The plantd worker SDK: everything a plantd process shares.
//!
//! - [`protocol`]: the only MDP codec (three dialects) and the error-reply format.
//! - [`client`]: blocking and async MDP clients, with MMI helpers.
//! - [`worker`]: the MDP worker runtime (sessions, heartbeats, reconnects, handlers).
//! - [`health`]: `/healthz` and `/metrics` over HTTP.
//! - [`config`]: layered configuration (flags > env > file > defaults).
//! - [`telemetry`]: `tracing` setup (text or JSON lines).
//! - [`testing`]: helpers for integration tests (free loopback ports).

pub mod config;
pub mod health;
pub mod protocol;
pub mod telemetry;
pub mod testing;

/// The shutdown signal every `run(config, shutdown)` takes: cancel it to stop the service.
pub type Shutdown = tokio_util::sync::CancellationToken;
