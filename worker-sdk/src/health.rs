//! `/healthz` and `/metrics` over HTTP, shared by every plantd process.
//!
//! A process creates one [`Health`], registers named [`Check`]s (for example `broker_connection`,
//! `database`), flips them UP or DOWN as reality changes, and serves them with [`serve`]. The body
//! follows DESIGN.md §6 (the "health+json" draft shape); the status is UP only while every check is.
//! `/metrics` renders the process's Prometheus registry in text format.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::{json, Value};
use thiserror::Error;

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
    /// The server failed while running.
    #[error("health server failed: {0}")]
    Serve(std::io::Error),
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

/// Like [`serve`], for any router (the proxy serves its API and health on one port).
pub async fn serve_router(
    addr: SocketAddr,
    app: Router,
    shutdown: Shutdown,
) -> Result<impl std::future::Future<Output = Result<(), HealthError>>, HealthError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })?;
    Ok(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(HealthError::Serve)
    })
}
