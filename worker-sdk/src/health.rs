//! `/healthz` and `/metrics` over HTTP, shared by every plantd process.
//!
//! A process creates one [`Health`], registers named [`Check`]s (for example `broker_connection`,
//! `database`), flips them UP or DOWN as reality changes, and serves them with [`serve`]. The body
//! follows DESIGN.md §6 (the "health+json" draft shape); the status is UP only while every check is.
//! `/metrics` renders the process's Prometheus registry in text format.
//!
//! The server is HTTP/1 on hyper with [`ServerLimits`], so slow or idle clients cannot pile up
//! connections: a connection that does not deliver a request's headers in time (a fresh one, or
//! a keep-alive one between requests) is closed, and beyond a connection cap new connections are
//! closed as soon as they are accepted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::Shutdown;

/// Content type of `/healthz` responses.
pub const HEALTH_CONTENT_TYPE: &str = "application/health+json";

/// Errors from the health HTTP server.
#[derive(Debug, Error)]
pub enum HealthError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address we tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct CheckState {
    name: String,
    up: bool,
    output: Option<String>,
    last_updated: DateTime<Utc>,
}

/// The health of one process: a release id and a set of named checks.
#[derive(Clone, Debug)]
pub struct Health {
    release_id: Arc<str>,
    checks: Arc<Mutex<Vec<CheckState>>>,
}

/// One named check of a [`Health`]. Starts DOWN until [`Check::up`] is called.
#[derive(Clone, Debug)]
pub struct Check {
    index: usize,
    checks: Arc<Mutex<Vec<CheckState>>>,
}

impl Health {
    /// A health with no checks yet; `release_id` is usually `env!("CARGO_PKG_VERSION")`.
    pub fn new(release_id: &str) -> Self {
        Health {
            release_id: release_id.into(),
            checks: Arc::default(),
        }
    }

    /// Registers (or returns the existing) check called `name`, initially DOWN.
    pub fn check(&self, name: &str) -> Check {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let index = match checks.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                checks.push(CheckState {
                    name: name.to_owned(),
                    up: false,
                    output: Some("not yet checked".into()),
                    last_updated: Utc::now(),
                });
                checks.len() - 1
            }
        };
        Check {
            index,
            checks: self.checks.clone(),
        }
    }

    /// True when every check is UP (and there is at least one).
    pub fn is_up(&self) -> bool {
        let checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        !checks.is_empty() && checks.iter().all(|c| c.up)
    }

    /// The `/healthz` body.
    pub fn to_json(&self) -> Value {
        let checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let status = |up: bool| if up { "UP" } else { "DOWN" };
        let all_up = !checks.is_empty() && checks.iter().all(|c| c.up);
        let checks: Vec<Value> = checks
            .iter()
            .map(|c| {
                let mut v = json!({
                    "name": c.name,
                    "status": status(c.up),
                    "lastUpdated": c.last_updated.to_rfc3339_opts(SecondsFormat::Millis, true),
                });
                if let Some(output) = &c.output {
                    v["output"] = json!(output);
                }
                v
            })
            .collect();
        json!({
            "version": "1",
            "releaseId": &*self.release_id,
            "status": status(all_up),
            "checks": checks,
        })
    }
}

impl Check {
    /// Marks the check UP.
    pub fn up(&self) {
        self.set(true, None);
    }

    /// Marks the check UP with a note shown in `/healthz` (`output`), for a state worth telling
    /// that is not a failure (the broker running insecure on purpose, say).
    pub fn up_with(&self, note: impl Into<String>) {
        self.set(true, Some(note.into()));
    }

    /// Marks the check DOWN with a reason shown in `/healthz`.
    pub fn down(&self, reason: impl Into<String>) {
        self.set(false, Some(reason.into()));
    }

    /// Sets UP or DOWN from a result.
    pub fn set_result<E: std::fmt::Display>(&self, result: &Result<(), E>) {
        match result {
            Ok(()) => self.up(),
            Err(e) => self.down(e.to_string()),
        }
    }

    /// True if the check is currently UP.
    pub fn is_up(&self) -> bool {
        let checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        checks[self.index].up
    }

    fn set(&self, up: bool, output: Option<String>) {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let c = &mut checks[self.index];
        // Only touch the timestamp on a change so `lastUpdated` says when the state last moved.
        if c.up != up || c.output != output {
            c.up = up;
            c.output = output;
            c.last_updated = Utc::now();
        }
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    registry: Registry,
}

/// The `/healthz` + `/metrics` routes, for processes that merge them into a larger HTTP app.
pub fn router(health: Health, registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(AppState { health, registry })
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let code = if state.health.is_up() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, HEALTH_CONTENT_TYPE)],
        state.health.to_json().to_string(),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&state.registry.gather(), &mut buf) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            e.to_string().into_bytes(),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        buf,
    )
}

/// How the health server guards its connections. The defaults suit `/healthz` probes and
/// Prometheus scrapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest the server waits for a request's complete headers: from accepting a connection,
    /// and again after each response on a keep-alive connection, so this is also how long an idle
    /// keep-alive connection is kept (hyper's `header_read_timeout`). Then the connection closes.
    pub header_read_timeout: Duration,
    /// Most connections served at once. Beyond it a new connection is closed as soon as it is
    /// accepted, without a response, rather than queued behind slow clients.
    pub max_connections: usize,
    /// How long shutdown lets requests in flight finish before closing what is still open.
    pub grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            grace: Duration::from_secs(10),
        }
    }
}

