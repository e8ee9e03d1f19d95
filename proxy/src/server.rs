//! The HTTP/1.1 server under the API: the SDK's hardened accept loop
//! ([`plantd_worker_sdk::health::serve_router_with`]), which hands each request its peer address
//! (`ConnectInfo`) and protects the process from slow and silent clients.
//!
//! - A connection that does not deliver a request's headers within `header_read_timeout` (a new
//!   one, or a keep-alive one between requests) is closed; so is one beyond `max_connections`.
//!   A thousand silent connections cost a thousand idle tasks, not the service.
//! - Shutdown stops accepting at once, lets requests in flight finish, and closes whatever is
//!   still open after the grace period (SSE tails end themselves on shutdown).

use std::net::SocketAddr;

use axum::Router;
use plantd_worker_sdk::health;

pub use plantd_worker_sdk::health::ServerLimits;

use crate::error::ProxyError;
use crate::Shutdown;

/// Binds `addr` now (a taken port is a startup error) and returns the server future.
pub async fn bind(
    addr: SocketAddr,
    app: Router,
    limits: ServerLimits,
    shutdown: Shutdown,
) -> Result<impl std::future::Future<Output = ()>, ProxyError> {
    let server = health::serve_router_with(addr, app, limits, shutdown).await?;
    Ok(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the HTTP API server stopped");
        }
    })
}
