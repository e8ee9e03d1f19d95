//! The dashboard's static files, embedded in the binary (`proxy/dashboard/`): the page at `/`,
//! its script, stylesheet and icon. No build step, nothing fetched from elsewhere: the
//! `Content-Security-Policy` allows scripts, styles and connections to this origin only.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../dashboard/index.html");
const SCRIPT: &str = include_str!("../../dashboard/app.js");
const STYLE: &str = include_str!("../../dashboard/app.css");
const ICON: &str = include_str!("../../dashboard/favicon.svg");

/// What every dashboard file is sent with.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str, cache: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /`: the page.
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8", "no-store")
}

/// `GET /dashboard/app.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8", "no-cache")
}

/// `GET /dashboard/app.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8", "no-cache")
}

/// `GET /favicon.ico` and `GET /dashboard/favicon.svg`.
pub async fn icon() -> Response {
    asset(ICON, "image/svg+xml", "max-age=86400")
}
