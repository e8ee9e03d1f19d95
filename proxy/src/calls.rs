//! Calls onto MDP services: `POST /api/v1/services/{service}/{operation}` (`[operation, json]`),
//! identity's `POST /api/v1/services/org.plantd.Identity/{category}/{operation}`
//! (`[category, operation, json]`) and `POST /api/v1/request/{service}` (any frames).
//!
//! Without `Accept: text/event-stream` the response is the FINAL reply; with it, every PARTIAL is
//! an SSE `partial` event as it arrives and the FINAL is the `final` event (or an `error` event),
//! the last one. Each call goes through the shared async client, which holds no lock across a
//! request; its timeout is the configured one or `X-Request-Timeout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use plantd_worker_sdk::client::{AsyncReplyStream, Reply};
use plantd_worker_sdk::Frames;
use serde_json::Value;

use crate::buses::StreamGuard;
use crate::frames::{call_body, decode_frames, encode_frames, reply_json};
use crate::limits;
use crate::reply::{status_for_reply, ApiError};
use crate::router::{body_bytes, AppState, ServiceLabel};

/// How a reply is shown: a service call's JSON, or `/request`'s frames.
#[derive(Clone, Copy)]
enum Shape {
    Json,
    Frames,
}

/// `POST /api/v1/services/{service}/{operation}`.
#[utoipa::path(
    post,
    path = "/api/v1/services/{service}/{operation}",
    tag = "calls",
    params(
        ("service" = String, Path, description = "MDP service, e.g. org.plantd.State"),
        ("operation" = String, Path, description = "operation, the request's first frame"),
        ("X-Request-Timeout" = Option<u64>, Header, description = "timeout in ms, up to max_request_timeout_ms"),
    ),
    request_body(content = Object, description = "the operation's JSON body; a Bearer token is added as `token`"),
    responses(
        (status = 200, description = "the service's JSON reply (SSE with Accept: text/event-stream)"),
        (status = 400, description = "malformed JSON or INVALID_REQUEST"),
        (status = 401, description = "UNAUTHENTICATED, TOKEN_*"),
        (status = 403, description = "PERMISSION_DENIED, or outside the proxy's broker policy"),
        (status = 404, description = "no such service, or *_NOT_FOUND"),
        (status = 409, description = "CONFLICT, SCOPE_EXISTS"),
        (status = 413, description = "body over max_body_bytes"),
        (status = 429, description = "rate limited (Retry-After)"),
        (status = 500, description = "the worker failed"),
        (status = 502, description = "another service error code"),
        (status = 503, description = "queue full, broker unreachable, or too many requests in flight"),
        (status = 504, description = "expired in the queue or timed out"),
    )
)]
pub async fn call_service(
    State(app): State<Arc<AppState>>,
    Path((service, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if service == app.config.identity_service {
        return Err(ApiError::bad_request(format!(
            "{service} takes /{{category}}/{{operation}}, e.g. /api/v1/services/{service}/auth/login"
        )));
    }
    let body = call_body(&body_bytes(body)?, limits::bearer(&headers), None)?;
    let frames = vec![operation.into_bytes(), body];
    dispatch(&app, service, frames, &headers, Shape::Json).await
}

/// `POST /api/v1/services/{service}/{category}/{operation}`: identity's three-frame calls.
#[utoipa::path(
    post,
    path = "/api/v1/services/{service}/{category}/{operation}",
    tag = "calls",
    params(
        ("service" = String, Path, description = "org.plantd.Identity (the only service with categories)"),
        ("category" = String, Path, description = "auth, user, organization, role, api_key, audit, health"),
        ("operation" = String, Path, description = "operation within the category"),
        ("X-Request-Timeout" = Option<u64>, Header, description = "timeout in ms"),
    ),
    request_body(content = Object, description = "the operation's JSON body; on auth/* the client address is added as ip_address"),
    responses(
        (status = 200, description = "identity's JSON reply"),
        (status = 400, description = "malformed JSON, INVALID_REQUEST, or not identity"),
        (status = 401, description = "UNAUTHENTICATED, TOKEN_*"),
        (status = 403, description = "PERMISSION_DENIED"),
        (status = 404, description = "*_NOT_FOUND"),
        (status = 409, description = "CONFLICT"),
        (status = 429, description = "RATE_LIMITED"),
    )
)]
pub async fn call_identity(
    State(app): State<Arc<AppState>>,
    Path((service, category, operation)): Path<(String, String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if service != app.config.identity_service {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ROUTE_NOT_FOUND",
            format!(
                "only {} takes /{{category}}/{{operation}}; other services take /{{operation}}",
                app.config.identity_service
            ),
        ));
    }
    // Identity rate-limits logins per source: give it the browser's address, not ours.
    let ip = (category == "auth")
        .then(|| limits::client_ip(peer.ip(), &headers, &app.config.trusted_proxies).to_string());
    let body = call_body(&body_bytes(body)?, limits::bearer(&headers), ip.as_deref())?;
    let frames = vec![category.into_bytes(), operation.into_bytes(), body];
    dispatch(&app, service, frames, &headers, Shape::Json).await
}

