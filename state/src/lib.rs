//! `plantd-state`: the scoped key/value store behind MDP service `org.plantd.State`.
//!
//! - [`store`]: SQLite (WAL, the default) or PostgreSQL (`store: postgres`, shared by several
//!   services), each with group commit and pooled readers.
//! - [`migrations`]: versioned schema (SQLite; the PostgreSQL schema is in [`store::postgres`]).
//! - [`migrate`]: `migrate-to-postgres`, copying a SQLite file into PostgreSQL.
//! - [`ops`]: the operations, request parsing and the reply envelope.
//! - [`codes`]: the stable error codes.
//! - [`auth`]: the [`auth::Authorizer`] hook and permission names.
//! - [`changes`]: change notifications ([`changes::ChangePublisher`]); [`bus_publisher`] puts them
//!   on the `state` bus.
//! - [`backup`]: online backups and their schedule.
//! - [`metrics`]: Prometheus metrics.
//! - [`config`]: the service settings, [`StateConfig`].
//! - [`service`]: [`run`], wiring all of it to the broker and `/healthz`.

pub mod auth;
pub mod backup;
pub mod bus_publisher;
pub mod changes;
pub mod codes;
pub mod config;
pub mod metrics;
pub mod migrate;
pub mod migrations;
pub mod ops;
pub mod service;
pub mod store;

pub use config::StateConfig;
pub use plantd_worker_sdk::Shutdown;
pub use service::{run, run_with, Hooks, StateError};
