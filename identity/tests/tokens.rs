//! Issue 12 test 3 (identity's side) and the token rules: refresh rotation and reuse detection,
//! logout revoking access and refresh tokens (and the `revoked` event carrying the session id,
//! which an SDK verifier applies), current grants in `auth/validate`, password changes, key
//! rotation, and forged tokens (wrong key, `alg: none`, HS256 with the public key as secret,
//! tampered claims, expired) refused.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{code, data, expect_event, parts, wait_for, Harness};
use plantd_worker_sdk::auth::{AuthConfig, AuthError};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

/// `auth/validate` of `token`: (valid, code if not).
fn validity(h: &Harness, token: &str) -> (bool, String) {
    let reply = data(h.call("auth", "validate", json!({"token": token})));
    (
        reply["valid"].as_bool().unwrap(),
        reply["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn tokens_follow_the_contract() {
    let h = Harness::start();
    let login = h.login("admin", &h.admin_password());
    let token = login["access_token"].as_str().unwrap();
    let (header, claims) = parts(token);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "JWT");
    let kid = header["kid"].as_str().unwrap();
    assert_eq!(kid.len(), 16);
    assert_eq!(claims["iss"], "plantd-identity");
    assert_eq!(claims["aud"], "plantd");
    assert_eq!(claims["sub"], "1");
    assert_eq!(claims["username"], "admin");
    assert_eq!(claims["kind"], "user");
    assert_eq!(claims["sid"].as_str().unwrap().len(), 32);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert_eq!(claims["roles"], json!(["system-admin"]));
    assert_eq!(claims["permissions"], json!(["system:admin"]));
    assert_eq!(claims["org_permissions"], json!({}));
    assert_eq!(claims["orgs"], json!([]));
    assert!(claims.get("akid").is_none());

    let keys = data(h.call("auth", "public_keys", json!({})));
    assert_eq!(keys["access_token_ttl_secs"], 900);
    let jwk = &keys["keys"][0];
    assert_eq!(
        (
            &jwk["kty"],
            &jwk["crv"],
            &jwk["alg"],
            &jwk["use"],
            &jwk["kid"]
        ),
        (
            &json!("OKP"),
            &json!("Ed25519"),
            &json!("EdDSA"),
            &json!("sig"),
            &json!(kid)
        )
    );
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    // A second token of another login differs in sid and jti.
    let other = h.login("admin", &h.admin_password());
    let (_, other_claims) = parts(other["access_token"].as_str().unwrap());
    assert_ne!(other_claims["sid"], claims["sid"]);
    assert_ne!(other_claims["jti"], claims["jti"]);
}

#[test]
fn refresh_rotates_and_a_reused_refresh_token_revokes_the_session() {
    let h = Harness::start();
    let admin = h.admin_token();
    h.create_user(&admin, "rita", PASSWORD);
    let first = h.login("rita", PASSWORD);
    let other_session = h.login("rita", PASSWORD);
    let (r1, a1) = (
        first["refresh_token"].as_str().unwrap().to_owned(),
        first["access_token"].as_str().unwrap().to_owned(),
    );
    let sid = parts(&a1).1["sid"].as_str().unwrap().to_owned();

    let second = data(h.call("auth", "refresh", json!({"refresh_token": r1})));
    let (r2, a2) = (
        second["refresh_token"].as_str().unwrap().to_owned(),
        second["access_token"].as_str().unwrap().to_owned(),
    );
    assert_ne!(r2, r1);
    assert_ne!(a2, a1);
    assert_eq!(parts(&a2).1["sid"], json!(sid), "refresh keeps the session");
    assert_eq!(validity(&h, &a2), (true, String::new()));

    // The used token comes back: the whole session is revoked and that is published.
    let events = h.subscribe_events();
    let reuse = h.call("auth", "refresh", json!({"refresh_token": r1}));
    assert_eq!(code(&reuse), "TOKEN_REVOKED", "{reuse}");
    // (The audit event goes out first; `expect_event` skips what it does not look for.)
    let audit = expect_event(&events, "org.plantd.identity.audit.token.reuse", |_| true);
    assert_eq!(audit["target"], json!(format!("session:{sid}")));
    let event = expect_event(&events, "org.plantd.identity.revoked", |d| {
        d["reason"] == "refresh_reuse"
    });
    assert_eq!(event["sessions"], json!([sid]));
    assert!(event["user_id"].is_u64());
    assert_eq!(validity(&h, &a1), (false, "TOKEN_REVOKED".into()));
    assert_eq!(validity(&h, &a2), (false, "TOKEN_REVOKED".into()));
    let later = h.call("auth", "refresh", json!({"refresh_token": r2}));
    assert_eq!(
        code(&later),
        "TOKEN_REVOKED",
        "the rotated token died with its session"
    );
    // The user's other session is untouched.
    let other = other_session["access_token"].as_str().unwrap();
    assert_eq!(validity(&h, other), (true, String::new()));
    data(h.call(
        "auth",
        "refresh",
        json!({"refresh_token": other_session["refresh_token"]}),
    ));

    assert_eq!(
        code(&h.call("auth", "refresh", json!({"refresh_token": "made-up"}))),
        "UNAUTHENTICATED"
    );
}

#[test]
fn an_expired_refresh_token_is_refused() {
    let mut h = Harness::broker_only();
    h.config.tokens.refresh_ttl_secs = 1;
    h.start_identity();
    let login = h.login("admin", &h.admin_password());
    let expires =
        chrono::DateTime::parse_from_rfc3339(login["refresh_expires_at"].as_str().unwrap())
            .unwrap();
    wait_for("the refresh token to expire", || {
        chrono::Utc::now() > expires
    });
    let reply = h.call(
        "auth",
        "refresh",
        json!({"refresh_token": login["refresh_token"]}),
    );
    assert_eq!(code(&reply), "TOKEN_EXPIRED", "{reply}");
}

#[test]
fn logout_revokes_access_and_refresh_tokens_and_verifiers_hear_of_it() {
    let h = Harness::start();
    let login = h.login("admin", &h.admin_password());
    let (access, refresh) = (
        login["access_token"].as_str().unwrap().to_owned(),
        login["refresh_token"].as_str().unwrap().to_owned(),
    );
    let sid = parts(&access).1["sid"].as_str().unwrap().to_owned();

    // A service's verifier, fed from the event bus like state's and the logger's.
    let shutdown = plantd_worker_sdk::Shutdown::new();
    let auth = AuthConfig {
        event_endpoint: h.bus_backend.clone(),
        ..AuthConfig::default()
    };
    let verifier = auth
        .start(&h.endpoint, None, shutdown.clone())
        .unwrap()
        .unwrap();
    wait_for("the verifier to connect to the event bus", || {
        verifier.stats().events_connected
    });
    verifier
        .authorize(Some(&access), "identity:user:read")
        .unwrap();

    let events = h.subscribe_events();
    let reply = data(h.call("auth", "logout", json!({"token": access})));
    assert_eq!(reply["session"], json!(sid));
    let event = expect_event(&events, "org.plantd.identity.revoked", |d| {
        d["reason"] == "logout"
    });
    assert_eq!(event["sessions"], json!([sid]));
    assert_eq!(event["user_id"], 1);

    assert_eq!(validity(&h, &access), (false, "TOKEN_REVOKED".into()));
    assert_eq!(
        code(&h.call_as(&access, "user", "list", json!({}))),
        "TOKEN_REVOKED"
    );
    assert_eq!(
        code(&h.call("auth", "refresh", json!({"refresh_token": refresh}))),
        "TOKEN_REVOKED"
    );
    assert_eq!(
        code(&h.call("auth", "logout", json!({"token": access}))),
        "TOKEN_REVOKED"
    );
    // The verifier refuses the token it had cached: revocation through the bus, not expiry.
    wait_for("the verifier to apply the revocation", || {
        verifier.authorize(Some(&access), "identity:user:read") == Err(AuthError::TokenRevoked)
    });
    shutdown.cancel();
}

#[test]
fn validate_reports_current_grants_and_changes_are_published() {
    let h = Harness::start();
    let admin = h.admin_token();
    let (carl, token) = h.user_with(&admin, "carl", &[]);
    let now = data(h.call("auth", "validate", json!({"token": token})));
    assert_eq!(now["permissions"], json!([]));
    assert_eq!(now["user_id"], carl);
    assert_eq!(now["username"], "carl");

    let events = h.subscribe_events();
    let role = h.create_role(&admin, "readers", &["state:data:read"]);
    data(h.call_as(
        &admin,
        "user",
        "assign_role",
        json!({"user_id": carl, "role_id": role}),
    ));
    let changed = expect_event(&events, "org.plantd.identity.changed", |_| true);
    assert_eq!(changed["user_ids"], json!([carl]));
    // The same token, no new login: validate shows the new role.
    let later = data(h.call("auth", "validate", json!({"token": token})));
    assert_eq!(later["permissions"], json!(["state:data:read"]));
    assert_eq!(later["roles"], json!(["readers"]));
    // Editing the role's permissions is a change for its holders too.
    data(h.call_as(
        &admin,
        "role",
        "update",
        json!({"role_id": role, "permissions": ["logger:read"]}),
    ));
    expect_event(&events, "org.plantd.identity.changed", |d| {
        d["user_ids"] == json!([carl])
    });
    assert_eq!(
        data(h.call("auth", "validate", json!({"token": token})))["permissions"],
        json!(["logger:read"])
    );

    // Deactivation ends every session at once.
    data(h.call_as(&admin, "user", "deactivate", json!({"user_id": carl})));
    let revoked = expect_event(&events, "org.plantd.identity.revoked", |d| {
        d["reason"] == "deactivated"
    });
    assert_eq!(revoked["user_id"], carl);
    assert_eq!(revoked["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(validity(&h, &token), (false, "TOKEN_REVOKED".into()));
}

#[test]
fn changing_the_password_ends_the_other_sessions() {
    let h = Harness::start();
    let admin = h.admin_token();
    h.create_user(&admin, "pat", PASSWORD);
    let here = h.login("pat", PASSWORD)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let elsewhere = h.login("pat", PASSWORD)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let change = |current: &str, new: &str| {
        h.call_as(
            &here,
            "auth",
            "change_password",
            json!({"current_password": current, "new_password": new}),
        )
    };
    assert_eq!(
        code(&change("not it at all", "a brand new passphrase")),
        "LOGIN_FAILED"
    );
    assert_eq!(code(&change(PASSWORD, "password1")), "WEAK_PASSWORD");
    assert_eq!(code(&change(PASSWORD, "short")), "WEAK_PASSWORD");
    let events = h.subscribe_events();
    let done = data(change(PASSWORD, "a brand new passphrase"));
    assert_eq!(done["sessions_revoked"], 1);
    let event = expect_event(&events, "org.plantd.identity.revoked", |d| {
        d["reason"] == "password_changed"
    });
    assert_eq!(event["sessions"], json!([parts(&elsewhere).1["sid"]]));
    assert_eq!(validity(&h, &here), (true, String::new()));
    assert_eq!(validity(&h, &elsewhere), (false, "TOKEN_REVOKED".into()));
    assert_eq!(
        code(&h.call(
            "auth",
            "login",
            json!({"identifier": "pat", "password": PASSWORD})
        )),
        "LOGIN_FAILED"
    );
    h.login("pat", "a brand new passphrase");
    assert_eq!(
        code(&h.call(
            "auth",
            "change_password",
            json!({"current_password": "x", "new_password": "y"})
        )),
        "UNAUTHENTICATED"
    );
}

#[test]
fn a_rotated_key_signs_new_tokens_while_old_ones_stay_valid() {
    let h = Harness::start();
    let admin = h.admin_token();
    let old_kid = parts(&admin).0["kid"].as_str().unwrap().to_owned();
    let rotated = data(h.call_as(&admin, "auth", "rotate_key", json!({})));
    assert_eq!(rotated["previous_kid"], json!(old_kid));
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let keys = data(h.call("auth", "public_keys", json!({})));
    let kids: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        [new_kid.as_str(), old_kid.as_str()],
        "the old key stays listed"
    );
    assert_eq!(validity(&h, &admin), (true, String::new()));
    let fresh = h.admin_token();
    assert_eq!(parts(&fresh).0["kid"], json!(new_kid));
    assert_eq!(validity(&h, &fresh), (true, String::new()));
}

#[test]
fn forged_tokens_are_refused() {
    let h = Harness::start();
    let admin = h.admin_token();
    let (_, weak) = h.user_with(&admin, "mallory", &[]);
    let forged = common::forgeries(&h, &weak);
    assert_eq!(validity(&h, &forged.resigned), (true, String::new()));

    for (what, token, want) in &forged.tokens {
        assert_eq!(validity(&h, token), (false, want.to_string()), "{what}");
        let reply = h.call_as(token, "user", "list", json!({}));
        assert_eq!(code(&reply), *want, "{what}: {reply}");
    }
    // And the genuine weak token is still just weak.
    assert_eq!(
        code(&h.call_as(&weak, "user", "list", json!({}))),
        "PERMISSION_DENIED"
    );
}

/// `auth/notices` after `after` (with `extra` fields): the reply `data`.
fn notices(h: &Harness, after: i64, extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({"after": after});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    data(h.call("auth", "notices", body))
}

#[test]
fn every_revocation_and_grant_change_is_kept_in_the_notice_log() {
    let mut h = Harness::start();
    let admin = h.admin_token();
    let start = notices(&h, 0, json!({}))["last_seq"].as_i64().unwrap();
    let (user, token) = h.user_with(&admin, "operator", &["state:data:read"]);
    let sid = parts(&token).1["sid"].as_str().unwrap().to_owned();
    data(h.call("auth", "logout", json!({"token": token})));
    let role = h.create_role(&admin, "spare", &["logger:read"]);
    data(h.call_as(
        &admin,
        "user",
        "assign_role",
        json!({"user_id": user, "role_id": role}),
    ));

    let log = notices(&h, start, json!({}));
    let listed = log["notices"].as_array().unwrap();
    let topics: Vec<&str> = listed
        .iter()
        .map(|n| n["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        [
            "org.plantd.identity.changed", // user_with's role
            "org.plantd.identity.revoked", // the logout
            "org.plantd.identity.changed", // the spare role
        ],
        "{log}"
    );
    assert_eq!(listed[1]["data"]["sessions"], json!([sid]));
    assert_eq!(listed[1]["data"]["reason"], "logout");
    assert_eq!(listed[2]["data"]["user_ids"], json!([user]));
    assert_eq!(log["last_seq"], listed[2]["seq"]);
    assert_eq!(log["more"], false);
    let seqs: Vec<i64> = listed.iter().map(|n| n["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Paging: one at a time, from where the last page stopped.
    let page = notices(&h, start, json!({"limit": 1}));
    assert_eq!(page["notices"].as_array().unwrap().len(), 1);
    assert_eq!(page["more"], true);
    assert_eq!(page["notices"][0]["seq"], seqs[0]);
    let tail = notices(&h, seqs[2], json!({}));
    assert_eq!(tail["notices"], json!([]));
    assert_eq!(tail["more"], false);

    // The log is in the database: a restarted identity still has it.
    h.stop_identity();
    h.start_identity();
    assert_eq!(notices(&h, start, json!({}))["notices"], log["notices"]);

    for (body, field) in [
        (json!({"after": -1}), "after"),
        (json!({"after": "1"}), "after"),
        (json!({"limit": 0}), "limit"),
        (json!({"limit": 1001}), "limit"),
    ] {
        let reply = h.call("auth", "notices", body.clone());
        assert_eq!(code(&reply), "INVALID_REQUEST", "{body}: {reply}");
        assert!(reply.to_string().contains(field), "{reply}");
    }
}

#[test]
fn an_access_token_lifetime_beyond_the_notice_log_is_refused() {
    let mut h = Harness::broker_only();
    h.config.tokens.access_ttl_secs = 13 * 3600;
    let stop = plantd_worker_sdk::Shutdown::new();
    let refused =
        h.rt.block_on(plantd_identity::run(h.config.clone(), stop))
            .unwrap_err();
    assert!(refused.to_string().contains("access_ttl_secs"), "{refused}");
}
