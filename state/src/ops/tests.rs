use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::auth::StaticTokens;
use crate::store::StoreOptions;

struct Fixture {
    _dir: tempfile::TempDir,
    dispatcher: Dispatcher,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path().join("state.db"), StoreOptions::default()).unwrap();
    let dispatcher = Dispatcher::new(store, StateMetrics::unregistered())
        .with_limits(Limits {
            max_scope_bytes: 16,
            max_key_bytes: 8,
            max_value_bytes: 32,
            max_batch_entries: 3,
        })
        .with_backup_dir(dir.path().join("backups"));
    Fixture {
        _dir: dir,
        dispatcher,
    }
}

impl Fixture {
    fn raw(&self, frames: &[&[u8]]) -> Value {
        let frames: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
        serde_json::from_slice(&self.dispatcher.handle(&frames)).expect("reply is JSON")
    }

    fn call(&self, op: &str, body: Value) -> Value {
        self.raw(&[op.as_bytes(), body.to_string().as_bytes()])
    }

    fn ok(&self, op: &str, body: Value) -> Value {
        let reply = self.call(op, body);
        assert_eq!(reply["success"], json!(true), "{op}: {reply}");
        reply["data"].clone()
    }
}

/// The error code of a failure reply; panics on success.
fn code(reply: &Value) -> &str {
    assert_eq!(reply["success"], json!(false), "{reply}");
    reply["error"]["code"].as_str().unwrap()
}

fn message(reply: &Value) -> &str {
    reply["error"]["message"].as_str().unwrap()
}

#[test]
fn every_operation_succeeds_with_the_go_reply_shapes() {
    let f = fixture();
    assert_eq!(
        f.ok("create-scope", json!({"service": "a"})),
        json!({"scope": "a", "status": "created"})
    );
    assert_eq!(
        f.ok(
            "state-set",
            json!({"service": "a", "key": "k", "value": "v"})
        ),
        json!({"scope": "a", "key": "k", "value": "v", "status": "set"})
    );
    assert_eq!(
        f.ok("state-get", json!({"service": "a", "key": "k"})),
        json!({"scope": "a", "key": "k", "value": "v"})
    );
    // Aliases.
    f.ok(
        "set",
        json!({"service": "a", "key": "n", "value": {"x": [1, null]}}),
    );
    assert_eq!(
        f.ok("get", json!({"service": "a", "key": "n"}))["value"],
        json!({"x": [1, null]})
    );
    assert_eq!(
        f.ok("list-keys", json!({"service": "a"})),
        json!({"scope": "a", "keys": ["k", "n"], "count": 2})
    );
    assert_eq!(
        f.ok(
            "state-set-many",
            json!({"service": "b", "entries": {"p": 1, "q": "s"}})
        ),
        json!({"scope": "b", "count": 2, "status": "set"})
    );
    assert_eq!(
        f.ok(
            "state-get-many",
            json!({"service": "b", "keys": ["p", "z", "q"]})
        ),
        json!({"scope": "b", "values": {"p": 1, "q": "s"}, "missing": ["z"]})
    );
    assert_eq!(
        f.ok("list-scopes", json!({})),
        json!({"scopes": ["a", "b"], "count": 2})
    );
    // list-scopes with an empty body, or none at all.
    assert_eq!(f.raw(&[b"list-scopes", b""])["data"]["count"], json!(2));
    assert_eq!(f.raw(&[b"list-scopes"])["data"]["count"], json!(2));
    assert_eq!(
        f.ok("delete", json!({"service": "a", "key": "k"})),
        json!({"scope": "a", "key": "k", "status": "deleted"})
    );
    assert_eq!(
        f.ok("health", json!({})),
        json!({"status": "healthy", "service": "org.plantd.State", "store_available": true})
    );
    assert_eq!(
        f.ok("health", json!({"service": "zz"}))["scope_exists"],
        json!(false)
    );
    assert_eq!(
        f.ok("delete-scope", json!({"service": "a"})),
        json!({"scope": "a", "status": "deleted"})
    );
    let backup = f.ok("backup", json!({"path": "b1.db"}));
    assert_eq!(backup["status"], json!("completed"));
    assert!(backup["bytes"].as_u64().unwrap() > 0);
    assert!(backup["path"].as_str().unwrap().ends_with("backups/b1.db"));
}

