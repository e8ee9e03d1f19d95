//! API keys: shown once and stored only as a hash, exchanged for access tokens with
//! `auth/token`, never more than their creator holds, and dead once revoked or expired.

mod common;

use common::{code, data, expect_event, wait_for, Harness};
use serde_json::json;

/// Every byte of the database files (main file and WAL), for "is this secret stored?".
fn database_bytes(h: &Harness) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", h.db_path().display());
        bytes.extend(std::fs::read(path).unwrap_or_default());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_key_is_shown_once_stored_hashed_and_exchanged_for_a_token() {
    let h = Harness::start();
    let admin = h.admin_token();
    let created = data(h.call_as(
        &admin,
        "api_key",
        "create",
        json!({"name": "sensor-7", "permissions": ["state:scope:sensors:write", "state:data:read"]}),
    ));
    let key = created["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pdk_") && key.len() > 40, "{key}");
    let meta = &created["key"];
    assert_eq!(meta["name"], "sensor-7");
    assert!(key.starts_with(meta["prefix"].as_str().unwrap()));
    assert!(meta.get("key_hash").is_none());
    let key_id = meta["id"].as_i64().unwrap();

    // Stored as a hash: the key is nowhere in the database files, its SHA-256 is.
    let stored = database_bytes(&h);
    assert!(
        !contains(&stored, key.as_bytes()),
        "the key is stored in clear"
    );
    let hash = plantd_identity::tokens::digest(&key);
    assert!(contains(&stored, &hash), "the key's hash is stored");
    // Listed without the key.
    let list = data(h.call_as(&admin, "api_key", "list", json!({})));
    assert_eq!(list["total"], 1);
    assert!(!list.to_string().contains(&key));

    let exchanged = data(h.call("auth", "token", json!({"api_key": key})));
    let token = exchanged["access_token"].as_str().unwrap().to_owned();
    assert_eq!(exchanged["token_type"], "Bearer");
    assert!(exchanged.get("refresh_token").is_none());
    assert_eq!(
        exchanged["permissions"],
        json!(["state:data:read", "state:scope:sensors:write"])
    );
    let valid = data(h.call("auth", "validate", json!({"token": token})));
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["kind"], "api_key");
    assert_eq!(valid["user_id"], 1);
    assert_eq!(valid["roles"], json!([]));
    let claims: serde_json::Value = {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(claims["kind"], "api_key");
    assert_eq!(claims["akid"], key_id);
    // The key's token does what the key may, not what its (admin) owner may.
    let reply = h.call_as(&token, "user", "list", json!({}));
    assert_eq!(code(&reply), "PERMISSION_DENIED");
    // A machine cannot mint itself more keys.
    let reply = h.call_as(
        &token,
        "api_key",
        "create",
        json!({"name": "more", "permissions": ["state:data:read"]}),
    );
    assert_eq!(code(&reply), "PERMISSION_DENIED");

    for (body, field) in [
        (json!({"permissions": ["state:data:read"]}), "name"),
        (json!({"name": "k"}), "permissions"),
        (json!({"name": "k", "permissions": []}), "permissions"),
        (
            json!({"name": "k", "permissions": ["bad name"]}),
            "permissions",
        ),
        (
            json!({"name": "k", "permissions": ["state:data:read"], "expires_in": 0}),
            "expires_in",
        ),
        (
            json!({"name": "k", "permissions": ["state:data:read"], "expires_in": "soon"}),
            "expires_in",
        ),
    ] {
        let reply = h.call_as(&admin, "api_key", "create", body.clone());
        assert_eq!(code(&reply), "INVALID_REQUEST", "{body}");
        assert!(
            common::message(&reply).contains(&format!("`{field}`")),
            "{body}: {reply}"
        );
    }
    assert_eq!(
        code(&h.call("auth", "token", json!({"api_key": "pdk_made-up"}))),
        "UNAUTHENTICATED"
    );
}

