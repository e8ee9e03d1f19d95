//! The HTTP/1.1 server under the API: accepts connections, hands each request its peer address
//! (`ConnectInfo`), and protects the process from slow and silent clients.
//!
//! - A connection that does not deliver a request's headers within `header_read_timeout` (a new
//!   one, or a keep-alive one between requests) is closed; so is one beyond `max_connections`.
//!   A thousand silent connections cost a thousand idle tasks, not the service.
//! - Shutdown stops accepting at once, lets requests in flight finish, and closes whatever is
//!   still open after the grace period (SSE tails end themselves on shutdown).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::error::ProxyError;
use crate::Shutdown;

/// Connection limits of the API server.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Longest wait for a request's headers (and keep-alive idle time).
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long shutdown waits for open requests.
    pub grace: Duration,
}

/// Binds `addr` now (a taken port is a startup error) and returns the server future.
pub async fn bind(
    addr: SocketAddr,
    app: Router,
    limits: ServerLimits,
    shutdown: Shutdown,
) -> Result<impl std::future::Future<Output = ()>, ProxyError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind { addr, source })?;
    Ok(serve(listener, app, limits, shutdown))
}

async fn serve(listener: TcpListener, app: Router, limits: ServerLimits, shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Connection tasks, so those still open after the grace period can be closed.
    let mut connections = tokio::task::JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set follows the open ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, say: give open connections a moment to close.
                tracing::warn!(error = %e, "proxy cannot accept a connection");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                max = limits.max_connections,
                "proxy full; connection closed"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            // Errors are clients going away or timing out: nothing to report.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = limits.grace.as_millis() as u64,
            "requests still open after the shutdown grace period; closing them"
        );
    }
    connections.abort_all();
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