#[test]
fn values_keep_their_json_type_and_empty_string_is_not_missing() {
    let f = fixture();
    for value in [
        json!(""),
        json!("42"),
        json!(42),
        json!(null),
        json!(false),
        json!([]),
    ] {
        f.ok(
            "state-set",
            json!({"service": "t", "key": "k", "value": value}),
        );
        assert_eq!(
            f.ok("state-get", json!({"service": "t", "key": "k"}))["value"],
            value
        );
    }
    assert_eq!(
        code(&f.call("state-get", json!({"service": "t", "key": "nope"}))),
        "KEY_NOT_FOUND"
    );
}

#[test]
fn every_error_code_is_reachable() {
    let f = fixture();
    assert_eq!(code(&f.call("frobnicate", json!({}))), "UNKNOWN_OPERATION");
    assert_eq!(code(&f.raw(&[])), "UNKNOWN_OPERATION");
    assert_eq!(
        code(&f.call("state-get", json!({"service": "s", "key": "k"}))),
        "SCOPE_NOT_FOUND"
    );
    assert_eq!(
        code(&f.call("list-keys", json!({"service": "s"}))),
        "SCOPE_NOT_FOUND"
    );
    assert_eq!(
        code(&f.call("delete-scope", json!({"service": "s"}))),
        "SCOPE_NOT_FOUND"
    );
    assert_eq!(
        code(&f.call("delete", json!({"service": "s", "key": "k"}))),
        "SCOPE_NOT_FOUND"
    );
    f.ok("create-scope", json!({"service": "s"}));
    assert_eq!(
        code(&f.call("create-scope", json!({"service": "s"}))),
        "SCOPE_EXISTS"
    );
    assert_eq!(
        code(&f.call("state-get", json!({"service": "s", "key": "k"}))),
        "KEY_NOT_FOUND"
    );
    assert_eq!(
        code(&f.call("delete", json!({"service": "s", "key": "k"}))),
        "KEY_NOT_FOUND"
    );
    let big = "x".repeat(40);
    assert_eq!(
        code(&f.call(
            "state-set",
            json!({"service": "s", "key": "k", "value": big})
        )),
        "VALUE_TOO_LARGE"
    );
    assert_eq!(
        code(&f.call(
            "state-set-many",
            json!({"service": "s", "entries": {"a": 1, "b": big}})
        )),
        "VALUE_TOO_LARGE"
    );
    // Nothing of the rejected batch was written.
    assert_eq!(
        f.ok("list-keys", json!({"service": "s"}))["count"],
        json!(0)
    );
    // A backup target that exists is refused, not overwritten.
    f.ok("backup", json!({"path": "x.db"}));
    assert_eq!(
        code(&f.call("backup", json!({"path": "x.db"}))),
        "INVALID_REQUEST"
    );
    // STORAGE_ERROR: the writer is gone.
    f.dispatcher.store().close();
    assert_eq!(
        code(&f.call("state-set", json!({"service": "s", "key": "k", "value": 1}))),
        "STORAGE_ERROR"
    );
}

