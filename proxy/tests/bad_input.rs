//! Bad input never panics and always gets a JSON error: malformed JSON, a body over the limit,
//! an unknown service, route or method, a bad timeout header; 1,000 silent connections
//! (slowloris) do not keep a normal request from succeeding; rate limits give 429 with
//! `Retry-After`; the in-flight cap gives 503.

mod common;

use std::io::Read;
use std::net::TcpStream;

use common::System;
use plantd_proxy::config::RateLimitConfig;
use serde_json::{json, Value};

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("")
}

const ECHO_PATH: &str = "/api/v1/services/org.plantd.module.Echo/echo";

#[test]
fn malformed_oversized_and_unknown_requests_get_json_errors() {
    let mut s = System::with_broker(|b| b.queue_ttl_ms = 500);
    s.proxy.max_body_bytes = 1024;
    s.start_echo();
    s.start_proxy();

    let (status, reply) = s.post_raw(ECHO_PATH, b"{\"unterminated\": ".to_vec(), None);
    assert_eq!((status, code(&reply)), (400, "INVALID_REQUEST"), "{reply}");
    let (status, reply) = s.post_raw(ECHO_PATH, b"[1, 2]".to_vec(), Some("t"));
    assert_eq!((status, code(&reply)), (400, "INVALID_REQUEST"), "{reply}");
    let (status, reply) = s.post_raw(
        "/api/v1/request/org.plantd.module.Echo",
        b"{\"frames\": 5}".to_vec(),
        None,
    );
    assert_eq!((status, code(&reply)), (400, "INVALID_REQUEST"), "{reply}");

    let big = json!({"pad": "x".repeat(2048)});
    let (status, reply) = s.post(ECHO_PATH, big, None);
    assert_eq!((status, code(&reply)), (413, "BODY_TOO_LARGE"), "{reply}");
    // Just under the limit still passes.
    let fits = json!({"pad": "x".repeat(900)});
    assert_eq!(s.post(ECHO_PATH, fits.clone(), None), (200, fits));

    let (status, reply) = s.post("/api/v1/services/org.example.Nobody/op", json!({}), None);
    assert_eq!(
        (status, code(&reply)),
        (404, "SERVICE_NOT_FOUND"),
        "{reply}"
    );
    let (status, reply) = s.get("/api/v1/nothing/here");
    assert_eq!((status, code(&reply)), (404, "ROUTE_NOT_FOUND"), "{reply}");
    let (status, reply) = s.get(ECHO_PATH);
    assert_eq!(
        (status, code(&reply)),
        (405, "METHOD_NOT_ALLOWED"),
        "{reply}"
    );

    let response = s
        .http
        .post(s.url(ECHO_PATH))
        .header("x-request-timeout", "soon")
        .json(&json!({}))
        .send()
        .unwrap();
    let (status, reply) = common::status_and_json(response);
    assert_eq!((status, code(&reply)), (400, "INVALID_REQUEST"), "{reply}");
}

#[test]
fn a_thousand_silent_connections_do_not_block_a_normal_request() {
    let mut s = System::new();
    s.start_echo();
    s.start_proxy();
    let addr = format!("127.0.0.1:{}", s.proxy.http_port);
    let silent: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    // A normal request on a new connection is answered while all of them hang on.
    let (status, reply) = s.post(ECHO_PATH, json!({"alive": true}), None);
    assert_eq!((status, reply), (200, json!({"alive": true})));
    // The silent ones were not answered or dropped meanwhile: they wait for headers.
    let mut probe = silent[0].try_clone().unwrap();
    probe.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    assert!(
        matches!(probe.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a silent connection was answered or closed before its header timeout"
    );
    drop(silent);
}

#[test]
fn the_header_timeout_closes_silent_connections() {
    let mut s = System::new();
    s.proxy.header_read_timeout_ms = 300;
    s.start_proxy();
    let mut silent = TcpStream::connect(format!("127.0.0.1:{}", s.proxy.http_port)).unwrap();
    silent
        .set_read_timeout(Some(common::WAIT_DEADLINE))
        .unwrap();
    let mut buf = [0u8; 64];
    // The server closes it (EOF or reset), well before the test's deadline.
    match silent.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("a silent connection was not closed: {other:?}"),
    }
}

#[test]
fn rate_limits_give_429_with_retry_after() {
    let mut s = System::new();
    s.proxy.rate_limit = RateLimitConfig {
        per_address_per_second: 1,
        per_address_burst: 3,
        per_token_per_second: 0,
        per_token_burst: 0,
    };
    s.start_echo();
    s.start_proxy();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let response = s
            .http
            .post(s.url(ECHO_PATH))
            .json(&json!({}))
            .send()
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status().as_u16() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let (_, reply) = common::status_and_json(response);
    assert_eq!(code(&reply), "RATE_LIMITED");
    // The burst let at least three through first.
    assert!(statuses.len() >= 4, "{statuses:?}");
    let metrics = s
        .http
        .get(s.health_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("plantd_proxy_rate_limited_total{limit=\"address\"}"),
        "{metrics}"
    );
}

#[test]
fn the_per_token_limit_is_per_token() {
    let mut s = System::new();
    s.proxy.rate_limit = RateLimitConfig {
        per_address_per_second: 0,
        per_address_burst: 0,
        per_token_per_second: 1,
        per_token_burst: 2,
    };
    s.start_echo();
    s.start_proxy();
    let mut last = 0;
    for _ in 0..10 {
        last = s.post(ECHO_PATH, json!({}), Some("token-a")).0;
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "token-a never limited");
    // Another token, from the same address, still passes.
    assert_eq!(s.post(ECHO_PATH, json!({}), Some("token-b")).0, 200);
}

#[test]
fn the_in_flight_cap_gives_503() {
    let mut s = System::new();
    s.proxy.max_in_flight = 1;
    let (started_rx, go_tx) = s.start_slow_worker();
    s.start_proxy();
    std::thread::scope(|scope| {
        let held = scope.spawn(|| s.post("/api/v1/services/test.Slow/op", json!({}), None));
        started_rx.recv().unwrap();
        let response = s
            .http
            .post(s.url("/api/v1/services/test.Slow/op"))
            .json(&json!({}))
            .send()
            .unwrap();
        assert!(response.headers().contains_key("retry-after"));
        let (status, reply) = common::status_and_json(response);
        assert_eq!((status, code(&reply)), (503, "OVERLOADED"), "{reply}");
        // `/healthz` is not counted against the cap.
        let health = s.http.get(s.url("/healthz")).send().unwrap();
        assert_eq!(health.status().as_u16(), 200);
        go_tx.send(()).unwrap();
        assert_eq!(held.join().unwrap().0, 200);
    });
    // The permit came back with the held request's response.
    go_tx.send(()).unwrap();
    assert_eq!(
        s.post("/api/v1/services/test.Slow/op", json!({}), None).0,
        200
    );
}
