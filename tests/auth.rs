//! Tokens across plantd, end to end: a real broker with an `event` bus, identity, the state
//! service and the logger, each through its own `run`, on free loopback ports. Per-operation and
//! per-scope decisions (no Go-style bypass), role changes and revocations applied through the bus
//! without a new login, forged tokens refused by every service, API keys for workers, and a
//! service that never obtained identity's keys allowing nothing, and revocations that reach a
//! service the bus never told (identity's notice log) or one restarted after them.

#[path = "../identity/tests/common/mod.rs"]
mod identity_harness;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use identity_harness::{code, data, forgeries, wait_for, Harness};
use plantd_worker_sdk::auth::AuthConfig;
use plantd_worker_sdk::testing::free_port;
use plantd_worker_sdk::{Client, Shutdown};
use serde_json::{json, Value};

const STATE: &str = "org.plantd.State";
const LOGGER: &str = "org.plantd.Logger";

/// Identity plus a state service and a logger that require tokens.
struct System {
    h: Harness,
    stop: Shutdown,
}

impl System {
    /// A broker with an `event` bus; identity, state and logger not started yet.
    fn without_services() -> System {
        System {
            h: Harness::broker_only(),
            stop: Shutdown::new(),
        }
    }

    fn auth(&self) -> AuthConfig {
        AuthConfig {
            event_endpoint: self.h.bus_backend.clone(),
            ..AuthConfig::default()
        }
    }

    /// Starts a state service (tokens required, with `auth`) until `stop`.
    fn spawn_state(&self, auth: AuthConfig, stop: Shutdown) -> tokio::task::JoinHandle<()> {
        let state = plantd_state::StateConfig {
            db: self.h.dir.path().join("state.db"),
            broker_endpoint: self.h.endpoint.clone(),
            heartbeat_ms: 250,
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            bus_endpoint: String::new(),
            auth,
            ..plantd_state::StateConfig::default()
        };
        self.h.rt.spawn(async move {
            plantd_state::run(state, stop).await.expect("state runs");
        })
    }

    /// The first answer of a state service that has identity's keys (not `UNAVAILABLE`) to
    /// `list-scopes` with `token`, once it serves at all.
    fn first_answer(&self, token: &str) -> Value {
        let body = json!({"token": token}).to_string().into_bytes();
        let mut answer = Value::Null;
        wait_for("state to answer with identity's keys", || {
            let reply = quick_client(&self.h.endpoint)
                .request(STATE, vec![b"list-scopes".to_vec(), body.clone()]);
            match reply.map(|r| serde_json::from_slice::<Value>(&r[0]).expect("JSON")) {
                Ok(reply) if reply_code(&reply) != "UNAVAILABLE" => {
                    answer = reply;
                    true
                }
                _ => false,
            }
        });
        answer
    }

    /// Starts state and logger (tokens required) and waits until both answer.
    fn start_services(&self) {
        self.spawn_state(self.auth(), self.stop.clone());
        let logger = plantd_logger::LoggerConfig {
            db: self.h.dir.path().join("logger.db"),
            broker_endpoint: self.h.endpoint.clone(),
            buses: vec![plantd_logger::BusSubscription {
                name: "event".into(),
                endpoint: self.h.bus_backend.clone(),
            }],
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            auth: self.auth(),
            ..plantd_logger::LoggerConfig::default()
        };
        let stop = self.stop.clone();
        self.h.rt.spawn(async move {
            plantd_logger::run(logger, stop).await.expect("logger runs");
        });
        // Serving = answering at all (an unauthenticated request gets a code back).
        for service in [STATE, LOGGER] {
            wait_for(&format!("{service} to answer"), || {
                quick_client(&self.h.endpoint)
                    .request(service, vec![b"stats".to_vec(), b"{}".to_vec()])
                    .is_ok()
            });
        }
    }

    /// `[operation, body + token]` to `service`; the reply envelope.
    fn call(&self, service: &str, token: Option<&str>, operation: &str, body: Value) -> Value {
        let mut body = body;
        if let Some(token) = token {
            body["token"] = json!(token);
        }
        let reply = self
            .h
            .client()
            .request(
                service,
                vec![operation.as_bytes().to_vec(), body.to_string().into_bytes()],
            )
            .unwrap_or_else(|e| panic!("{service} {operation}: {e}"));
        serde_json::from_slice(&reply[0]).expect("JSON reply")
    }

