//! `plantd-proxy`: the HTTP/JSON and SSE front door onto plantd's MDP services and buses
//! (DESIGN.md §10, `docs/proxy.md`).
//!
//! - [`config`]: the settings, [`ProxyConfig`].
//! - [`router`]: the routes, their shared state and the layers around them.
//! - [`calls`]: service calls (`[operation, json]`, identity's three frames, raw frames), with
//!   SSE for streamed replies.
//! - [`buses`]: bus tails as SSE and publishing.
//! - [`introspect`]: MMI as JSON.
//! - [`dashboard`]: the web dashboard at `/` (sessions, CSRF, the MMI poller and its SSE).
//! - [`frames`]: JSON bodies to frames and back (tokens, addresses, base64).
//! - [`reply`]: MDP outcomes as HTTP statuses, [`reply::ApiError`].
//! - [`limits`]: client address, bearer token, rate limits, in-flight cap, timeouts.
//! - [`openapi`]: the generated OpenAPI document.
//! - [`server`]: the HTTP/1.1 accept loop (slow-client protection, graceful shutdown).
//! - [`metrics`]: Prometheus metrics.
//! - [`service`]: [`run`], wiring it all together.

pub mod buses;
pub mod calls;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod frames;
pub mod introspect;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod reply;
pub mod router;
pub mod server;
pub mod service;

pub use config::{BusEndpoints, DashboardConfig, HealthTarget, ProxyConfig};
pub use error::ProxyError;
pub use plantd_worker_sdk::Shutdown;
pub use service::run;

/// The configuration name: settings are `PLANTD_PROXY_*` and `proxy.yaml`.
pub const SERVICE_NAME: &str = "proxy";
