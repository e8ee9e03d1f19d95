//! Issue 12 test 1 through a real broker: every operation of every category, and the error codes
//! they answer with; bad JSON, missing fields and wrong types give `INVALID_REQUEST` naming the
//! field, never a crash. Also `/healthz` and `/metrics` of the running service. (Login, lockout
//! and rate limits: `login.rs`; tokens and revocation: `tokens.rs`; API keys: `api_keys.rs`.)

mod common;

use common::{call_raw, code, data, message, Harness, SERVICE};
use serde_json::{json, Value};

#[test]
fn users_every_operation_and_error() {
    let h = Harness::start();
    let admin = h.admin_token();
    let create = |body: Value| h.call_as(&admin, "user", "create", body);

    let alice = data(create(json!({
        "username": "alice", "email": "Alice@Example.com", "password": "a long enough passphrase",
        "first_name": "Alice", "last_name": "Liddell"
    })))["user"]
        .clone();
    assert_eq!(alice["username"], "alice");
    assert_eq!(
        alice["email"], "alice@example.com",
        "emails are stored lowercase"
    );
    assert_eq!(alice["is_active"], true);
    assert!(alice.get("password_hash").is_none() && alice.get("password").is_none());
    let alice_id = alice["id"].as_i64().unwrap();

    // CONFLICT: username or email taken, in any case.
    let taken = create(
        json!({"username": "ALICE", "email": "other@example.com", "password": "a long enough passphrase"}),
    );
    assert_eq!(code(&taken), "CONFLICT");
    let taken = create(
        json!({"username": "alice2", "email": "ALICE@example.com", "password": "a long enough passphrase"}),
    );
    assert_eq!(code(&taken), "CONFLICT");
    // WEAK_PASSWORD: too short, common, or the username itself; no composition rules.
    for weak in ["short", "password123", "Qwerty123", "bobby-tables"] {
        let reply = create(
            json!({"username": "bobby-tables", "email": "bob@example.com", "password": weak}),
        );
        assert_eq!(code(&reply), "WEAK_PASSWORD", "{weak}: {reply}");
        assert!(
            !message(&reply).contains(weak),
            "the password is not echoed"
        );
    }
    // INVALID_REQUEST naming the field.
    for (body, field) in [
        (
            json!({"email": "x@example.com", "password": "a long enough passphrase"}),
            "username",
        ),
        (
            json!({"username": "x y", "email": "x@example.com", "password": "a long enough passphrase"}),
            "username",
        ),
        (
            json!({"username": "xavier", "email": "not-an-email", "password": "a long enough passphrase"}),
            "email",
        ),
        (
            json!({"username": "xavier", "email": 7, "password": "a long enough passphrase"}),
            "email",
        ),
        (
            json!({"username": "xavier", "email": "x@example.com"}),
            "password",
        ),
        (
            json!({"username": "xavier", "email": "x@example.com", "password": "a long enough passphrase", "is_active": "yes"}),
            "is_active",
        ),
    ] {
        let reply = create(body.clone());
        assert_eq!(code(&reply), "INVALID_REQUEST", "{body}");
        assert!(
            message(&reply).contains(&format!("`{field}`")),
            "{body}: {reply}"
        );
    }

    // get by id, email or username, any case.
    for body in [
        json!({"user_id": alice_id}),
        json!({"email": "ALICE@example.com"}),
        json!({"username": "Alice"}),
    ] {
        let got = data(h.call_as(&admin, "user", "get", body));
        assert_eq!(got["user"]["id"], alice_id);
    }
    assert_eq!(
        code(&h.call_as(&admin, "user", "get", json!({"user_id": 999}))),
        "NOT_FOUND"
    );
    let reply = h.call_as(&admin, "user", "get", json!({}));
    assert_eq!(code(&reply), "INVALID_REQUEST");
    assert!(message(&reply).contains("`user_id`"));
    assert_eq!(
        code(&h.call_as(&admin, "user", "get", json!({"user_id": -1}))),
        "INVALID_REQUEST"
    );

    // update
    let updated = data(h.call_as(
        &admin,
        "user",
        "update",
        json!({"user_id": alice_id, "first_name": "Alicia", "email": "alicia@example.com"}),
    ));
    assert_eq!(updated["user"]["first_name"], "Alicia");
    assert_eq!(
        updated["user"]["last_name"], "Liddell",
        "untouched fields stay"
    );
    assert_eq!(updated["user"]["email"], "alicia@example.com");
    assert_eq!(
        code(&h.call_as(
            &admin,
            "user",
            "update",
            json!({"user_id": 999, "first_name": "x"})
        )),
        "NOT_FOUND"
    );
    assert_eq!(
        code(&h.call_as(
            &admin,
            "user",
            "update",
            json!({"user_id": alice_id, "username": "admin"})
        )),
        "CONFLICT"
    );
    assert_eq!(
        code(&h.call_as(&admin, "user", "update", json!({"first_name": "x"}))),
        "INVALID_REQUEST"
    );

    // activate / deactivate / verify_email
    let off = data(h.call_as(&admin, "user", "deactivate", json!({"user_id": alice_id})));
    assert_eq!(off["user"]["is_active"], false);
    let on = data(h.call_as(&admin, "user", "activate", json!({"user_id": alice_id})));
    assert_eq!(on["user"]["is_active"], true);
    let verified = data(h.call_as(&admin, "user", "verify_email", json!({"user_id": alice_id})));
    assert_eq!(verified["user"]["email_verified"], true);
    assert!(verified["user"]["email_verified_at"].is_string());
    assert_eq!(
        code(&h.call_as(&admin, "user", "activate", json!({"user_id": 999}))),
        "NOT_FOUND"
    );
    let reply = h.call_as(&admin, "user", "deactivate", json!({"user_id": 1}));
    assert_eq!(
        code(&reply),
        "INVALID_REQUEST",
        "nobody deactivates themselves"
    );

    // list: paging, total, filters that work, sorting.
    for name in ["carol", "dave", "erin"] {
        h.create_user(&admin, name, "a long enough passphrase");
    }
    let page = data(h.call_as(&admin, "user", "list", json!({"offset": 1, "limit": 2})));
    assert_eq!(page["total"], 5);
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    assert_eq!(page["offset"], 1);
    let found = data(h.call_as(&admin, "user", "list", json!({"search": "AR"})));
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["users"][0]["username"], "carol");
    let verified_only =
        data(h.call_as(&admin, "user", "list", json!({"include_unverified": false})));
    assert_eq!(verified_only["total"], 1);
    h.call_as(&admin, "user", "deactivate", json!({"user_id": alice_id}));
    let active = data(h.call_as(&admin, "user", "list", json!({"include_inactive": false})));
    assert_eq!(active["total"], 4);
    let desc = data(h.call_as(
        &admin,
        "user",
        "list",
        json!({"sort_by": "username", "sort_order": "desc"}),
    ));
    assert_eq!(desc["users"][0]["username"], "erin");
    for (body, field) in [
        (json!({"limit": 0}), "limit"),
        (json!({"limit": 101}), "limit"),
        (json!({"offset": -1}), "offset"),
        (json!({"sort_by": "password_hash"}), "sort_by"),
        (json!({"sort_order": "up"}), "sort_order"),
        (json!({"include_inactive": 1}), "include_inactive"),
    ] {
        let reply = h.call_as(&admin, "user", "list", body.clone());
        assert_eq!(code(&reply), "INVALID_REQUEST", "{body}");
        assert!(
            message(&reply).contains(&format!("`{field}`")),
            "{body}: {reply}"
        );
    }

    // delete
    assert_eq!(
        data(h.call_as(&admin, "user", "delete", json!({"user_id": alice_id})))["deleted"],
        true
    );
    assert_eq!(
        code(&h.call_as(&admin, "user", "delete", json!({"user_id": alice_id}))),
        "NOT_FOUND"
    );
    assert_eq!(
        code(&h.call_as(&admin, "user", "delete", json!({"user_id": 1}))),
        "INVALID_REQUEST"
    );
    // A deleted user's name and email can be used again (no soft delete).
    create(
        json!({"username": "alice", "email": "alicia@example.com", "password": "a long enough passphrase"}),
    );
}

