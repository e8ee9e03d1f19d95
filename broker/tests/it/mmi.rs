//! MMI queries answered by the broker itself.

use plantd_worker_sdk::protocol::Dialect;
use serde_json::Value;

use crate::common::*;

fn json(reply: &[String]) -> Value {
    assert_eq!(reply.len(), 2, "{reply:?}");
    assert_eq!(reply[0], "200");
    serde_json::from_str(&reply[1]).expect("json")
}

#[test]
fn mmi_queries_answer_as_documented() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    let ep = &broker.endpoint;
    let _worker = BackgroundWorker::start(&ctx, ep, Dialect::Go, "svc.a", echo());
    wait_for_workers(&ctx, ep, "svc.a", 1);
    let waiting = Peer::connect(&ctx, ep, Dialect::V02);
    waiting.request("svc.b", &[b"x"]); // queued: no worker

    assert_eq!(mmi(&ctx, ep, "mmi.service", &["svc.a"]), ["200"]);
    assert_eq!(mmi(&ctx, ep, "mmi.service", &["svc.b"]), ["404"]);
    assert_eq!(mmi(&ctx, ep, "mmi.service", &["nope"]), ["404"]);
    assert_eq!(mmi(&ctx, ep, "mmi.service", &["mmi.broker"]), ["200"]);
    assert_eq!(mmi(&ctx, ep, "mmi.service", &[]), ["400"]);

    wait_until("svc.b has a queued request", || {
        json(&mmi(&ctx, ep, "mmi.services", &[]))
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == "svc.b" && s["queued"] == 1))
    });
    let services = json(&mmi(&ctx, ep, "mmi.services", &[]));
    let a = services
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == "svc.a"))
        .expect("svc.a listed");
    assert_eq!(
        (
            a["workers"].as_u64(),
            a["idle"].as_u64(),
            a["queued"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );

    let workers = json(&mmi(&ctx, ep, "mmi.workers", &["svc.a"]));
    let w = &workers[0];
    assert_eq!(workers.as_array().map(Vec::len), Some(1));
    assert_eq!(
        (
            w["service"].as_str(),
            w["dialect"].as_str(),
            w["state"].as_str()
        ),
        (Some("svc.a"), Some("go"), Some("idle"))
    );
    assert!(w["id"]
        .as_str()
        .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit())));
    assert!(w["requests"].is_u64() && w["last_seen_ms_ago"].is_u64());
    assert_eq!(mmi(&ctx, ep, "mmi.workers", &["nope"]), ["404"]);
    assert_eq!(mmi(&ctx, ep, "mmi.workers", &[]), ["400"]);

    let info = json(&mmi(&ctx, ep, "mmi.broker", &[]));
    assert_eq!(info["version"], plantd_broker::VERSION);
    assert_eq!(info["endpoint"], broker.endpoint.as_str());
    assert_eq!(info["workers"], 1);
    assert!(info["uptime_secs"].is_u64());
    assert!(info["counters"]["mmi_requests"]
        .as_u64()
        .is_some_and(|n| n >= 10));
    assert!(info["buses"].is_array());

    assert_eq!(mmi(&ctx, ep, "mmi.heartbeat", &[]), ["501"]);
    assert_eq!(mmi(&ctx, ep, "mmi.", &[]), ["501"]);
}

#[test]
fn mmi_replies_reach_every_client_dialect_with_the_query_as_service() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    for dialect in ALL_DIALECTS {
        let client = Peer::connect(&ctx, &broker.endpoint, dialect);
        assert_eq!(
            client.call("mmi.service", &[b"missing"]),
            vec![b"404".to_vec()]
        );
        assert_eq!(client.call("mmi.bogus", &[]), vec![b"501".to_vec()]);
    }
}

