//! Introspection: the broker's MMI answers as JSON (`mmi.services`, `mmi.workers`,
//! `mmi.broker`), for dashboards and scripts.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::reply::ApiError;
use crate::router::AppState;

/// `GET /api/v1/services`: every service the broker knows, with worker and queue counts.
#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "introspection",
    responses(
        (status = 200, description = "[{name, workers, idle, queued}] (mmi.services)"),
        (status = 503, description = "broker unreachable"),
    )
)]
pub async fn services(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let services = app
        .client
        .services()
        .await
        .map_err(|e| app.client_error(&e))?;
    Ok(Json(services).into_response())
}

/// `GET /api/v1/services/{service}`: one service's counts.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}",
    tag = "introspection",
    params(("service" = String, Path, description = "MDP service")),
    responses(
        (status = 200, description = "{name, workers, idle, queued}"),
        (status = 404, description = "the broker does not know it"),
    )
)]
pub async fn service(
    State(app): State<Arc<AppState>>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let services = app
        .client
        .services()
        .await
        .map_err(|e| app.client_error(&e))?;
    match services.into_iter().find(|s| s.name == service) {
        Some(info) => Ok(Json(info).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "SERVICE_NOT_FOUND",
            format!("the broker knows no service {service:?}"),
        )),
    }
}

/// `GET /api/v1/services/{service}/workers`: the service's workers.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/workers",
    tag = "introspection",
    params(("service" = String, Path, description = "MDP service")),
    responses(
        (status = 200, description = "[{id, service, dialect, state, credit, in_flight, requests, last_seen_ms_ago}] (mmi.workers)"),
        (status = 404, description = "the broker does not know it"),
    )
)]
pub async fn workers(
    State(app): State<Arc<AppState>>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let workers = app
        .client
        .workers(&service)
        .await
        .map_err(|e| app.client_error(&e))?;
    Ok(Json(workers).into_response())
}

/// `GET /api/v1/broker`: the broker's version, uptime, counters and buses.
#[utoipa::path(
    get,
    path = "/api/v1/broker",
    tag = "introspection",
    responses(
        (status = 200, description = "mmi.broker as JSON"),
        (status = 503, description = "broker unreachable"),
    )
)]
pub async fn broker(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let info = app
        .client
        .broker_info()
        .await
        .map_err(|e| app.client_error(&e))?;
    Ok(Json(info).into_response())
}
