//! Calls through the proxy to real services: echo, state and identity as JSON, a multi-frame
//! binary request via `/request`, the MMI routes, and `/healthz` and `/metrics`.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{System, ECHO};
use plantd_worker_sdk::auth::AuthConfig;
use serde_json::json;

#[test]
fn echo_state_and_identity_answer_through_http() {
    let mut s = System::new();
    s.start_echo();
    s.start_state(AuthConfig::off());
    s.start_identity();
    s.start_proxy();

    // Echo returns `[operation, json]`; the JSON frame is the response.
    let (status, reply) = s.post(
        "/api/v1/services/org.plantd.module.Echo/echo",
        json!({"hello": "world", "n": 1}),
        None,
    );
    assert_eq!((status, reply), (200, json!({"hello": "world", "n": 1})));

    // State: a write and a read, as `[operation, json]`.
    let (status, reply) = s.post(
        "/api/v1/services/org.plantd.State/state-set",
        json!({"service": "proxy-test", "key": "k", "value": {"v": 42}}),
        None,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["success"], true);
    let (status, reply) = s.post(
        "/api/v1/services/org.plantd.State/state-get",
        json!({"service": "proxy-test", "key": "k"}),
        None,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["value"], json!({"v": 42}));

    // Identity: `[category, operation, json]`; a login, then a call with the token.
    let admin = s.admin_token();
    let (status, reply) = s.post(
        "/api/v1/services/org.plantd.Identity/auth/validate",
        json!({}),
        Some(&admin),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["valid"], true);
    assert_eq!(reply["data"]["username"], "admin");
    // Identity's audit trail has the client's address as the login's source.
    let (status, reply) = s.post(
        "/api/v1/services/org.plantd.Identity/audit/list",
        json!({"action": "login.ok"}),
        Some(&admin),
    );
    assert_eq!(status, 200, "{reply}");
    let records = reply["data"]["records"].as_array().unwrap();
    assert!(
        records.iter().any(|r| r["source"] == "127.0.0.1"),
        "login sources: {records:?}"
    );

    // Identity takes /{category}/{operation} only; other services /{operation} only.
    let (status, _) = s.post(
        "/api/v1/services/org.plantd.Identity/validate",
        json!({}),
        None,
    );
    assert_eq!(status, 400);
    let (status, reply) = s.post(
        "/api/v1/services/org.plantd.module.Echo/a/b",
        json!({}),
        None,
    );
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("ROUTE_NOT_FOUND"))
    );
}

#[test]
fn a_multi_frame_binary_request_goes_through_request() {
    let mut s = System::new();
    s.start_echo();
    s.start_proxy();
    let binary = [0u8, 1, 2, 255, 254, 0x80];
    let (status, reply) = s.post(
        &format!("/api/v1/request/{ECHO}"),
        json!({"frames": ["first", {"base64": STANDARD.encode(binary)}, "", "last"]}),
        None,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"frames": ["first", {"base64": STANDARD.encode(binary)}, "", "last"]})
    );
}

#[test]
fn mmi_answers_come_back_as_json() {
    let mut s = System::new();
    s.start_echo();
    s.start_proxy();

    // Echo runs two sessions; the second may register a moment after the first answered.
    plantd_worker_sdk::testing::wait_until("both echo sessions to be listed", || {
        let (status, services) = s.get("/api/v1/services");
        assert_eq!(status, 200);
        services
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == ECHO && v["workers"] == 2)
    });

    let (status, one) = s.get(&format!("/api/v1/services/{ECHO}"));
    assert_eq!((status, &one["name"]), (200, &json!(ECHO)));
    let (status, workers) = s.get(&format!("/api/v1/services/{ECHO}/workers"));
    assert_eq!(status, 200);
    assert_eq!(workers.as_array().unwrap().len(), 2);
    assert_eq!(workers[0]["service"], ECHO);
    let (status, _) = s.get("/api/v1/services/org.example.Nothing");
    assert_eq!(status, 404);

    let (status, broker) = s.get("/api/v1/broker");
    assert_eq!(status, 200);
    assert_eq!(broker["endpoint"], s.endpoint);
    assert!(broker["version"].is_string());
}

#[test]
fn healthz_on_both_ports_and_metrics_count_requests() {
    let mut s = System::new();
    s.start_echo();
    s.start_proxy();
    for url in [s.url("/healthz"), s.health_url("/healthz")] {
        let response = s.http.get(&url).send().unwrap();
        assert_eq!(response.status().as_u16(), 200, "{url}");
        let body: serde_json::Value = response.json().unwrap();
        assert_eq!(body["status"], "UP");
        assert_eq!(body["checks"][0]["name"], "broker_connection");
    }
    let (status, _) = s.post(
        "/api/v1/services/org.plantd.module.Echo/echo",
        json!({}),
        None,
    );
    assert_eq!(status, 200);
    let metrics = s
        .http
        .get(s.health_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(
            "plantd_proxy_requests_total{route=\"/api/v1/services/:service/:operation\",service=\"org.plantd.module.Echo\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    for name in [
        "plantd_proxy_request_duration_seconds_bucket",
        "plantd_proxy_in_flight_requests",
    ] {
        assert!(metrics.contains(name), "{name} missing: {metrics}");
    }
    // `/metrics` is on the health port only.
    let response = s.http.get(s.url("/metrics")).send().unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[test]
fn forwarded_for_reaches_identity_only_from_a_trusted_proxy() {
    let mut s = System::new();
    s.start_identity();
    // The test client is 127.0.0.1: trusted as a reverse proxy here.
    s.proxy.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    s.start_proxy();
    let admin = s.admin_token();
    let config = s.identity.clone().unwrap();
    let password = std::fs::read_to_string(plantd_identity::admin_password_path(&config)).unwrap();
    let login = |forwarded: &str| {
        let response = s
            .http
            .post(s.url("/api/v1/services/org.plantd.Identity/auth/login"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"identifier": "admin", "password": password.trim_end(), "ip_address": "6.6.6.6"}))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    };
    // The client-written left entry proves nothing; the one the trusted proxy added counts.
    login("198.51.100.1, 203.0.113.9");
    let (status, reply) = s.post(
        "/api/v1/services/org.plantd.Identity/audit/list",
        json!({"action": "login.ok"}),
        Some(&admin),
    );
    assert_eq!(status, 200, "{reply}");
    let sources: Vec<&str> = reply["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["source"].as_str())
        .collect();
    assert!(sources.contains(&"203.0.113.9"), "{sources:?}");
    assert!(
        !sources.contains(&"6.6.6.6") && !sources.contains(&"198.51.100.1"),
        "{sources:?}"
    );
}
