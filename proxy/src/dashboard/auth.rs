//! Login, logout and the session behind every dashboard request.
//!
//! - `POST /dashboard/api/login` (`{identifier, password}`, `Content-Type: application/json`
//!   only, which a cross-site form cannot send) exchanges the credentials with identity
//!   (`auth/login`, with the browser's address as `ip_address`) and sets the session cookie:
//!   `HttpOnly; SameSite=Strict; Path=/`, plus `Secure` when `dashboard.secure_cookie` is set. A
//!   refused login sets no cookie.
//! - `GET /dashboard/api/session` says whether the browser is logged in, as whom, with which
//!   permissions, and gives the page its CSRF token.
//! - `POST /dashboard/api/logout` ends the session at identity (`auth/logout`) and here.
//!
//! Every state-changing request (any `POST` but the login) must carry the session's CSRF token
//! in `X-CSRF-Token`, compared in constant time: `403 CSRF_MISSING` / `403 CSRF_INVALID`
//! otherwise. No cookie is `401 SESSION_REQUIRED`; an unknown, forged, idle or ended one is
//! `401 SESSION_INVALID`. The access token is refreshed with identity (`auth/refresh`) shortly
//! before it expires; when that fails the session ends (`401 SESSION_EXPIRED`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cookie::{Cookie, SameSite};
use serde::Deserialize;
use serde_json::{json, Value};

use super::calls::{call, envelope_error};
use super::session::{Session, Tokens};
use crate::limits;
use crate::reply::{status_for_code, ApiError};
use crate::router::{body_bytes, AppState};

/// The session cookie's name.
pub const COOKIE: &str = "plantd_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long before its expiry an access token is refreshed.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A request's session, found by its cookie.
pub struct Authed {
    /// The session id (from the cookie).
    pub id: String,
    /// The session.
    pub session: Arc<Session>,
}

/// The value of the session cookie, if the request has one.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_owned())
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(id: &str, secure: bool) -> String {
    Cookie::build((COOKIE, id))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(secure)
        .build()
        .to_string()
}

/// The `Set-Cookie` value that makes the browser forget the session cookie.
fn removal_cookie(secure: bool) -> String {
    let mut cookie = Cookie::build((COOKIE, ""))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(secure)
        .build();
    cookie.make_removal();
    cookie.to_string()
}

/// The request's session: `401 SESSION_REQUIRED` without a cookie, `401 SESSION_INVALID` for one
/// this proxy does not hold.
pub fn session_of(app: &AppState, headers: &HeaderMap) -> Result<Authed, ApiError> {
    let Some(id) = cookie_value(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "SESSION_REQUIRED",
            "not logged in: log in to the dashboard first",
        ));
    };
    match app.dashboard.sessions.get(&id) {
        Some(session) => Ok(Authed { id, session }),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "SESSION_INVALID",
            "the session is unknown or has ended: log in again",
        )),
    }
}

/// Refuses a state-changing request without the session's CSRF token.
pub fn check_csrf(session: &Session, headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(CSRF_HEADER).map(HeaderValue::to_str) {
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CSRF_MISSING",
            "this request changes state and needs the X-CSRF-Token header",
        )),
        Some(Ok(token)) if session.csrf_matches(token) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CSRF_INVALID",
            "the X-CSRF-Token header does not match this session",
        )),
    }
}

/// The session's access token, refreshed with identity when it is about to expire. A failed
/// refresh ends the session.
pub async fn access_token(app: &AppState, authed: &Authed) -> Result<String, ApiError> {
    let mut tokens = authed.session.tokens.lock().await;
    if Instant::now() < tokens.refresh_at {
        return Ok(tokens.access.clone());
    }
    let reply = call(
        app,
        &app.config.identity_service,
        vec![
            b"auth".to_vec(),
            b"refresh".to_vec(),
            json!({"refresh_token": tokens.refresh})
                .to_string()
                .into_bytes(),
        ],
    )
    .await?;
    match parse_tokens(&reply) {
        Some(new) => {
            *tokens = new;
            Ok(tokens.access.clone())
        }
        None => {
            app.dashboard.sessions.remove(&authed.id);
            app.metrics
                .dashboard_sessions
                .set(app.dashboard.sessions.len() as i64);
            let why = envelope_error(&reply);
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "SESSION_EXPIRED",
                format!("the session could not be renewed ({why}): log in again"),
            ))
        }
    }
}

/// The tokens of a successful `auth/login` or `auth/refresh` reply.
fn parse_tokens(reply: &Value) -> Option<Tokens> {
    if reply["success"] != Value::Bool(true) {
        return None;
    }
    let data = &reply["data"];
    let expires_in = data["expires_in"].as_u64().unwrap_or(0);
    let lifetime = Duration::from_secs(expires_in);
    let refresh_in = lifetime.checked_sub(REFRESH_MARGIN).unwrap_or(lifetime / 2);
    Some(Tokens {
        access: data["access_token"].as_str()?.to_owned(),
        refresh: data["refresh_token"].as_str()?.to_owned(),
        refresh_at: Instant::now() + refresh_in,
    })
}

