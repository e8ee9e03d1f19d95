//! Issue 12 test 2: login by username and by email in any case; a wrong password and an unknown
//! user are indistinguishable (code, message, and roughly time); lockout after repeated failures
//! and release after the window (short windows here); the per-source rate limit.

mod common;

use std::time::{Duration, Instant};

use common::{code, data, message, wait_for, Harness};
use plantd_identity::config::{LockoutConfig, RateLimitConfig};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

fn login(h: &Harness, identifier: &str, password: &str) -> Value {
    h.call(
        "auth",
        "login",
        json!({"identifier": identifier, "password": password}),
    )
}

#[test]
fn login_by_username_or_email_in_any_case() {
    let h = Harness::start();
    let admin = h.admin_token();
    let reply = h.call_as(
        &admin,
        "user",
        "create",
        json!({"username": "Grace.Hopper", "email": "Grace@Navy.example", "password": PASSWORD}),
    );
    let id = data(reply)["user"]["id"].as_i64().unwrap();
    for identifier in [
        "Grace.Hopper",
        "grace.hopper",
        "GRACE.HOPPER",
        "grace@navy.example",
        "GRACE@NAVY.EXAMPLE",
        "Grace@Navy.example",
    ] {
        let reply = data(login(&h, identifier, PASSWORD));
        assert_eq!(reply["user"]["id"], id, "{identifier}");
        assert_eq!(reply["token_type"], "Bearer");
        assert!(reply["access_token"].as_str().unwrap().split('.').count() == 3);
        assert_eq!(reply["refresh_token"].as_str().unwrap().len(), 43);
        assert!(
            chrono::DateTime::parse_from_rfc3339(reply["expires_at"].as_str().unwrap()).is_ok()
        );
        assert!(reply["user"]["last_login_at"].is_string());
    }
    // The password itself is case-sensitive.
    assert_eq!(
        code(&login(&h, "grace.hopper", &PASSWORD.to_uppercase())),
        "LOGIN_FAILED"
    );
}

#[test]
fn wrong_password_unknown_user_and_inactive_user_look_the_same() {
    let h = Harness::start();
    let admin = h.admin_token();
    let id = h.create_user(&admin, "ada", PASSWORD);
    let wrong = login(&h, "ada", "not the password at all");
    let unknown = login(&h, "nobody-here", "not the password at all");
    data(h.call_as(&admin, "user", "deactivate", json!({"user_id": id})));
    let inactive = login(&h, "ada", PASSWORD);
    for reply in [&wrong, &unknown, &inactive] {
        assert_eq!(code(reply), "LOGIN_FAILED", "{reply}");
        assert_eq!(reply["error"], wrong["error"], "same code and message");
    }
    assert!(!message(&wrong).contains("ada") && !message(&unknown).contains("nobody"));

    // Both take an argon2id verification: their times are of one size (medians of a few tries,
    // compared loosely: this is a smoke check against a missing dummy hash, not a timing proof).
    let median = |identifier: &str| {
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                login(&h, identifier, "not the password at all");
                started.elapsed()
            })
            .collect();
        times.sort();
        times[2]
    };
    data(h.call_as(&admin, "user", "activate", json!({"user_id": id})));
    let (known, unknown) = (median("ada"), median("someone-else"));
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    assert!(
        (0.33..3.0).contains(&ratio),
        "known {known:?} vs unknown {unknown:?}"
    );
}

#[test]
fn repeated_failures_lock_the_account_until_the_window_passes() {
    let mut h = Harness::broker_only();
    h.config.lockout = LockoutConfig {
        max_failures: 3,
        window_secs: 60,
        duration_secs: 2,
    };
    h.start_identity();
    let admin = h.admin_token();
    h.create_user(&admin, "linus", PASSWORD);

    for _ in 0..3 {
        assert_eq!(
            code(&login(&h, "linus", "wrong password here")),
            "LOGIN_FAILED"
        );
    }
    // Locked now: even the right password, by username or email, is refused.
    let locked = login(&h, "linus", PASSWORD);
    assert_eq!(code(&locked), "ACCOUNT_LOCKED", "{locked}");
    assert_eq!(
        code(&login(&h, "LINUS@example.com", PASSWORD)),
        "ACCOUNT_LOCKED"
    );
    // An unknown identifier locks the same way, so a lock does not tell who exists.
    for _ in 0..3 {
        assert_eq!(
            code(&login(&h, "ghost", "wrong password here")),
            "LOGIN_FAILED"
        );
    }
    assert_eq!(
        code(&login(&h, "ghost", "wrong password here")),
        "ACCOUNT_LOCKED"
    );

    // Released after the lock's duration (polled, not slept).
    wait_for("the lock to expire", || {
        login(&h, "linus", PASSWORD)["success"] == Value::Bool(true)
    });
    // A success clears the count: two more failures do not lock.
    for _ in 0..2 {
        assert_eq!(
            code(&login(&h, "linus", "wrong password here")),
            "LOGIN_FAILED"
        );
    }
    data(login(&h, "linus", PASSWORD));

    let audit = data(h.call_as(&admin, "audit", "list", json!({"since": 0, "limit": 1000})));
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for action in ["login.failed", "login.locked", "account.locked", "login.ok"] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
    let metrics = h.metrics();
    assert!(
        metrics.contains("plantd_identity_lockouts_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"plantd_identity_logins_total{outcome="locked"}"#));
}

#[test]
fn a_source_over_its_rate_limit_is_refused() {
    let mut h = Harness::broker_only();
    h.config.rate_limit = RateLimitConfig {
        per_minute: 1,
        burst: 3,
    };
    h.start_identity();
    let client = h.client();
    let tries = std::cell::Cell::new(0);
    let attempt = |ip: Option<&str>| {
        // A fresh identifier each time, so no lockout gets in the way.
        tries.set(tries.get() + 1);
        let identifier = format!("someone-{}", tries.get());
        let mut body = json!({"identifier": identifier, "password": "wrong password here"});
        if let Some(ip) = ip {
            body["ip_address"] = json!(ip);
        }
        common::call(&client, "auth", "login", &body)
    };
    // One client connection is one source: its burst, then RATE_LIMITED.
    for _ in 0..3 {
        assert_eq!(code(&attempt(None)), "LOGIN_FAILED");
    }
    assert_eq!(code(&attempt(None)), "RATE_LIMITED");
    // refresh and token count against the same source.
    let refresh = common::call(&client, "auth", "refresh", &json!({"refresh_token": "x"}));
    assert_eq!(code(&refresh), "RATE_LIMITED");
    let token = common::call(&client, "auth", "token", &json!({"api_key": "x"}));
    assert_eq!(code(&token), "RATE_LIMITED");
    // A forwarded ip_address (from the HTTP proxy) is a source of its own.
    for _ in 0..3 {
        assert_eq!(code(&attempt(Some("203.0.113.7"))), "LOGIN_FAILED");
    }
    assert_eq!(code(&attempt(Some("203.0.113.7"))), "RATE_LIMITED");
    assert_eq!(code(&attempt(Some("203.0.113.8"))), "LOGIN_FAILED");
    // Other operations are not limited.
    data(common::call(&client, "health", "check", &json!({})));
    let metrics = h.metrics();
    assert!(
        metrics.contains(r#"plantd_identity_rate_limited_total{operation="auth/login"} 2"#),
        "{metrics}"
    );
}