#[test]
fn a_key_is_a_subset_of_its_creator_and_follows_the_creator() {
    let h = Harness::start();
    let admin = h.admin_token();
    let (operator, token) = h.user_with(
        &admin,
        "operator",
        &[
            "identity:api_key:create",
            "identity:api_key:read",
            "identity:api_key:revoke",
            "state:data:read",
        ],
    );
    let reply = h.call_as(
        &token,
        "api_key",
        "create",
        json!({"name": "too-much", "permissions": ["state:data:write"]}),
    );
    assert_eq!(code(&reply), "PERMISSION_DENIED");
    assert!(common::message(&reply).contains("state:data:write"));
    let ok = data(h.call_as(
        &token,
        "api_key",
        "create",
        json!({"name": "reader", "permissions": ["state:data:read"]}),
    ));
    let key = ok["api_key"].as_str().unwrap().to_owned();
    let machine = data(h.call("auth", "token", json!({"api_key": key})))["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        data(h.call("auth", "validate", json!({"token": machine})))["permissions"],
        json!(["state:data:read"])
    );
    // The owner loses the permission: the key's token loses it too, at once.
    let role = data(h.call_as(&admin, "user", "get", json!({"user_id": operator})))["roles"][0]
        ["role_id"]
        .as_i64()
        .unwrap();
    data(h.call_as(
        &admin,
        "role",
        "update",
        json!({"role_id": role, "permissions": ["identity:api_key:create"]}),
    ));
    assert_eq!(
        data(h.call("auth", "validate", json!({"token": machine})))["permissions"],
        json!([])
    );
    // Others' keys are listed and revoked only with user permissions.
    let reply = h.call_as(&token, "api_key", "list", json!({"user_id": 1}));
    assert_eq!(code(&reply), "PERMISSION_DENIED");
}

#[test]
fn a_revoked_or_expired_key_stops_working() {
    let h = Harness::start();
    let admin = h.admin_token();
    let created = data(h.call_as(
        &admin,
        "api_key",
        "create",
        json!({"name": "k", "permissions": ["logger:read"]}),
    ));
    let (key, key_id) = (
        created["api_key"].as_str().unwrap().to_owned(),
        created["key"]["id"].as_i64().unwrap(),
    );
    let token = data(h.call("auth", "token", json!({"api_key": key})))["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sid = data(h.call("auth", "validate", json!({"token": token})))["session"].clone();

    let events = h.subscribe_events();
    data(h.call_as(&admin, "api_key", "revoke", json!({"key_id": key_id})));
    let event = expect_event(&events, "org.plantd.identity.revoked", |d| {
        d["reason"] == "api_key_revoked"
    });
    assert_eq!(event["sessions"], json!([sid]));
    let valid = data(h.call("auth", "validate", json!({"token": token})));
    assert_eq!(
        (valid["valid"].clone(), valid["code"].clone()),
        (json!(false), json!("TOKEN_REVOKED"))
    );
    assert_eq!(
        code(&h.call("auth", "token", json!({"api_key": key}))),
        "TOKEN_REVOKED"
    );
    assert_eq!(
        code(&h.call_as(&admin, "api_key", "revoke", json!({"key_id": key_id}))),
        "CONFLICT"
    );
    assert_eq!(
        code(&h.call_as(&admin, "api_key", "revoke", json!({"key_id": 999}))),
        "NOT_FOUND"
    );
    let listed = data(h.call_as(&admin, "api_key", "list", json!({})));
    assert!(listed["keys"][0]["revoked_at"].is_string());

    let short = data(h.call_as(
        &admin,
        "api_key",
        "create",
        json!({"name": "short", "permissions": ["logger:read"], "expires_in": 1}),
    ));
    let expires =
        chrono::DateTime::parse_from_rfc3339(short["key"]["expires_at"].as_str().unwrap()).unwrap();
    wait_for("the key to expire", || chrono::Utc::now() > expires);
    assert_eq!(
        code(&h.call("auth", "token", json!({"api_key": short["api_key"]}))),
        "TOKEN_EXPIRED"
    );
}