/// `POST /api/v1/request/{service}`: any frames, as `{"frames": [...]}`.
#[utoipa::path(
    post,
    path = "/api/v1/request/{service}",
    tag = "calls",
    params(
        ("service" = String, Path, description = "any MDP service"),
        ("X-Request-Timeout" = Option<u64>, Header, description = "timeout in ms"),
    ),
    request_body(content = Object, description = "{\"frames\": [\"text\", {\"base64\": \"AAE=\"}]}"),
    responses(
        (status = 200, description = "{\"frames\": [...]} in the same form (SSE with Accept: text/event-stream)"),
        (status = 400, description = "not {frames: [...]}"),
        (status = 404, description = "no such service"),
        (status = 503, description = "queue full or broker unreachable"),
        (status = 504, description = "expired or timed out"),
    )
)]
pub async fn raw_request(
    State(app): State<Arc<AppState>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let frames = decode_frames(&body_bytes(body)?)?;
    dispatch(&app, service, frames, &headers, Shape::Frames).await
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Sends `frames` to `service` and answers with the FINAL, or streams every reply as SSE.
async fn dispatch(
    app: &Arc<AppState>,
    service: String,
    frames: Frames,
    headers: &HeaderMap,
    shape: Shape,
) -> Result<Response, ApiError> {
    let timeout = limits::request_timeout(
        headers,
        app.config.request_timeout(),
        app.config.max_request_timeout(),
    )?;
    let client = app.client.clone().with_timeout(timeout);
    let mut replies = client
        .request_stream(&service, frames)
        .map_err(|e| app.client_error(&e))?;
    let mut response = if wants_sse(headers) {
        let gauge = app.metrics.sse_streams.with_label_values(&["call"]);
        gauge.inc();
        let events = reply_events(replies, app.clone(), shape, StreamGuard(gauge));
        Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response()
    } else {
        let frames = loop {
            match replies.next().await {
                Some(Ok(Reply::Partial(_))) => continue,
                Some(Ok(Reply::Final(frames))) => break frames,
                Some(Err(e)) => return Err(app.client_error(&e)),
                None => return Err(app.client_error(&plantd_worker_sdk::ClientError::Closed)),
            }
        };
        let (status, body) = render(&frames, shape);
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    response.extensions_mut().insert(ServiceLabel(service));
    Ok(response)
}

/// A reply as HTTP status and JSON.
fn render(frames: &[Vec<u8>], shape: Shape) -> (StatusCode, Value) {
    match shape {
        Shape::Json => {
            let value = reply_json(frames);
            (status_for_reply(&value), value)
        }
        Shape::Frames => (StatusCode::OK, encode_frames(frames)),
    }
}

/// The SSE events of a streamed call: `partial`s, then `final` or `error`, then the end.
fn reply_events(
    replies: AsyncReplyStream,
    app: Arc<AppState>,
    shape: Shape,
    guard: StreamGuard,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(Some((replies, app, guard)), move |state| async move {
        let (mut replies, app, guard) = state?;
        let event = match replies.next().await? {
            Ok(Reply::Partial(frames)) => {
                let event = Event::default()
                    .event("partial")
                    .data(render(&frames, shape).1.to_string());
                return Some((Ok(event), Some((replies, app, guard))));
            }
            Ok(Reply::Final(frames)) => Event::default()
                .event("final")
                .data(render(&frames, shape).1.to_string()),
            Err(e) => {
                let error = app.client_error(&e);
                let mut body = error.body;
                body["status"] = error.status.as_u16().into();
                Event::default().event("error").data(body.to_string())
            }
        };
        // The last event: the next poll ends the stream (and drops the guard).
        Some((Ok(event), None))
    })
}