#[test]
fn roles_organizations_and_assignments() {
    let h = Harness::start();
    let admin = h.admin_token();
    let bob = h.create_user(&admin, "bob", "a long enough passphrase");

    // role/create: validated permission names, a JSON array.
    let role = data(h.call_as(
        &admin,
        "role",
        "create",
        json!({"name": "state-writer", "description": "writes scope a",
               "permissions": ["state:scope:a:write", "logger:read", "state:data:*"]}),
    ))["role"]
        .clone();
    assert_eq!(
        role["permissions"],
        json!(["logger:read", "state:data:*", "state:scope:a:write"]),
        "an array, sorted, not a string holding JSON"
    );
    assert_eq!(role["scope"], "global");
    let role_id = role["id"].as_i64().unwrap();
    assert_eq!(
        code(&h.call_as(
            &admin,
            "role",
            "create",
            json!({"name": "STATE-WRITER", "permissions": []})
        )),
        "CONFLICT"
    );
    for (body, field) in [
        (
            json!({"name": "r", "permissions": ["nonsense"]}),
            "permissions",
        ),
        (
            json!({"name": "r", "permissions": ["state:*:read"]}),
            "permissions",
        ),
        (
            json!({"name": "r", "permissions": "state:data:read"}),
            "permissions",
        ),
        (json!({"name": "r"}), "permissions"),
        (json!({"permissions": []}), "name"),
        (
            json!({"name": "r", "permissions": [], "scope": "galaxy"}),
            "scope",
        ),
    ] {
        let reply = h.call_as(&admin, "role", "create", body.clone());
        assert_eq!(code(&reply), "INVALID_REQUEST", "{body}");
        assert!(
            message(&reply).contains(&format!("`{field}`")),
            "{body}: {reply}"
        );
    }
    let got = data(h.call_as(&admin, "role", "get", json!({"role_id": role_id})));
    assert_eq!(got["role"]["name"], "state-writer");
    let by_name = data(h.call_as(&admin, "role", "get", json!({"name": "State-Writer"})));
    assert_eq!(by_name["role"]["id"], role_id);
    assert_eq!(
        code(&h.call_as(&admin, "role", "get", json!({"role_id": 999}))),
        "NOT_FOUND"
    );
    let updated = data(h.call_as(
        &admin,
        "role",
        "update",
        json!({"role_id": role_id, "permissions": ["state:scope:a:write"], "description": "only a"}),
    ));
    assert_eq!(
        updated["role"]["permissions"],
        json!(["state:scope:a:write"])
    );
    assert_eq!(
        code(&h.call_as(
            &admin,
            "role",
            "update",
            json!({"role_id": 999, "description": "x"})
        )),
        "NOT_FOUND"
    );
    let roles = data(h.call_as(&admin, "role", "list", json!({})));
    assert_eq!(roles["total"], 2, "system-admin and state-writer: {roles}");
    let global = data(h.call_as(&admin, "role", "list", json!({"scope": "organization"})));
    assert_eq!(global["total"], 0);

    // Global assignment; check_permission.
    let assigned = h.call_as(
        &admin,
        "user",
        "assign_role",
        json!({"user_id": bob, "role_id": role_id}),
    );
    data(assigned);
    assert_eq!(
        code(&h.call_as(
            &admin,
            "user",
            "assign_role",
            json!({"user_id": bob, "role_id": role_id})
        )),
        "CONFLICT"
    );
    assert_eq!(
        code(&h.call_as(
            &admin,
            "user",
            "assign_role",
            json!({"user_id": bob, "role_id": 999})
        )),
        "NOT_FOUND"
    );
    assert_eq!(
        code(&h.call_as(
            &admin,
            "user",
            "assign_role",
            json!({"user_id": 999, "role_id": role_id})
        )),
        "NOT_FOUND"
    );
    let check = |permission: &str, org: Option<i64>| {
        data(h.call_as(
            &admin,
            "role",
            "check_permission",
            json!({"user_id": bob, "permission": permission, "org_id": org}),
        ))["granted"]
            .as_bool()
            .unwrap()
    };
    assert!(check("state:scope:a:write", None));
    assert!(!check("state:scope:b:write", None));
    let reply = h.call_as(
        &admin,
        "role",
        "check_permission",
        json!({"user_id": bob, "permission": "bad"}),
    );
    assert_eq!(code(&reply), "INVALID_REQUEST");

    // Organizations.
    let org = data(h.call_as(
        &admin,
        "organization",
        "create",
        json!({"name": "Acme Plant 1"}),
    ))["organization"]
        .clone();
    assert_eq!(org["slug"], "acme-plant-1");
    let org_id = org["id"].as_i64().unwrap();
    assert_eq!(
        code(&h.call_as(
            &admin,
            "organization",
            "create",
            json!({"name": "Acme plant 1"})
        )),
        "CONFLICT",
        "same slug"
    );
    assert_eq!(
        code(&h.call_as(
            &admin,
            "organization",
            "create",
            json!({"name": "x", "slug": "Not A Slug"})
        )),
        "INVALID_REQUEST"
    );
    assert_eq!(
        data(h.call_as(
            &admin,
            "organization",
            "get",
            json!({"slug": "acme-plant-1"})
        ))["organization"]["id"],
        org_id
    );
    assert_eq!(
        code(&h.call_as(&admin, "organization", "get", json!({"org_id": 999}))),
        "NOT_FOUND"
    );
    let renamed = data(h.call_as(
        &admin,
        "organization",
        "update",
        json!({"org_id": org_id, "description": "the first"}),
    ));
    assert_eq!(renamed["organization"]["description"], "the first");
    assert_eq!(
        data(h.call_as(&admin, "organization", "list", json!({})))["total"],
        1
    );

    // An organization role is assigned within an organization the user belongs to.
    let org_role = data(h.call_as(
        &admin,
        "role",
        "create",
        json!({"name": "plant-reader", "permissions": ["state:data:read"], "scope": "organization"}),
    ))["role"]["id"]
        .as_i64()
        .unwrap();
    let reply = h.call_as(
        &admin,
        "user",
        "assign_role",
        json!({"user_id": bob, "role_id": org_role}),
    );
    assert_eq!(code(&reply), "INVALID_REQUEST");
    assert!(message(&reply).contains("`org_id`"));
    assert_eq!(
        code(&h.call_as(
            &admin,
            "user",
            "assign_role",
            json!({"user_id": bob, "role_id": role_id, "org_id": org_id})
        )),
        "INVALID_REQUEST",
        "a global role takes no org_id"
    );
    assert_eq!(
        code(&h.call_as(
            &admin,
            "user",
            "assign_role",
            json!({"user_id": bob, "role_id": org_role, "org_id": org_id})
        )),
        "CONFLICT",
        "not a member yet"
    );
    data(h.call_as(
        &admin,
        "user",
        "assign_organization",
        json!({"user_id": bob, "org_id": org_id}),
    ));
    assert_eq!(
        code(&h.call_as(
            &admin,
            "user",
            "assign_organization",
            json!({"user_id": bob, "org_id": org_id})
        )),
        "CONFLICT"
    );
    data(h.call_as(
        &admin,
        "user",
        "assign_role",
        json!({"user_id": bob, "role_id": org_role, "org_id": org_id}),
    ));
    assert!(check("state:data:read", Some(org_id)));
    assert!(
        !check("state:data:read", None),
        "only within the organization"
    );
    let members = data(h.call_as(&admin, "organization", "members", json!({"org_id": org_id})));
    assert_eq!(members["total"], 1);
    assert_eq!(members["members"][0]["user"]["username"], "bob");
    assert_eq!(members["members"][0]["roles"], json!(["plant-reader"]));
    let bob_details = data(h.call_as(&admin, "user", "get", json!({"user_id": bob})));
    assert_eq!(bob_details["organizations"], json!([org_id]));
    assert_eq!(bob_details["roles"].as_array().unwrap().len(), 2);
    // The scope of an assigned role cannot change under its holders.
    assert_eq!(
        code(&h.call_as(
            &admin,
            "role",
            "update",
            json!({"role_id": org_role, "scope": "global"})
        )),
        "CONFLICT"
    );

    // Unassign, remove membership (which drops the roles held there), delete.
    data(h.call_as(
        &admin,
        "user",
        "unassign_role",
        json!({"user_id": bob, "role_id": role_id}),
    ));
    assert_eq!(
        code(&h.call_as(
            &admin,
            "user",
            "unassign_role",
            json!({"user_id": bob, "role_id": role_id})
        )),
        "NOT_FOUND"
    );
    data(h.call_as(
        &admin,
        "user",
        "unassign_organization",
        json!({"user_id": bob, "org_id": org_id}),
    ));
    assert!(!check("state:data:read", Some(org_id)));
    assert_eq!(
        code(&h.call_as(
            &admin,
            "user",
            "unassign_organization",
            json!({"user_id": bob, "org_id": org_id})
        )),
        "NOT_FOUND"
    );
    data(h.call_as(&admin, "role", "delete", json!({"role_id": role_id})));
    assert_eq!(
        code(&h.call_as(&admin, "role", "delete", json!({"role_id": role_id}))),
        "NOT_FOUND"
    );
    data(h.call_as(&admin, "organization", "delete", json!({"org_id": org_id})));
    assert_eq!(
        code(&h.call_as(&admin, "organization", "delete", json!({"org_id": org_id}))),
        "NOT_FOUND"
    );
}