/// Binds `addr` now (so a port clash is reported at startup) and returns the server future, which
/// serves `/healthz` and `/metrics` until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    registry: Registry,
    shutdown: Shutdown,
) -> Result<impl std::future::Future<Output = Result<(), HealthError>>, HealthError> {
    serve_router(addr, router(health, registry), shutdown).await
}

/// [`serve`] with explicit [`ServerLimits`].
pub async fn serve_with(
    addr: SocketAddr,
    health: Health,
    registry: Registry,
    limits: ServerLimits,
    shutdown: Shutdown,
) -> Result<impl std::future::Future<Output = Result<(), HealthError>>, HealthError> {
    serve_router_with(addr, router(health, registry), limits, shutdown).await
}

/// Like [`serve`], for any router (the proxy serves its API and health on one port).
pub async fn serve_router(
    addr: SocketAddr,
    app: Router,
    shutdown: Shutdown,
) -> Result<impl std::future::Future<Output = Result<(), HealthError>>, HealthError> {
    serve_router_with(addr, app, ServerLimits::default(), shutdown).await
}

/// [`serve_router`] with explicit [`ServerLimits`].
pub async fn serve_router_with(
    addr: SocketAddr,
    app: Router,
    limits: ServerLimits,
    shutdown: Shutdown,
) -> Result<impl std::future::Future<Output = Result<(), HealthError>>, HealthError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })?;
    Ok(accept_loop(listener, app, limits, shutdown))
}

/// Accepts connections until `shutdown`, then lets the open ones finish their current request
/// for up to `limits.grace` and closes the rest. Each request carries its peer address
/// (`ConnectInfo<SocketAddr>`) for handlers that need it.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: Shutdown,
) -> Result<(), HealthError> {
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
            // The peer gave up before we got to it.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, say: give the open connections a moment to close.
                tracing::warn!(error = %e, "HTTP server cannot accept a connection");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                max = limits.max_connections,
                "HTTP server full; connection closed"
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
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;

    use super::*;
    use crate::testing::{free_port, wait_until, WAIT_DEADLINE};

    /// A health server with `limits` on a free port, on a runtime of its own.
    struct Server {
        addr: SocketAddr,
        runtime: tokio::runtime::Runtime,
        stop: Shutdown,
        task: tokio::task::JoinHandle<Result<(), HealthError>>,
    }

    impl Server {
        fn start(limits: ServerLimits) -> Server {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let health = Health::new("test");
            health.check("always").up();
            let stop = Shutdown::new();
            let server = runtime
                .block_on(serve_with(
                    addr,
                    health,
                    Registry::new(),
                    limits,
                    stop.clone(),
                ))
                .unwrap();
            let task = runtime.spawn(server);
            Server {
                addr,
                runtime,
                stop,
                task,
            }
        }

        fn connect(&self) -> TcpStream {
            let stream = TcpStream::connect(self.addr).unwrap();
            // Only reached if the server fails to close a connection: the test then fails.
            stream.set_read_timeout(Some(WAIT_DEADLINE)).unwrap();
            stream
        }

        /// GET /healthz on a fresh connection; the status code, or `None` if the server closed
        /// the connection without answering.
        fn get(&self) -> Option<u16> {
            let mut stream = self.connect();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).ok()?;
            response.get(9..12)?.parse().ok()
        }

        fn stop(self) {
            self.stop.cancel();
            self.runtime
                .block_on(async { tokio::time::timeout(WAIT_DEADLINE, self.task).await })
                .expect("server stopped in time")
                .unwrap()
                .unwrap();
        }
    }

    /// Reads until the server closes `stream`; panics if it is still open after the read timeout.
    fn assert_closed_by_server(mut stream: TcpStream, what: &str) {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("{what}: still open ({e})"),
            }
        }
    }

    fn limits(header_read_timeout: Duration, max_connections: usize) -> ServerLimits {
        ServerLimits {
            header_read_timeout,
            max_connections,
            ..ServerLimits::default()
        }
    }

    #[test]
    fn a_client_that_never_finishes_its_headers_is_disconnected() {
        let server = Server::start(limits(Duration::from_millis(200), 16));
        let mut slow = server.connect();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
            .unwrap();
        assert_closed_by_server(slow, "a connection with half a request line");
        // One that sends nothing at all fares the same.
        assert_closed_by_server(server.connect(), "a silent connection");
        assert_eq!(server.get(), Some(200));
        server.stop();
    }

    #[test]
    fn an_idle_keep_alive_connection_is_closed() {
        let server = Server::start(limits(Duration::from_millis(200), 16));
        let mut stream = server.connect();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        // The response comes, and then, with no next request, the close.
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        assert_closed_by_server(stream, "an idle keep-alive connection");
        server.stop();
    }

    #[test]
    fn connections_beyond_the_cap_are_closed_and_service_resumes_when_slots_free() {
        // Headers may take a minute here: only the cap can close the extra connections.
        let server = Server::start(limits(Duration::from_secs(60), 2));
        // The server accepts in connection order, so these two hold the slots before the rest.
        let held = [server.connect(), server.connect()];
        assert_closed_by_server(server.connect(), "a connection beyond the cap");
        assert_eq!(server.get(), None, "answered beyond the cap");
        drop(held);
        // Slots free once the server has seen the held connections close.
        wait_until("/healthz answers again", || server.get() == Some(200));
        server.stop();
    }
}
