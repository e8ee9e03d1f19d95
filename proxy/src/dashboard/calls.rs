//! The dashboard's data calls: `POST /dashboard/api/{target}/{operation}`, made on the user's
//! behalf with the session's access token, so state, the logger and identity decide what the
//! user may do; their refusals come back as they sent them (`PERMISSION_DENIED` with the
//! permission named), with the status their code maps to.
//!
//! Only the operations the pages use are reachable this way ([`operation`]); anything else is
//! `404 OPERATION_NOT_ALLOWED`. Every call needs the session and its CSRF token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use plantd_worker_sdk::Frames;
use serde_json::{Map, Value};

use super::auth::{access_token, check_csrf, session_of};
use crate::frames::reply_json;
use crate::reply::{status_for_reply, ApiError};
use crate::router::{body_bytes, AppState, ServiceLabel};

/// The state service.
pub const STATE_SERVICE: &str = "org.plantd.State";
/// The logger.
pub const LOGGER_SERVICE: &str = "org.plantd.Logger";

/// State operations the state page uses.
const STATE_OPERATIONS: [&str; 7] = [
    "list-scopes",
    "list-keys",
    "state-get",
    "state-set",
    "delete",
    "create-scope",
    "delete-scope",
];
/// Logger queries the metrics and events pages use.
const LOGGER_OPERATIONS: [&str; 3] = ["metrics-summary", "metrics-query", "events-query"];

/// The service and leading frames of dashboard operation `target`/`operation`, if it is one.
pub fn operation(
    target: &str,
    operation: &str,
    identity_service: &str,
) -> Option<(String, Frames)> {
    match target {
        "state" if STATE_OPERATIONS.contains(&operation) => {
            Some((STATE_SERVICE.into(), vec![operation.as_bytes().to_vec()]))
        }
        "logger" if LOGGER_OPERATIONS.contains(&operation) => {
            Some((LOGGER_SERVICE.into(), vec![operation.as_bytes().to_vec()]))
        }
        "audit" if operation == "list" => Some((
            identity_service.to_owned(),
            vec![b"audit".to_vec(), b"list".to_vec()],
        )),
        _ => None,
    }
}

/// Sends `frames` to `service` and returns its reply as JSON; broker failures are the API's
/// usual errors (`503 BROKER_UNAVAILABLE`, `504 TIMEOUT`, ...).
pub async fn call(app: &AppState, service: &str, frames: Frames) -> Result<Value, ApiError> {
    let client = app
        .client
        .clone()
        .with_timeout(app.config.request_timeout());
    let reply = client
        .request(service, frames)
        .await
        .map_err(|e| app.client_error(&e))?;
    Ok(reply_json(&reply))
}

/// `CODE: message` of an error envelope, for messages.
pub fn envelope_error(reply: &Value) -> String {
    let code = reply
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN");
    let message = reply
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{code}: {message}")
}

/// `POST /dashboard/api/{target}/{operation}`: `state/*`, `logger/*`, `audit/list`.
pub async fn dispatch(
    State(app): State<Arc<AppState>>,
    Path((target, op)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let authed = session_of(&app, &headers)?;
    check_csrf(&authed.session, &headers)?;
    let Some((service, mut frames)) = operation(&target, &op, &app.config.identity_service) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "OPERATION_NOT_ALLOWED",
            format!("the dashboard does not offer {target}/{op}"),
        ));
    };
    let body = body_bytes(body)?;
    let mut object = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(ApiError::bad_request("the body must be a JSON object")),
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "the body is not valid JSON: {e}"
                )))
            }
        }
    };
    // The session's token, whatever the page sent.
    object.insert(
        "token".into(),
        Value::String(access_token(&app, &authed).await?),
    );
    object.remove("access_token");
    frames.push(serde_json::to_vec(&Value::Object(object)).expect("a JSON map serializes"));
    let reply = call(&app, &service, frames).await?;
    let mut response = (status_for_reply(&reply), Json(reply)).into_response();
    response.extensions_mut().insert(ServiceLabel(service));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pages_operations_are_offered() {
        let id = "org.plantd.Identity";
        assert!(operation("state", "state-set", id).is_some());
        assert!(operation("state", "backup", id).is_none());
        assert!(operation("logger", "metrics-summary", id).is_some());
        assert!(operation("logger", "stats", id).is_none());
        let (service, frames) = operation("audit", "list", id).unwrap();
        assert_eq!(service, id);
        assert_eq!(frames, vec![b"audit".to_vec(), b"list".to_vec()]);
        assert!(operation("identity", "user", id).is_none());
    }
}
