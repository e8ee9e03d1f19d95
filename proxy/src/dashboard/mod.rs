//! The web dashboard (`docs/dashboard.md`), served by the proxy at `/` on its HTTP port.
//!
//! - [`assets`]: the embedded page, script and stylesheet.
//! - [`session`]: the in-memory session store.
//! - [`auth`]: login, logout, the session cookie, CSRF, token refresh.
//! - [`live`]: the one MMI poller and its SSE fan-out, with the throughput history.
//! - [`health`]: the other processes' `/healthz`.
//! - [`calls`]: state, logger and audit calls on the user's behalf.
//!
//! The dashboard's routes are its own (`/dashboard/api/...`), not part of the OpenAPI document;
//! the bus tails it shows are the API's `GET /api/v1/buses/{bus}`.

pub mod assets;
pub mod auth;
pub mod calls;
pub mod health;
pub mod live;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::config::DashboardConfig;
use crate::router::AppState;

/// What the dashboard keeps: sessions and the latest snapshot.
pub struct Dashboard {
    /// Logged-in browsers.
    pub sessions: session::SessionStore,
    /// The latest MMI snapshot.
    pub live: Arc<live::Live>,
}

impl Dashboard {
    /// An empty dashboard for `config`.
    pub fn new(config: &DashboardConfig) -> Dashboard {
        Dashboard {
            sessions: session::SessionStore::new(
                Duration::from_secs(config.session_idle_secs),
                config.max_sessions,
            ),
            live: Arc::new(live::Live::new()),
        }
    }
}

/// The dashboard's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(assets::index))
        .route("/favicon.ico", get(assets::icon))
        .route("/dashboard/favicon.svg", get(assets::icon))
        .route("/dashboard/app.js", get(assets::script))
        .route("/dashboard/app.css", get(assets::style))
        .route("/dashboard/api/session", get(auth::current))
        .route("/dashboard/api/login", post(auth::login))
        .route("/dashboard/api/logout", post(auth::logout))
        .route("/dashboard/api/live", get(live::stream))
        .route("/dashboard/api/:target/:operation", post(calls::dispatch))
        .layer(axum::middleware::map_response(no_store))
}

/// Dashboard answers (the CSRF token, the user's data) are never cached; the static files set
/// their own `Cache-Control`.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
