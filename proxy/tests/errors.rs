//! Every error mapping: broker errors (404 no such service, 503 queue full or no broker, 504
//! expired or timed out, 500 worker failure) and service error codes, each with its status and
//! the service's JSON body; and a bearer token reaching state, allowed and denied.

mod common;

use common::System;
use plantd_worker_sdk::testing::{free_endpoint, wait_until};
use plantd_worker_sdk::{Frames, HandlerError, Worker};
use serde_json::{json, Value};

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn broker_errors_map_to_http_statuses() {
    let mut s = System::with_broker(|b| {
        b.queue_ttl_ms = 3000;
        b.queue_limit = 1;
    });
    let (started, go) = s.start_slow_worker();
    s.start_worker(
        Worker::builder("test.Fail").handler(|_| Err(HandlerError::new("the handler broke"))),
    );
    s.start_proxy();

    // 404: a service that never had a worker, once the broker gives up on it.
    let (status, reply) = s.post("/api/v1/services/org.example.Typo/op", json!({}), None);
    assert_eq!(
        (status, code(&reply)),
        (404, "SERVICE_NOT_FOUND"),
        "{reply}"
    );
    assert_eq!(reply["success"], false);

    // 500: the worker's handler failed.
    let (status, reply) = s.post("/api/v1/services/test.Fail/op", json!({}), None);
    assert_eq!((status, code(&reply)), (500, "INTERNAL"), "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the handler broke"));

    std::thread::scope(|scope| {
        // One request held by the worker, one waiting in the broker's queue (its limit is 1).
        let held = scope.spawn(|| s.post("/api/v1/services/test.Slow/op", json!({"n": 1}), None));
        started.recv().unwrap();
        let queued = scope.spawn(|| s.post("/api/v1/services/test.Slow/op", json!({"n": 2}), None));
        wait_until("a request waits in the queue", || {
            s.get("/api/v1/services/test.Slow").1["queued"] == 1
        });
        // 503: the queue is full.
        let (status, reply) = s.post("/api/v1/services/test.Slow/op", json!({"n": 3}), None);
        assert_eq!((status, code(&reply)), (503, "QUEUE_FULL"), "{reply}");
        // 504: the waiting one expired in the queue.
        let (status, reply) = queued.join().unwrap();
        assert_eq!((status, code(&reply)), (504, "EXPIRED"), "{reply}");
        // 504 too: the proxy's own timeout, shortened by X-Request-Timeout.
        let response = s
            .http
            .post(s.url("/api/v1/services/test.Slow/op"))
            .header("x-request-timeout", "200")
            .json(&json!({"n": 4}))
            .send()
            .unwrap();
        let (status, reply) = common::status_and_json(response);
        assert_eq!((status, code(&reply)), (504, "TIMEOUT"), "{reply}");
        go.send(()).unwrap();
        assert_eq!(held.join().unwrap(), (200, json!({"n": 1})));
    });
}

#[test]
fn no_broker_is_503() {
    let mut s = System::new();
    s.proxy.broker_endpoint = free_endpoint();
    s.proxy.request_timeout_ms = 300;
    let (config, stop) = (s.proxy.clone(), s.proxy_shutdown());
    let task = s.rt.spawn(plantd_proxy::run(config, stop.clone()));
    let url = s.url("/healthz");
    wait_until("the proxy to answer /healthz", || {
        s.http.get(&url).send().is_ok()
    });
    let response = s.http.get(&url).send().unwrap();
    assert_eq!(response.status().as_u16(), 503, "DOWN without a broker");
    let (status, reply) = s.post("/api/v1/services/test.Any/op", json!({}), None);
    assert_eq!(
        (status, code(&reply)),
        (503, "BROKER_UNAVAILABLE"),
        "{reply}"
    );
    let (status, reply) = s.get("/api/v1/services");
    assert_eq!(
        (status, code(&reply)),
        (503, "BROKER_UNAVAILABLE"),
        "{reply}"
    );
    stop.cancel();
    s.rt.block_on(task).unwrap().unwrap();
}

#[test]
fn service_error_codes_map_to_statuses_with_the_services_body() {
    let mut s = System::new();
    // Replies with the error code named by the operation frame.
    s.start_worker(Worker::builder("test.Codes").handler(|body: Frames| {
        let code = String::from_utf8(body[0].clone()).unwrap();
        let reply = json!({"success": false, "error": {"code": code, "message": format!("{code} happened"), "detail": 7}});
        Ok(vec![reply.to_string().into_bytes()])
    }));
    s.start_proxy();
    for (code, status) in [
        ("INVALID_REQUEST", 400),
        ("UNAUTHENTICATED", 401),
        ("TOKEN_EXPIRED", 401),
        ("TOKEN_REVOKED", 401),
        ("PERMISSION_DENIED", 403),
        ("SCOPE_NOT_FOUND", 404),
        ("KEY_NOT_FOUND", 404),
        ("CONFLICT", 409),
        ("SCOPE_EXISTS", 409),
        ("RATE_LIMITED", 429),
        ("STORAGE_ERROR", 502),
        ("UNKNOWN_OPERATION", 502),
    ] {
        let (got, body) = s.post(
            &format!("/api/v1/services/test.Codes/{code}"),
            json!({}),
            None,
        );
        assert_eq!(got, status, "{code}");
        assert_eq!(
            body,
            json!({"success": false, "error": {"code": code, "message": format!("{code} happened"), "detail": 7}}),
            "the service's body, as sent"
        );
    }
}

#[test]
fn a_bearer_token_reaches_state_allowed_and_denied() {
    let mut s = System::new();
    s.start_identity();
    s.start_state(s.auth());
    s.start_proxy();
    let admin = s.admin_token();
    let reader = s.user_with(&admin, "reader", &["state:data:read"]);
    let set = "/api/v1/services/org.plantd.State/state-set";
    let get = "/api/v1/services/org.plantd.State/state-get";

    let (status, reply) = s.post(
        set,
        json!({"service": "plant", "key": "k", "value": 1}),
        Some(&admin),
    );
    assert_eq!(status, 200, "{reply}");
    // Allowed: the reader's token in the header reads.
    let (status, reply) = s.post(get, json!({"service": "plant", "key": "k"}), Some(&reader));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["value"], 1);
    // Denied: it does not write.
    let (status, reply) = s.post(
        set,
        json!({"service": "plant", "key": "k", "value": 2}),
        Some(&reader),
    );
    assert_eq!(
        (status, code(&reply)),
        (403, "PERMISSION_DENIED"),
        "{reply}"
    );
    // No token, and a forged one.
    let (status, reply) = s.post(get, json!({"service": "plant", "key": "k"}), None);
    assert_eq!((status, code(&reply)), (401, "UNAUTHENTICATED"), "{reply}");
    let (status, reply) = s.post(
        get,
        json!({"service": "plant", "key": "k"}),
        Some("not.a.token"),
    );
    assert_eq!((status, code(&reply)), (401, "UNAUTHENTICATED"), "{reply}");
    // A token in the body wins over the header.
    let (status, reply) = s.post(
        get,
        json!({"service": "plant", "key": "k", "token": reader}),
        Some("not.a.token"),
    );
    assert_eq!(status, 200, "{reply}");
}