#[test]
fn permissions_are_required_and_nobody_grants_more_than_they_hold() {
    let h = Harness::start();
    let admin = h.admin_token();
    // No token, a garbage token.
    let reply = h.call("user", "list", json!({}));
    assert_eq!(code(&reply), "UNAUTHENTICATED");
    let reply = h.call_as("not.a.token", "user", "list", json!({}));
    assert_eq!(code(&reply), "UNAUTHENTICATED");
    let reply = h.call_as("", "user", "list", json!({}));
    assert_eq!(code(&reply), "UNAUTHENTICATED");

    // A user with no roles reads themselves and nothing else.
    let (nobody_id, nobody) = h.user_with(&admin, "nobody", &[]);
    assert_eq!(
        data(h.call_as(&nobody, "user", "get", json!({"user_id": nobody_id})))["user"]["id"],
        nobody_id
    );
    for (category, operation, body, permission) in [
        ("user", "get", json!({"user_id": 1}), "identity:user:read"),
        ("user", "list", json!({}), "identity:user:read"),
        (
            "user",
            "create",
            json!({"username": "x", "email": "x@x.x", "password": "a long enough passphrase"}),
            "identity:user:create",
        ),
        (
            "user",
            "update",
            json!({"user_id": 1, "first_name": "x"}),
            "identity:user:update",
        ),
        (
            "user",
            "delete",
            json!({"user_id": 1}),
            "identity:user:delete",
        ),
        (
            "user",
            "deactivate",
            json!({"user_id": 1}),
            "identity:user:update",
        ),
        (
            "user",
            "assign_role",
            json!({"user_id": nobody_id, "role_id": 1}),
            "identity:role:assign",
        ),
        (
            "user",
            "assign_organization",
            json!({"user_id": nobody_id, "org_id": 1}),
            "identity:organization:update",
        ),
        (
            "role",
            "create",
            json!({"name": "x", "permissions": []}),
            "identity:role:create",
        ),
        ("role", "list", json!({}), "identity:role:read"),
        (
            "role",
            "check_permission",
            json!({"user_id": 1, "permission": "system:admin"}),
            "identity:role:read",
        ),
        (
            "organization",
            "create",
            json!({"name": "x"}),
            "identity:organization:create",
        ),
        (
            "organization",
            "list",
            json!({}),
            "identity:organization:read",
        ),
        (
            "api_key",
            "create",
            json!({"name": "k", "permissions": ["logger:read"]}),
            "identity:api_key:create",
        ),
        ("api_key", "list", json!({}), "identity:api_key:read"),
        ("audit", "list", json!({}), "identity:audit:read"),
        ("auth", "rotate_key", json!({}), "system:admin"),
    ] {
        let reply = h.call_as(&nobody, category, operation, body);
        assert_eq!(
            code(&reply),
            "PERMISSION_DENIED",
            "{category}/{operation}: {reply}"
        );
        assert!(
            message(&reply).contains(permission),
            "{category}/{operation}: {reply}"
        );
    }
    // Asking about oneself needs no permission.
    data(h.call_as(
        &nobody,
        "role",
        "check_permission",
        json!({"user_id": nobody_id, "permission": "logger:read"}),
    ));

    // A role manager holding only `state:*` (and the identity permissions to manage roles)
    // creates and assigns roles within `state:*`, and nothing beyond.
    let (_, manager) = h.user_with(
        &admin,
        "manager",
        &[
            "identity:role:create",
            "identity:role:assign",
            "identity:role:update",
            "identity:role:read",
            "state:*",
        ],
    );
    let ok = data(h.call_as(
        &manager,
        "role",
        "create",
        json!({"name": "s", "permissions": ["state:data:read"]}),
    ));
    let small_role = ok["role"]["id"].as_i64().unwrap();
    let reply = h.call_as(
        &manager,
        "role",
        "create",
        json!({"name": "t", "permissions": ["logger:read"]}),
    );
    assert_eq!(code(&reply), "PERMISSION_DENIED");
    assert!(message(&reply).contains("logger:read"));
    let reply = h.call_as(
        &manager,
        "role",
        "create",
        json!({"name": "u", "permissions": ["system:admin"]}),
    );
    assert_eq!(code(&reply), "PERMISSION_DENIED");
    data(h.call_as(
        &manager,
        "user",
        "assign_role",
        json!({"user_id": nobody_id, "role_id": small_role}),
    ));
    // The admin role holds system:admin, which the manager does not: no assigning it, no editing it.
    let reply = h.call_as(
        &manager,
        "user",
        "assign_role",
        json!({"user_id": nobody_id, "role_id": 1}),
    );
    assert_eq!(code(&reply), "PERMISSION_DENIED");
    assert!(message(&reply).contains("system:admin"));
    let reply = h.call_as(
        &manager,
        "role",
        "update",
        json!({"role_id": 1, "description": "mine now"}),
    );
    assert_eq!(code(&reply), "PERMISSION_DENIED");
    let reply = h.call_as(
        &manager,
        "role",
        "update",
        json!({"role_id": small_role, "permissions": ["identity:user:delete"]}),
    );
    assert_eq!(code(&reply), "PERMISSION_DENIED");

    // Refusals are audited.
    let audit = data(h.call_as(
        &admin,
        "audit",
        "list",
        json!({"action": "permission.denied"}),
    ));
    assert!(audit["count"].as_u64().unwrap() >= 17, "{audit}");
}