    fn state(&self, token: &str, operation: &str, body: Value) -> Value {
        self.call(STATE, Some(token), operation, body)
    }

    /// Polls `state` with `token` until its reply code is `want` ("" = success).
    fn wait_for_state(&self, what: &str, token: &str, operation: &str, body: Value, want: &str) {
        wait_for(what, || {
            let reply = self.state(token, operation, body.clone());
            reply_code(&reply) == want
        });
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn quick_client(endpoint: &str) -> Client {
    Client::connect(endpoint)
        .unwrap()
        .with_timeout(Duration::from_millis(500))
}

/// The error code of a reply, "" for success.
fn reply_code(reply: &Value) -> String {
    if reply["success"] == json!(true) {
        String::new()
    } else {
        code(reply)
    }
}

#[test]
fn each_operation_and_scope_is_decided_alone_and_role_changes_apply_without_a_new_login() {
    let mut s = System::without_services();
    s.h.start_identity();
    s.start_services();
    let admin = s.h.admin_token();
    for scope in ["a", "b"] {
        let reply = s.state(
            &admin,
            "state-set",
            json!({"service": scope, "key": "k", "value": 1}),
        );
        assert_eq!(reply_code(&reply), "", "{reply}");
    }
    let (user, token) = s.h.user_with(&admin, "writer", &["state:scope:a:write"]);

    let set = |scope: &str| {
        s.state(
            &token,
            "state-set",
            json!({"service": scope, "key": "k", "value": 2}),
        )
    };
    let get = |scope: &str| s.state(&token, "state-get", json!({"service": scope, "key": "k"}));
    assert_eq!(reply_code(&set("a")), "");
    assert_eq!(
        data(get("a"))["value"],
        2,
        "writing a scope implies reading it"
    );
    let denied = set("b");
    assert_eq!(reply_code(&denied), "PERMISSION_DENIED");
    assert!(
        denied["error"]["message"]
            .as_str()
            .unwrap()
            .contains("state:scope:b:write"),
        "{denied}"
    );
    assert_eq!(reply_code(&get("b")), "PERMISSION_DENIED");
    // Allowed one operation on `a`, the same token is asked again for another (the Go bypass).
    let delete = s.state(&token, "delete", json!({"service": "a", "key": "k"}));
    assert_eq!(reply_code(&delete), "PERMISSION_DENIED", "{delete}");
    let delete_scope = s.state(&token, "delete-scope", json!({"service": "a"}));
    assert_eq!(reply_code(&delete_scope), "PERMISSION_DENIED");
    assert_eq!(reply_code(&get("a")), "", "and the allowed one still works");

    // A new role for the user reaches the state service over the bus: no new login.
    let role = s.h.create_role(&admin, "b-reader", &["state:scope:b:read"]);
    data(s.h.call_as(
        &admin,
        "user",
        "assign_role",
        json!({"user_id": user, "role_id": role}),
    ));
    s.wait_for_state(
        "the new role to apply",
        &token,
        "state-get",
        json!({"service": "b", "key": "k"}),
        "",
    );
    assert_eq!(
        reply_code(&set("b")),
        "PERMISSION_DENIED",
        "reading b is not writing b"
    );
    // And taking it away applies too.
    data(s.h.call_as(
        &admin,
        "user",
        "unassign_role",
        json!({"user_id": user, "role_id": role}),
    ));
    s.wait_for_state(
        "the removed role to apply",
        &token,
        "state-get",
        json!({"service": "b", "key": "k"}),
        "PERMISSION_DENIED",
    );
}

#[test]
fn a_token_logged_out_a_moment_ago_is_refused_by_state() {
    let mut s = System::without_services();
    s.h.start_identity();
    s.start_services();
    let admin = s.h.admin_token();
    let (_, token) = s.h.user_with(&admin, "reader", &["state:scope:list"]);
    let list = || s.state(&token, "list-scopes", json!({}));
    assert_eq!(
        reply_code(&list()),
        "",
        "works before logout (and is now cached)"
    );
    data(s.h.call("auth", "logout", json!({"token": token})));
    // The token would be valid for 15 more minutes: only the revocation event can refuse it.
    wait_for("state to refuse the logged-out token", || {
        reply_code(&list()) == "TOKEN_REVOKED"
    });
    let logger = s.call(LOGGER, Some(&token), "stats", json!({}));
    assert!(
        ["TOKEN_REVOKED", "PERMISSION_DENIED"].contains(&reply_code(&logger).as_str()),
        "{logger}"
    );
}

#[test]
fn forged_tokens_are_refused_by_state_and_the_logger() {
    let mut s = System::without_services();
    s.h.start_identity();
    s.start_services();
    let admin = s.h.admin_token();
    let (_, weak) = s.h.user_with(&admin, "mallory", &[]);
    let forged = forgeries(&s.h, &weak);
    for (service, operation) in [(STATE, "list-scopes"), (LOGGER, "stats")] {
        let genuine = s.call(service, Some(&forged.resigned), operation, json!({}));
        assert_eq!(
            reply_code(&genuine),
            "PERMISSION_DENIED",
            "{service}: {genuine}"
        );
        for (what, token, want) in &forged.tokens {
            let reply = s.call(service, Some(token), operation, json!({}));
            assert_eq!(reply_code(&reply), *want, "{service}, {what}: {reply}");
        }
        let none = s.call(service, None, operation, json!({}));
        assert_eq!(reply_code(&none), "UNAUTHENTICATED", "{service}: {none}");
        let garbage = s.call(service, Some("not a token"), operation, json!({}));
        assert_eq!(
            reply_code(&garbage),
            "UNAUTHENTICATED",
            "{service}: {garbage}"
        );
    }
}

#[test]
fn an_api_key_lets_a_worker_read_its_scope_until_revoked() {
    let mut s = System::without_services();
    s.h.start_identity();
    s.start_services();
    let admin = s.h.admin_token();
    data(s.state(
        &admin,
        "state-set",
        json!({"service": "pump-7", "key": "setpoint", "value": 42}),
    ));
    data(s.state(
        &admin,
        "state-set",
        json!({"service": "other", "key": "k", "value": 1}),
    ));
    let created = data(s.h.call_as(
        &admin,
        "api_key",
        "create",
        json!({"name": "pump-7-worker", "permissions": ["state:scope:pump-7:read"]}),
    ));
    let key = created["api_key"].as_str().unwrap().to_owned();
    let key_id = created["key"]["id"].as_i64().unwrap();
    // The worker exchanges its key for a token; the key itself never goes to a service.
    let token = data(s.h.call("auth", "token", json!({"api_key": key})))["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = |scope: &str| {
        s.state(
            &token,
            "state-get",
            json!({"service": scope, "key": "setpoint"}),
        )
    };
    assert_eq!(data(read("pump-7"))["value"], 42);
    assert_eq!(reply_code(&read("other")), "PERMISSION_DENIED");
    let as_token = s.state(
        &key,
        "state-get",
        json!({"service": "pump-7", "key": "setpoint"}),
    );
    assert_eq!(
        reply_code(&as_token),
        "UNAUTHENTICATED",
        "an API key is not a token"
    );

    data(s.h.call_as(&admin, "api_key", "revoke", json!({"key_id": key_id})));
    s.wait_for_state(
        "the revoked key's token to be refused",
        &token,
        "state-get",
        json!({"service": "pump-7", "key": "setpoint"}),
        "TOKEN_REVOKED",
    );
    let again = s.h.call("auth", "token", json!({"api_key": key}));
    assert_ne!(
        reply_code(&again),
        "",
        "a revoked key gets no new token: {again}"
    );
}

#[test]
fn a_service_the_bus_never_told_learns_revocations_and_changes_from_identity() {
    let mut s = System::without_services();
    s.h.start_identity();
    // No event subscription at all: only identity's notice log can tell this state service.
    let deaf = AuthConfig {
        event_endpoint: String::new(),
        ..s.auth()
    };
    s.spawn_state(deaf, s.stop.clone());
    let admin = s.h.admin_token();
    let user =
        s.h.create_user(&admin, "operator", "a long enough passphrase");
    let role = s.h.create_role(&admin, "readers", &["state:scope:list"]);
    let assignment = json!({"user_id": user, "role_id": role});
    data(s.h.call_as(&admin, "user", "assign_role", assignment.clone()));
    let reader = s.h.login("operator", "a long enough passphrase")["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(reply_code(&s.first_answer(&reader)), "");

    // A permission change: the role is taken away.
    data(s.h.call_as(&admin, "user", "unassign_role", assignment));
    s.wait_for_state(
        "the unassigned role to stop granting",
        &reader,
        "list-scopes",
        json!({}),
        "PERMISSION_DENIED",
    );

    // A logout.
    let (_, other) = s.h.user_with(&admin, "analyst", &["state:scope:list"]);
    assert_eq!(reply_code(&s.state(&other, "list-scopes", json!({}))), "");
    data(s.h.call("auth", "logout", json!({"token": other})));
    s.wait_for_state(
        "the logged-out token to be refused",
        &other,
        "list-scopes",
        json!({}),
        "TOKEN_REVOKED",
    );
}

#[test]
fn a_state_service_restarted_after_a_logout_refuses_the_token_from_its_first_answer() {
    let mut s = System::without_services();
    s.h.start_identity();
    let admin = s.h.admin_token();
    let (_, token) = s.h.user_with(&admin, "operator", &["state:scope:list"]);
    let first = Shutdown::new();
    let running = s.spawn_state(s.auth(), first.clone());
    assert_eq!(reply_code(&s.first_answer(&token)), "");
    first.cancel();
    s.h.rt.block_on(running).expect("state stops");

    // The revocation goes out while no state service is running to hear it.
    data(s.h.call("auth", "logout", json!({"token": token})));
    s.spawn_state(s.auth(), s.stop.clone());
    let answer = s.first_answer(&token);
    assert_eq!(reply_code(&answer), "TOKEN_REVOKED", "{answer}");
}

#[test]
fn logger_queries_need_logger_read() {
    let mut s = System::without_services();
    s.h.start_identity();
    s.start_services();
    let admin = s.h.admin_token();
    let (_, reader) = s.h.user_with(&admin, "analyst", &["logger:read"]);
    let (_, other) = s.h.user_with(&admin, "operator", &["state:data:read"]);
    for operation in ["stats", "events-query", "metrics-query", "metrics-summary"] {
        let ok = s.call(LOGGER, Some(&reader), operation, json!({}));
        assert_eq!(reply_code(&ok), "", "{operation}: {ok}");
        let denied = s.call(LOGGER, Some(&other), operation, json!({}));
        assert_eq!(
            reply_code(&denied),
            "PERMISSION_DENIED",
            "{operation}: {denied}"
        );
        assert!(denied.to_string().contains("logger:read"), "{denied}");
        let anonymous = s.call(LOGGER, None, operation, json!({}));
        assert_eq!(reply_code(&anonymous), "UNAUTHENTICATED", "{operation}");
    }
    let typed = s.call(LOGGER, None, "stats", json!({"token": 5}));
    assert_eq!(reply_code(&typed), "INVALID_REQUEST", "{typed}");
}

#[test]
fn a_service_that_never_got_identitys_keys_allows_nothing() {
    let mut s = System::without_services();
    s.start_services();
    // Identity is not running: whatever the token, nothing is allowed.
    let unverifiable = r#"{"alg":"EdDSA","typ":"JWT","kid":"0123456789abcdef"}"#;
    let token = format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(unverifiable));
    let reply = s.call(STATE, Some(&token), "list-scopes", json!({}));
    assert_eq!(reply_code(&reply), "UNAVAILABLE", "{reply}");
    // Once identity is up, the verifier fetches its keys and genuine tokens work.
    s.h.start_identity();
    let admin = s.h.admin_token();
    s.wait_for_state(
        "state to obtain identity's keys",
        &admin,
        "list-scopes",
        json!({}),
        "",
    );
}