/// The body of a login.
#[derive(Deserialize)]
struct LoginBody {
    identifier: String,
    password: String,
}

/// `POST /dashboard/api/login`.
pub async fn login(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "JSON_REQUIRED",
            "a login is a JSON body {identifier, password} with Content-Type: application/json",
        ));
    }
    let body = body_bytes(body)?;
    let login: LoginBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "a login is {{\"identifier\": ..., \"password\": ...}}: {e}"
        ))
    })?;
    let ip = limits::client_ip(peer.ip(), &headers, &app.config.trusted_proxies).to_string();
    let identity = &app.config.identity_service;
    let reply = call(
        &app,
        identity,
        vec![
            b"auth".to_vec(),
            b"login".to_vec(),
            json!({"identifier": login.identifier, "password": login.password, "ip_address": ip})
                .to_string()
                .into_bytes(),
        ],
    )
    .await?;
    let Some(tokens) = parse_tokens(&reply) else {
        let code = reply
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("");
        let status = match code {
            "LOGIN_FAILED" => StatusCode::UNAUTHORIZED,
            "ACCOUNT_LOCKED" => StatusCode::FORBIDDEN,
            other => status_for_code(other),
        };
        return Ok((status, Json(reply)).into_response());
    };
    let validated = call(
        &app,
        identity,
        vec![
            b"auth".to_vec(),
            b"validate".to_vec(),
            json!({"token": tokens.access}).to_string().into_bytes(),
        ],
    )
    .await?;
    let username = reply
        .pointer("/data/user/username")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let permissions: Vec<String> = validated
        .pointer("/data/permissions")
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // A browser that logs in again leaves its previous session behind.
    if let Some(previous) = cookie_value(&headers) {
        app.dashboard.sessions.remove(&previous);
    }
    let (id, session) = app.dashboard.sessions.create(username, permissions, tokens);
    app.metrics
        .dashboard_sessions
        .set(app.dashboard.sessions.len() as i64);
    let cookie = session_cookie(&id, app.config.dashboard.secure_cookie);
    let mut response =
        Json(json!({"success": true, "data": session_json(&session)})).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a base64url cookie is a valid header"),
    );
    Ok(response)
}

fn session_json(session: &Session) -> Value {
    json!({
        "authenticated": true,
        "username": session.username,
        "permissions": session.permissions,
        "csrf_token": session.csrf,
    })
}

/// `GET /dashboard/api/session`: `{authenticated:false}` or who is logged in, with the CSRF
/// token. Always `200`, so the login page loads without an error.
pub async fn current(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let data = match session_of(&app, &headers) {
        Ok(authed) => session_json(&authed.session),
        Err(_) => json!({"authenticated": false}),
    };
    Json(json!({"success": true, "data": data})).into_response()
}

/// `POST /dashboard/api/logout`: ends the session at identity and here, and clears the cookie.
pub async fn logout(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let authed = session_of(&app, &headers)?;
    check_csrf(&authed.session, &headers)?;
    let token = access_token(&app, &authed).await;
    // Whatever identity says, this browser's session is over.
    app.dashboard.sessions.remove(&authed.id);
    app.metrics
        .dashboard_sessions
        .set(app.dashboard.sessions.len() as i64);
    let removal = removal_cookie(app.config.dashboard.secure_cookie);
    let mut response = match token {
        Ok(token) => {
            let reply = call(
                &app,
                &app.config.identity_service,
                vec![
                    b"auth".to_vec(),
                    b"logout".to_vec(),
                    json!({"token": token}).to_string().into_bytes(),
                ],
            )
            .await?;
            (crate::reply::status_for_reply(&reply), Json(reply)).into_response()
        }
        // The refresh failed: identity has already ended the session.
        Err(_) => Json(json!({"success": true, "data": {"revoked": true}})).into_response(),
    };
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&removal).expect("a valid header"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_only_when_told() {
        let plain = session_cookie("abc", false);
        assert!(plain.starts_with("plantd_session=abc"), "{plain}");
        assert!(plain.contains("HttpOnly"), "{plain}");
        assert!(plain.contains("SameSite=Strict"), "{plain}");
        assert!(plain.contains("Path=/"), "{plain}");
        assert!(!plain.contains("Secure"), "{plain}");
        assert!(session_cookie("abc", true).contains("Secure"));
        let removal = removal_cookie(false);
        assert!(removal.contains("Max-Age=0"), "{removal}");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; plantd_session=xyz; b=2"),
        );
        assert_eq!(cookie_value(&headers).as_deref(), Some("xyz"));
        assert_eq!(cookie_value(&HeaderMap::new()), None);
    }
}
