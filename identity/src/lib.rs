//! `plantd-identity`: users, organizations, roles, tokens and API keys behind MDP service
//! `org.plantd.Identity`.
//!
//! - [`store`]: SQLite (WAL), one writer thread with group commit, pooled readers; one module per
//!   table family.
//! - [`migrations`]: versioned schema (through `plantd-sqlite-util`).
//! - [`ops`]: the operations `[category, operation, json]`, the caller's authentication and
//!   authorization, request parsing and the reply envelope.
//! - [`codes`]: the stable error codes.
//! - [`password`]: argon2id hashing and the NIST password policy.
//! - [`permissions`]: permission names and the permissions identity's operations need.
//! - [`tokens`]: signing keys, access tokens (the SDK's `Claims`), refresh tokens, API keys.
//! - [`limits`]: the per-source rate limit and the lockout of unknown identifiers.
//! - [`events`]: revocations, permission changes and audit rows on the `event` bus.
//! - [`bootstrap`]: the first admin user; [`bootstrap::admin_password_path`] for `plantd up`.
//! - [`metrics`]: Prometheus metrics.
//! - [`config`]: the service settings, [`IdentityConfig`].
//! - [`service`]: [`run`], wiring all of it to the broker and `/healthz`.

pub mod bootstrap;
pub mod codes;
pub mod config;
pub mod events;
pub mod limits;
pub mod metrics;
pub mod migrations;
pub mod ops;
pub mod password;
pub mod permissions;
pub mod service;
pub mod store;
pub mod tokens;

pub use bootstrap::admin_password_path;
pub use config::IdentityConfig;
pub use plantd_worker_sdk::Shutdown;
pub use service::{run, IdentityError};
