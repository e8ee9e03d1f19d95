//! Graceful shutdown: the proxy stops accepting at once, lets a request in flight finish, and
//! closes what is still open after its grace period.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::System;
use plantd_worker_sdk::testing::wait_until;
use serde_json::json;

#[test]
fn shutdown_stops_accepting_and_finishes_requests_in_flight() {
    let mut s = System::new();
    let (started, go) = s.start_slow_worker();
    s.start_proxy();
    let addr = format!("127.0.0.1:{}", s.proxy.http_port);
    std::thread::scope(|scope| {
        let held = scope.spawn(|| s.post("/api/v1/services/test.Slow/op", json!({"n": 1}), None));
        started.recv().unwrap();
        s.proxy_shutdown().cancel();
        wait_until("the proxy to stop accepting", || {
            TcpStream::connect(&addr).is_err()
        });
        go.send(()).unwrap();
        assert_eq!(held.join().unwrap(), (200, json!({"n": 1})));
    });
    s.join_proxy().expect("the proxy stops cleanly");
}

#[test]
fn requests_still_open_after_the_grace_period_are_closed() {
    let mut s = System::new();
    s.proxy.shutdown_grace_ms = 300;
    s.proxy.request_timeout_ms = 60_000;
    let (started, _go) = s.start_slow_worker();
    s.start_proxy();
    std::thread::scope(|scope| {
        let held = scope.spawn(|| {
            s.http
                .post(s.url("/api/v1/services/test.Slow/op"))
                .json(&json!({}))
                .send()
        });
        started.recv().unwrap();
        let stopping = Instant::now();
        s.proxy_shutdown().cancel();
        // The held request's connection is closed instead of answered.
        assert!(
            held.join().unwrap().is_err(),
            "answered after the grace period"
        );
        assert!(stopping.elapsed() < Duration::from_secs(20));
    });
    s.join_proxy().expect("the proxy stops cleanly");
}