#[test]
fn malformed_requests_get_codes_not_crashes() {
    let h = Harness::start();
    let client = h.client();
    let raw =
        |category: &str, operation: &str, body: &[u8]| call_raw(&client, category, operation, body);

    let reply = raw("auth", "login", b"{not json");
    assert_eq!(code(&reply), "INVALID_REQUEST");
    assert!(message(&reply).contains("not valid JSON"), "{reply}");
    assert_eq!(code(&raw("auth", "login", b"[1, 2]")), "INVALID_REQUEST");
    assert_eq!(
        code(&raw("auth", "login", b"\"a string\"")),
        "INVALID_REQUEST"
    );
    assert_eq!(
        code(&raw("auth", "login", &[0xff, 0xfe, 0x00])),
        "INVALID_REQUEST"
    );
    assert_eq!(
        code(&raw("auth", "login", &vec![b' '; 70 * 1024])),
        "INVALID_REQUEST"
    );
    let reply = raw("auth", "login", b"{}");
    assert!(message(&reply).contains("`identifier`"), "{reply}");
    let reply = raw(
        "auth",
        "login",
        br#"{"identifier": "admin", "password": 12}"#,
    );
    assert!(message(&reply).contains("`password`"), "{reply}");
    let reply = raw("auth", "refresh", br#"{"refresh_token": ["x"]}"#);
    assert!(message(&reply).contains("`refresh_token`"), "{reply}");
    let reply = raw("auth", "token", br#"{"api_key": null}"#);
    assert!(message(&reply).contains("`api_key`"), "{reply}");
    let reply = raw("auth", "validate", br#"{"token": {}}"#);
    assert!(message(&reply).contains("`token`"), "{reply}");
    let reply = raw(
        "auth",
        "login",
        br#"{"identifier": "a", "password": "b", "ip_address": 5}"#,
    );
    assert!(message(&reply).contains("`ip_address`"), "{reply}");
    // An empty body is an empty object.
    assert_eq!(code(&raw("auth", "validate", b"")), "INVALID_REQUEST");

    // UNKNOWN_OPERATION for an unknown category or operation, or missing frames.
    for (category, operation) in [
        ("auth", "signup"),
        ("users", "list"),
        ("user", ""),
        ("", ""),
    ] {
        let reply = raw(category, operation, b"{}");
        assert_eq!(code(&reply), "UNKNOWN_OPERATION", "{category}/{operation}");
    }
    let reply = client.request(SERVICE, vec![b"auth".to_vec()]).unwrap();
    let reply: Value = serde_json::from_slice(&reply[0]).unwrap();
    assert_eq!(code(&reply), "UNKNOWN_OPERATION");
    let reply = client.request(SERVICE, vec![]).unwrap();
    let reply: Value = serde_json::from_slice(&reply[0]).unwrap();
    assert_eq!(code(&reply), "UNKNOWN_OPERATION");

    // Still serving after all that.
    let health = data(raw("health", "check", b"{}"));
    assert_eq!(health["status"], "UP", "{health}");
}

#[test]
fn health_check_metrics_and_audit_list() {
    let h = Harness::start();
    let admin = h.admin_token();
    let health = data(h.call("health", "check", json!({})));
    assert_eq!(health["status"], "UP");
    let names: Vec<&str> = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["broker_connection", "database"]);
    assert!(health["operations"].as_array().unwrap().len() >= 37);

    let response = reqwest::blocking::get(format!("{}/healthz", h.health_url())).unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let metrics = h.metrics();
    for line in [
        r#"plantd_identity_requests_total{operation="auth/login",outcome="ok"} 1"#,
        r#"plantd_identity_logins_total{outcome="ok"} 1"#,
        "plantd_identity_request_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    assert!(!metrics.contains(&h.admin_password()));
    assert!(!metrics.contains(&admin));

    // audit/list: time range, actor, action (prefix with *), limit; bootstrap and login are there.
    let all = data(h.call_as(&admin, "audit", "list", json!({"since": 0})));
    let actions: Vec<&str> = all["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"bootstrap") && actions.contains(&"login.ok"),
        "{actions:?}"
    );
    let record = &all["records"][0];
    for field in ["time", "actor", "action", "target", "outcome", "source"] {
        assert!(record.get(field).is_some(), "{field} in {record}");
    }
    let logins = data(h.call_as(
        &admin,
        "audit",
        "list",
        json!({"since": 0, "action": "login.*"}),
    ));
    assert!(logins["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["action"].as_str().unwrap().starts_with("login.")));
    let by_actor = data(h.call_as(
        &admin,
        "audit",
        "list",
        json!({"since": 0, "actor": "system"}),
    ));
    assert_eq!(by_actor["records"][0]["action"], "bootstrap");
    let one = data(h.call_as(&admin, "audit", "list", json!({"since": 0, "limit": 1})));
    assert_eq!(one["count"], 1);
    let none = data(h.call_as(
        &admin,
        "audit",
        "list",
        json!({"since": "2000-01-01T00:00:00Z", "until": "2000-01-02T00:00:00Z"}),
    ));
    assert_eq!(none["count"], 0);
    for body in [
        json!({"since": "yesterday"}),
        json!({"limit": 0}),
        json!({"since": 10, "until": 5}),
    ] {
        assert_eq!(
            code(&h.call_as(&admin, "audit", "list", body.clone())),
            "INVALID_REQUEST",
            "{body}"
        );
    }
}

#[test]
fn a_database_that_cannot_be_written_answers_storage_error_and_turns_healthz_down() {
    let h = Harness::start();
    let admin = h.admin_token();
    // Another connection holds the write lock longer than the writer's 5 s busy timeout.
    let blocker = rusqlite::Connection::open(h.db_path()).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let reply = h.call_as(&admin, "organization", "create", json!({"name": "blocked"}));
    assert_eq!(code(&reply), "STORAGE_ERROR", "{reply}");
    let status = reqwest::blocking::get(format!("{}/healthz", h.health_url()))
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 503);
    blocker.execute_batch("ROLLBACK").unwrap();
    data(h.call_as(
        &admin,
        "organization",
        "create",
        json!({"name": "unblocked"}),
    ));
    let status = reqwest::blocking::get(format!("{}/healthz", h.health_url()))
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
}