#[test]
fn bad_input_is_invalid_request_naming_the_field() {
    let f = fixture();
    let cases: Vec<(&str, &[u8], &str)> = vec![
        ("state-get", b"{not json", "not valid JSON"),
        ("state-get", b"[1,2]", "must be a JSON object"),
        ("state-get", b"\xff\xfe", "not UTF-8"),
        ("state-get", b"{}", "`service`"),
        (
            "state-get",
            br#"{"service":""}"#,
            "`service` must not be empty",
        ),
        (
            "state-get",
            br#"{"service":7,"key":"k"}"#,
            "`service` must be a string",
        ),
        ("state-get", br#"{"service":"s"}"#, "missing field `key`"),
        (
            "state-get",
            br#"{"service":"s","key":""}"#,
            "`key` must not be empty",
        ),
        (
            "state-set",
            br#"{"service":"s","key":"k"}"#,
            "missing field `value`",
        ),
        (
            "state-set",
            br#"{"service":"s","key":"123456789","value":1}"#,
            "`key` is 9 bytes",
        ),
        (
            "create-scope",
            br#"{"service":"0123456789abcdefg"}"#,
            "`service` is 17 bytes",
        ),
        (
            "state-get-many",
            br#"{"service":"s","keys":[]}"#,
            "`keys` must not be empty",
        ),
        (
            "state-get-many",
            br#"{"service":"s","keys":"k"}"#,
            "`keys` must be an array",
        ),
        (
            "state-get-many",
            br#"{"service":"s","keys":["a","b","c","d"]}"#,
            "limit is 3",
        ),
        (
            "state-set-many",
            br#"{"service":"s","entries":[1]}"#,
            "`entries` must be a JSON object",
        ),
        (
            "state-set-many",
            br#"{"service":"s","entries":{"":1}}"#,
            "`entries` must not be empty",
        ),
        (
            "state-get",
            br#"{"service":"s","key":"k","token":5}"#,
            "`token` must be a string",
        ),
        ("backup", b"{}", "missing field `path`"),
    ];
    for (op, body, expected) in cases {
        let reply = f.raw(&[op.as_bytes(), body]);
        assert_eq!(code(&reply), "INVALID_REQUEST", "{op} {body:?}: {reply}");
        assert!(
            message(&reply).contains(expected),
            "{op} {}: {reply} should mention {expected}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn the_authorizer_is_consulted_with_operation_scope_and_token() {
    let f = fixture();
    let auth = StaticTokens::new()
        .grant("reader", ["state:scope:s:read", "state:scope:list"])
        .grant("admin", ["state:admin:full"]);
    let d = Dispatcher::new(f.dispatcher.store().clone(), StateMetrics::unregistered())
        .with_authorizer(Arc::new(auth));
    let call = |op: &str, body: Value| -> Value {
        serde_json::from_slice(&d.handle(&[op.as_bytes().to_vec(), body.to_string().into_bytes()]))
            .unwrap()
    };
    assert_eq!(
        code(&call(
            "state-set",
            json!({"service": "s", "key": "k", "value": 1})
        )),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        code(&call(
            "state-set",
            json!({"service": "s", "key": "k", "value": 1, "token": "bad"})
        )),
        "UNAUTHENTICATED"
    );
    let forbidden = call(
        "state-set",
        json!({"service": "s", "key": "k", "value": 1, "token": "reader"}),
    );
    assert_eq!(code(&forbidden), "PERMISSION_DENIED");
    assert!(message(&forbidden).contains("state:data:write"));
    let ok = call(
        "state-set",
        json!({"service": "s", "key": "k", "value": 1, "token": "admin"}),
    );
    assert_eq!(ok["success"], json!(true));
    let read = call(
        "state-get",
        json!({"service": "s", "key": "k", "token": "reader"}),
    );
    assert_eq!(read["data"]["value"], json!(1));
    assert_eq!(
        code(&call(
            "state-get",
            json!({"service": "other", "key": "k", "token": "reader"})
        )),
        "PERMISSION_DENIED"
    );
    assert_eq!(
        call("list-scopes", json!({"token": "reader"}))["success"],
        json!(true)
    );
}

#[test]
fn requests_are_counted_by_operation_and_outcome() {
    let f = fixture();
    f.ok("set", json!({"service": "s", "key": "k", "value": 1}));
    f.call("get", json!({"service": "s", "key": "missing"}));
    f.call("nope", json!({}));
    let requests = &f.dispatcher.metrics.requests;
    assert_eq!(requests.with_label_values(&["state-set", "ok"]).get(), 1);
    assert_eq!(
        requests
            .with_label_values(&["state-get", "KEY_NOT_FOUND"])
            .get(),
        1
    );
    assert_eq!(
        requests
            .with_label_values(&["unknown", "UNKNOWN_OPERATION"])
            .get(),
        1
    );
}