#[test]
fn a_worker_registering_an_mmi_name_is_disconnected() {
    let broker = TestBroker::start(|_| {});
    let ctx = zmq::Context::new();
    for dialect in ALL_DIALECTS {
        let worker = Peer::connect(&ctx, &broker.endpoint, dialect);
        worker.ready("mmi.x");
        worker.expect_disconnect();
    }
    assert_eq!(
        mmi(&ctx, &broker.endpoint, "mmi.service", &["mmi.x"]),
        ["404"]
    );
    assert_eq!(
        broker.metric("plantd_broker_reserved_name_refused_total"),
        3.0
    );
}

/// `mmi.services` counts each service's requests and the ones answered with an error: a
/// worker's error reply, a client over its limit (503), a full queue (503), expiry (504) and a
/// re-dispatch given up (500).
#[test]
fn mmi_services_counts_requests_and_errors_per_service() {
    let broker = TestBroker::start(|c| {
        c.queue_limit = 2;
        c.client_queue_limit = 2;
        c.queue_ttl_ms = 300;
        c.max_retries = 0;
    });
    let ctx = zmq::Context::new();
    let ep = &broker.endpoint;
    // The test is the worker, so it decides when (and whether) a request is answered.
    let worker = Peer::connect(&ctx, ep, Dialect::V02);
    worker.ready("counted");
    wait_for_workers(&ctx, ep, "counted", 1);
    let a = Peer::connect(&ctx, ep, Dialect::V02);
    let b = Peer::connect(&ctx, ep, Dialect::V02);

    // Five answered requests and one the worker answers with an error.
    for i in 0..6u8 {
        a.request("counted", &[&[i]]);
        let (client, body) = worker.next_request();
        let reply = match i {
            5 => vec![b"plantd.error".to_vec(), b"500".to_vec(), b"boom".to_vec()],
            _ => body,
        };
        worker.final_reply(&client, reply);
        let got = a.final_body("counted");
        if i == 5 {
            expect_error(&got, "500");
        }
    }
    // The worker holds one request of A's and one waits: A is at its limit of two.
    a.request("counted", &[b"held"]);
    let held = worker.next_request();
    a.request("counted", &[b"waits"]);
    a.request("counted", &[b"over"]);
    let message = expect_error(&a.final_body("counted"), "503");
    assert!(message.contains("client_queue_limit 2"), "{message}");
    // B fills the queue (A's and B's) and is refused past it.
    b.request("counted", &[b"waits too"]);
    b.request("counted", &[b"no room"]);
    let message = expect_error(&b.final_body("counted"), "503");
    assert!(message.contains("full"), "{message}");
    // The two waiting ones expire.
    expect_error(&a.final_body("counted"), "504");
    expect_error(&b.final_body("counted"), "504");
    worker.heartbeat();
    worker.final_reply(&held.0, held.1);
    assert_eq!(a.final_body("counted"), vec![b"held".to_vec()]);

    // A worker lost with its request, and no retries allowed: 500.
    let loser = Peer::connect(&ctx, ep, Dialect::V02);
    loser.ready("lost");
    wait_for_workers(&ctx, ep, "lost", 1);
    a.request("lost", &[b"x"]);
    loser.next_request();
    loser.send(plantd_worker_sdk::protocol::Message::Worker(
        plantd_worker_sdk::protocol::WorkerCommand::Disconnect,
    ));
    let message = expect_error(&a.final_body("lost"), "500");
    assert!(message.contains("worker lost"), "{message}");

    let services = json(&mmi(&ctx, ep, "mmi.services", &[]));
    let counts = |name: &str| {
        let s = services
            .as_array()
            .and_then(|l| l.iter().find(|s| s["name"] == name))
            .unwrap_or_else(|| panic!("{name} listed: {services}"));
        (s["requests"].as_u64(), s["errors"].as_u64())
    };
    // 6 + held, waits, over, waits too, no room; errors: the worker's, over, no room, 2 expired.
    assert_eq!(counts("counted"), (Some(11), Some(5)));
    assert_eq!(counts("lost"), (Some(1), Some(1)));
    assert_eq!(
        broker.metric("plantd_broker_service_errors_total{service=\"counted\"}"),
        5.0
    );
    assert_eq!(
        broker.metric("plantd_broker_service_requests_total{service=\"counted\"}"),
        11.0
    );
}
