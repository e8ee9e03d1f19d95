//! The proxy never logs tokens: every proxy log line of a run with bearer tokens (allowed,
//! denied and forged, on calls, identity logins and bus publishes) is captured and searched.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::System;
use serde_json::json;

/// Collects every log line written by the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_token_appears_in_the_proxys_log_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    // The proxy's own logs and those of the HTTP stack under it, at their most verbose.
    tracing_subscriber::fmt()
        .with_env_filter(
            "plantd_proxy=trace,axum=trace,tower_http=trace,hyper=trace,hyper_util=trace",
        )
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let mut s = System::new();
    s.start_identity();
    s.start_state(s.auth());
    s.proxy.auth = s.auth();
    s.start_proxy();
    let admin = s.admin_token();
    let reader = s.user_with(&admin, "reader", &["state:data:read"]);
    let forged = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxIn0.forgedsignature";
    for token in [admin.as_str(), reader.as_str(), forged] {
        s.post(
            "/api/v1/services/org.plantd.State/state-set",
            json!({"service": "s", "key": "k", "value": 1}),
            Some(token),
        );
        s.post(
            "/api/v1/buses/event/org.plantd.test",
            json!({}),
            Some(token),
        );
        s.post(
            "/api/v1/services/org.plantd.Identity/auth/validate",
            json!({}),
            Some(token),
        );
    }

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("request"),
        "the proxy logged its requests at debug: {log}"
    );
    for (name, token) in [
        ("admin", &admin),
        ("reader", &reader),
        ("forged", &forged.to_owned()),
    ] {
        // The signature part alone must not show either.
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(token.as_str()), "the {name} token was logged");
        assert!(
            !log.contains(signature),
            "the {name} token's signature was logged"
        );
    }
}
