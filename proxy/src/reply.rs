//! From MDP to HTTP: the status a broker error or a service reply stands for, and [`ApiError`],
//! the JSON error every failed request answers with.
//!
//! Service replies follow DESIGN.md §5 (`{"success":false,"error":{"code":...}}`); their body is
//! always passed on as the service sent it, with the status its code maps to. The proxy's own
//! errors use the same envelope, so a client reads every error one way.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use plantd_worker_sdk::client::ClientError;
use serde_json::{json, Value};

/// A failed request as HTTP: a status and a JSON body `{"success":false,"error":{code,message}}`
/// (or a service's own error body), with `Retry-After` for limits.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// Seconds to wait, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error of the proxy's own, with a stable `code` and a message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({"success": false, "error": {"code": code, "message": message.into()}}),
            retry_after: None,
        }
    }

    /// `400 INVALID_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// A refusal by a limit: `status` with `Retry-After: seconds`.
    pub fn limited(status: StatusCode, code: &str, message: &str, seconds: u64) -> ApiError {
        ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(status, code, message)
        }
    }

    /// The error a failed MDP call stands for. `broker_up` tells a timeout with the broker
    /// unreachable (`503`) from one where the service was slow (`504`).
    pub fn from_client(error: &ClientError, broker_up: bool) -> ApiError {
        use ClientError as E;
        let (status, code) = match error {
            E::NotFound => (StatusCode::NOT_FOUND, "SERVICE_NOT_FOUND"),
            E::QueueFull => (StatusCode::SERVICE_UNAVAILABLE, "QUEUE_FULL"),
            E::Expired => (StatusCode::GATEWAY_TIMEOUT, "EXPIRED"),
            E::Timeout if broker_up => (StatusCode::GATEWAY_TIMEOUT, "TIMEOUT"),
            E::Timeout | E::BrokerDisconnected | E::Closed | E::Authentication { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "BROKER_UNAVAILABLE")
            }
            E::Worker(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            E::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            E::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            E::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            E::Broker { code, .. } => (
                code.parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::BAD_GATEWAY),
                "BROKER_ERROR",
            ),
            E::Protocol(_) => (StatusCode::BAD_GATEWAY, "BAD_REPLY"),
            E::InvalidEndpoint(_) | E::Zmq(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body.to_string(),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

/// The status a service error code stands for (DESIGN.md §5, §9).
pub fn status_for_code(code: &str) -> StatusCode {
    match code {
        "INVALID_REQUEST" => StatusCode::BAD_REQUEST,
        "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
        c if c.starts_with("TOKEN_") => StatusCode::UNAUTHORIZED,
        "PERMISSION_DENIED" => StatusCode::FORBIDDEN,
        c if c.ends_with("_NOT_FOUND") => StatusCode::NOT_FOUND,
        "CONFLICT" | "SCOPE_EXISTS" => StatusCode::CONFLICT,
        "RATE_LIMITED" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// The status of a service's JSON reply: `200` unless it is `{"success":false,...}`, then what
/// its error code maps to.
pub fn status_for_reply(reply: &Value) -> StatusCode {
    if reply.get("success") != Some(&Value::Bool(false)) {
        return StatusCode::OK;
    }
    let code = reply
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    status_for_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_map_as_documented() {
        for (code, status) in [
            ("INVALID_REQUEST", 400),
            ("UNAUTHENTICATED", 401),
            ("TOKEN_EXPIRED", 401),
            ("TOKEN_REVOKED", 401),
            ("PERMISSION_DENIED", 403),
            ("SCOPE_NOT_FOUND", 404),
            ("USER_NOT_FOUND", 404),
            ("CONFLICT", 409),
            ("SCOPE_EXISTS", 409),
            ("RATE_LIMITED", 429),
            ("STORAGE_ERROR", 502),
            ("UNAVAILABLE", 502),
        ] {
            assert_eq!(status_for_code(code).as_u16(), status, "{code}");
        }
    }

    #[test]
    fn broker_errors_map_as_documented() {
        let status = |e: ClientError, up| ApiError::from_client(&e, up).status.as_u16();
        assert_eq!(status(ClientError::NotFound, true), 404);
        assert_eq!(status(ClientError::QueueFull, true), 503);
        assert_eq!(status(ClientError::Expired, true), 504);
        assert_eq!(status(ClientError::Timeout, true), 504);
        assert_eq!(status(ClientError::Timeout, false), 503);
        assert_eq!(status(ClientError::Worker("boom".into()), true), 500);
    }

    #[test]
    fn a_successful_reply_is_200() {
        assert_eq!(status_for_reply(&json!({"success": true})), StatusCode::OK);
        assert_eq!(status_for_reply(&json!([1, 2])), StatusCode::OK);
        assert_eq!(
            status_for_reply(&json!({"success": false, "error": {"code": "CONFLICT"}})),
            StatusCode::CONFLICT
        );
    }
}
