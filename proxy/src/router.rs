//! The HTTP API as one axum [`Router`]: its routes (recorded as they are added, so the OpenAPI
//! test can compare the document with what is really served), the state every handler shares,
//! and the layers around them: metrics and access log, CORS, rate limits, the in-flight cap, the
//! body limit, and JSON errors for unknown routes and methods.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use plantd_worker_sdk::auth::TokenVerifier;
use plantd_worker_sdk::client::{AsyncClient, ClientError};
use plantd_worker_sdk::curve::ClientCurve;
use plantd_worker_sdk::health::{Check, Health, HEALTH_CONTENT_TYPE};
use plantd_worker_sdk::Shutdown;
use tokio::sync::Semaphore;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::buses::{self, Buses};
use crate::config::{CorsConfig, ProxyConfig};
use crate::dashboard::{self, Dashboard};
use crate::limits::{self, RateLimits};
use crate::metrics::ProxyMetrics;
use crate::reply::ApiError;
use crate::{calls, introspect, openapi};

/// What every handler shares.
pub struct AppState {
    /// The one async MDP client (a pool of sockets, one per request in flight).
    pub client: AsyncClient,
    /// The effective configuration.
    pub config: ProxyConfig,
    /// Metrics.
    pub metrics: ProxyMetrics,
    /// Per-address and per-token buckets.
    pub limits: RateLimits,
    /// One permit per request in flight.
    pub in_flight: Arc<Semaphore>,
    /// UP while the broker answers; tells `503` (no broker) from `504` (slow service).
    pub broker_check: Check,
    /// `/healthz`.
    pub health: Health,
    /// Checks `bus:publish`; `None` when `auth.mode` is `off`.
    pub verifier: Option<TokenVerifier>,
    /// Bus endpoints and publishers.
    pub buses: Buses,
    /// CURVE keys for bus subscribers.
    pub curve: Option<ClientCurve>,
    /// Ends SSE streams at shutdown.
    pub shutdown: Shutdown,
    /// The web dashboard's sessions and live snapshot.
    pub dashboard: Arc<Dashboard>,
}

impl AppState {
    /// The HTTP error a failed MDP call stands for.
    pub fn client_error(&self, error: &ClientError) -> ApiError {
        ApiError::from_client(error, self.broker_check.is_up())
    }
}

/// The service a response came from, for the `service` metric label; set by handlers only for
/// services that answered.
#[derive(Clone, Debug)]
pub struct ServiceLabel(pub String);

/// A request body, or the JSON error its rejection stands for (`413` over the limit).
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "BODY_TOO_LARGE",
            _ => "INVALID_REQUEST",
        };
        ApiError::new(status, code, rejection.body_text())
    })
}

/// The routes, with the OpenAPI form (`{param}`) of each path and its method, in the order
/// they were added.
pub struct Routes {
    router: Router<Arc<AppState>>,
    list: Vec<(Method, String)>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            list: Vec::new(),
        }
    }

    /// Adds `handler` for `method` at `path` (OpenAPI syntax, `{name}`).
    fn add(mut self, method: Method, path: &str, handler: MethodRouter<Arc<AppState>>) -> Routes {
        // axum 0.7 writes parameters as `:name`.
        let axum_path = path.replace('{', ":").replace('}', "");
        self.router = self.router.route(&axum_path, handler);
        self.list.push((method, path.to_owned()));
        self
    }

    /// Every `(method, path)` served.
    pub fn list(&self) -> &[(Method, String)] {
        &self.list
    }
}

/// The API's routes, without state or layers.
pub fn routes() -> Routes {
    Routes::new()
        .add(Method::GET, "/healthz", get(healthz))
        .add(Method::GET, "/api/openapi.json", get(openapi::document))
        .add(
            Method::POST,
            "/api/v1/services/{service}/{operation}",
            post(calls::call_service),
        )
        .add(
            Method::POST,
            "/api/v1/services/{service}/{category}/{operation}",
            post(calls::call_identity),
        )
        .add(
            Method::POST,
            "/api/v1/request/{service}",
            post(calls::raw_request),
        )
        .add(Method::GET, "/api/v1/services", get(introspect::services))
        .add(
            Method::GET,
            "/api/v1/services/{service}",
            get(introspect::service),
        )
        .add(
            Method::GET,
            "/api/v1/services/{service}/workers",
            get(introspect::workers),
        )
        .add(Method::GET, "/api/v1/broker", get(introspect::broker))
        .add(Method::GET, "/api/v1/buses/{bus}", get(buses::tail))
        .add(
            Method::POST,
            "/api/v1/buses/{bus}/{topic}",
            post(buses::publish),
        )
}

/// The whole app: routes, state and layers.
pub fn app(state: Arc<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    let cors = cors_layer(&state.config.cors);
    let router = routes().router;
    // The dashboard's routes are its own, outside the OpenAPI document.
    let router = match state.config.dashboard.enabled {
        true => router.merge(dashboard::routes()),
        false => router,
    };
    let router = router
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .with_state(state.clone());
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(middleware::from_fn_with_state(state, observe))
}

fn cors_layer(config: &CorsConfig) -> Option<CorsLayer> {
    if config.allowed_origins.is_empty() {
        return None;
    }
    let origins = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::HeaderName::from_static(limits::REQUEST_TIMEOUT_HEADER),
            ])
            .max_age(std::time::Duration::from_secs(config.max_age_secs)),
    )
}

/// Rate limits, then the in-flight cap; the permit is held until the response head is ready.
async fn admit(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    // `/healthz` answers even under load: it is how load balancers see the proxy.
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let ip = limits::client_ip(peer, request.headers(), &app.config.trusted_proxies);
    if let Err((limit, retry_after)) = app.limits.check(ip, limits::bearer(request.headers())) {
        app.metrics
            .rate_limited
            .with_label_values(&[limit.label()])
            .inc();
        return limits::rate_limited(limit, retry_after).into_response();
    }
    let Ok(_permit) = app.in_flight.clone().try_acquire_owned() else {
        app.metrics
            .rate_limited
            .with_label_values(&["in_flight"])
            .inc();
        return ApiError::limited(
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            "too many requests in flight",
            1,
        )
        .into_response();
    };
    app.metrics.in_flight.inc();
    let response = next.run(request).await;
    app.metrics.in_flight.dec();
    response
}

/// Counts and times every request and logs it at debug (method, route, status, latency; never
/// headers or bodies, which carry tokens).
async fn observe(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let service = response
        .extensions()
        .get::<ServiceLabel>()
        .map(|s| s.0.as_str())
        .unwrap_or("");
    app.metrics
        .requests
        .with_label_values(&[&route, status.as_str(), service])
        .inc();
    app.metrics
        .latency
        .with_label_values(&[&route])
        .observe(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, status = status.as_u16(), service, latency_us = elapsed.as_micros() as u64, "request");
    response
}

async fn unknown_route(request: Request<Body>) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ROUTE_NOT_FOUND",
        format!("no route {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request<Body>) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// `GET /healthz` on the API port: the same body as on the health port.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "UP (application/health+json)"),
        (status = 503, description = "DOWN: the broker does not answer"),
    )
)]
pub async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    let status = match app.health.is_up() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        [(header::CONTENT_TYPE, HEALTH_CONTENT_TYPE)],
        app.health.to_json().to_string(),
    )
        .into_response()
}
