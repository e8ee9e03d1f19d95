//! The plantd worker SDK: everything a plantd process shares.
//!
//! - [`protocol`]: the only MDP codec (three dialects) and the error-reply format.
//! - [`auth`]: the one access-token verifier (identity's Ed25519 JWTs, revocations, permissions).
//! - [`client`]: blocking and async MDP clients, with MMI helpers.
//! - [`curve`]: CURVE keys, key files and the `curve` configuration section every socket uses.
//! - [`worker`]: the MDP worker runtime (sessions, heartbeats, reconnects, handlers).
//! - [`bus`]: pub/sub on the broker's buses (publisher, subscriber, `Metric`/`Event` types).
//! - [`health`]: `/healthz` and `/metrics` over HTTP.
//! - [`config`]: layered configuration (flags > env > file > defaults).
//! - [`telemetry`]: `tracing` setup (text or JSON lines).
//! - [`service`]: the shared `main` of service binaries.
//! - [`signal`]: SIGINT/SIGTERM handling for binaries.
//! - [`sockopt`]: libzmq socket options the `zmq` crate does not expose.
//! - [`wake`]: a doorbell that wakes a thread sleeping in `zmq::poll`.
//! - [`monitor`]: whether a socket is connected, from libzmq's socket events (safely).
//! - [`testing`]: helpers for integration tests (free loopback ports).

pub mod auth;
pub mod bus;
pub mod client;
pub mod config;
pub mod curve;
pub mod health;
pub mod monitor;
pub mod protocol;
pub mod service;
pub mod signal;
pub mod sockopt;
pub mod telemetry;
pub mod testing;
pub mod wake;
pub mod worker;

pub use client::{AsyncClient, Client, ClientError};
pub use worker::{Frames, HandlerError, Responder, Worker, WorkerBuilder};

/// The shutdown signal every `run(config, shutdown)` takes: cancel it to stop the service.
pub type Shutdown = tokio_util::sync::CancellationToken;
