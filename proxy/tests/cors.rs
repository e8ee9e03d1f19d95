//! CORS is off by default (no `Access-Control-*` headers, so browsers on other origins are
//! refused) and, when configured, allows exactly the listed origins.

mod common;

use common::System;

fn preflight(s: &System, origin: &str) -> reqwest::blocking::Response {
    s.http
        .request(
            reqwest::Method::OPTIONS,
            s.url("/api/v1/services/org.plantd.module.Echo/echo"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .unwrap()
}

#[test]
fn cors_is_off_by_default() {
    let mut s = System::new();
    s.start_proxy();
    let response = preflight(&s, "https://elsewhere.example");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin"),
        "{:?}",
        response.headers()
    );
}

#[test]
fn configured_origins_are_allowed_and_others_not() {
    let mut s = System::new();
    s.proxy.cors.allowed_origins = vec!["https://dash.example".into()];
    s.start_proxy();
    let response = preflight(&s, "https://dash.example");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://dash.example"
    );
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let response = preflight(&s, "https://evil.example");
    assert!(!response
        .headers()
        .contains_key("access-control-allow-origin"));
}
