//! Permission names and the permissions identity's own operations need.
//!
//! A name is `<service>:<resource>:<action>` (`state:data:read`, `identity:user:create`), a shorter
//! `<service>:<action>` (`logger:read`), a scoped form (`state:scope:<scope>:write`), a wildcard
//! ending in `:*` (`state:*`, `state:data:*`), or `system:admin`. Matching is the SDK's one rule
//! ([`plantd_worker_sdk::auth::grants`]); this module only says which names are well formed.

use plantd_worker_sdk::auth::grants;

/// The longest permission name accepted.
pub const MAX_LEN: usize = 255;
/// The most permissions one role or API key may list.
pub const MAX_COUNT: usize = 256;

/// `identity:user:create`: `user/create`.
pub const USER_CREATE: &str = "identity:user:create";
/// `identity:user:read`: `user/get`, `user/list` (anyone may read themselves).
pub const USER_READ: &str = "identity:user:read";
/// `identity:user:update`: `user/update`, `activate`, `deactivate`, `verify_email`.
pub const USER_UPDATE: &str = "identity:user:update";
/// `identity:user:delete`: `user/delete`.
pub const USER_DELETE: &str = "identity:user:delete";
/// `identity:role:create`: `role/create`.
pub const ROLE_CREATE: &str = "identity:role:create";
/// `identity:role:read`: `role/get`, `role/list`, `role/check_permission` for others.
pub const ROLE_READ: &str = "identity:role:read";
/// `identity:role:update`: `role/update`.
pub const ROLE_UPDATE: &str = "identity:role:update";
/// `identity:role:delete`: `role/delete`.
pub const ROLE_DELETE: &str = "identity:role:delete";
/// `identity:role:assign`: `user/assign_role`, `user/unassign_role`.
pub const ROLE_ASSIGN: &str = "identity:role:assign";
/// `identity:organization:create`: `organization/create`.
pub const ORG_CREATE: &str = "identity:organization:create";
/// `identity:organization:read`: `organization/get`, `list`, `members`.
pub const ORG_READ: &str = "identity:organization:read";
/// `identity:organization:update`: `organization/update`, `user/assign_organization`,
/// `user/unassign_organization`.
pub const ORG_UPDATE: &str = "identity:organization:update";
/// `identity:organization:delete`: `organization/delete`.
pub const ORG_DELETE: &str = "identity:organization:delete";
/// `identity:api_key:create`: `api_key/create`.
pub const API_KEY_CREATE: &str = "identity:api_key:create";
/// `identity:api_key:read`: `api_key/list`.
pub const API_KEY_READ: &str = "identity:api_key:read";
/// `identity:api_key:revoke`: `api_key/revoke`.
pub const API_KEY_REVOKE: &str = "identity:api_key:revoke";
/// `identity:audit:read`: `audit/list`.
pub const AUDIT_READ: &str = "identity:audit:read";
/// `system:admin`: everything, including `auth/rotate_key`.
pub const SYSTEM_ADMIN: &str = plantd_worker_sdk::auth::SYSTEM_ADMIN;

/// Why a permission name is refused (the message names the name).
pub fn validate(name: &str) -> Result<(), String> {
    if name == SYSTEM_ADMIN {
        return Ok(());
    }
    let bad = |why: &str| Err(format!("permission `{}` is invalid: {why}", shown(name)));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_LEN {
        return bad("it is too long");
    }
    let segments: Vec<&str> = name.split(':').collect();
    if segments.len() < 2 {
        return bad("the form is <service>:<resource>:<action>");
    }
    let service = segments[0];
    if !service.starts_with(|c: char| c.is_ascii_lowercase())
        || !service
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return bad("the service must be lowercase letters, digits, `_` or `-`");
    }
    if service == "system" {
        return bad("the only `system` permission is `system:admin`");
    }
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate().skip(1) {
        if segment.is_empty() {
            return bad("it has an empty part");
        }
        if segment.contains('*') && !(i == last && *segment == "*") {
            return bad("`*` may only stand alone as the last part");
        }
        if segment.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("it contains whitespace or control characters");
        }
    }
    Ok(())
}

/// Validates a whole list: not too long, every name well formed. Returns it sorted, deduplicated.
pub fn validate_list(names: Vec<String>) -> Result<Vec<String>, String> {
    if names.len() > MAX_COUNT {
        return Err(format!("at most {MAX_COUNT} permissions may be listed"));
    }
    for name in &names {
        validate(name)?;
    }
    let mut names = names;
    names.sort();
    names.dedup();
    Ok(names)
}

/// The first of `wanted` that `held` does not grant (a caller can grant only what it holds).
pub fn first_not_held<'a>(held: &[String], wanted: &'a [String]) -> Option<&'a str> {
    wanted.iter().map(String::as_str).find(|w| !grants(held, w))
}

/// `name` cut short for messages (hostile input must not bloat replies).
fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_names_pass_and_others_say_why() {
        for ok in [
            "system:admin",
            "state:data:read",
            "state:scope:org.plantd.Test:write",
            "logger:read",
            "state:*",
            "state:data:*",
            "identity:user:create",
            "bus:publish",
        ] {
            validate(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "*",
            "state",
            "State:data:read",
            "state::read",
            "state:*:read",
            "state:da*",
            "system:root",
            "state:data read",
            ":data:read",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn only_held_permissions_can_be_granted() {
        let held = vec!["state:*".to_owned(), "logger:read".to_owned()];
        let ok = vec!["state:data:read".to_owned(), "state:scope:a:*".to_owned()];
        assert_eq!(first_not_held(&held, &ok), None);
        let too_much = vec!["logger:read".to_owned(), "identity:user:create".to_owned()];
        assert_eq!(
            first_not_held(&held, &too_much),
            Some("identity:user:create")
        );
        let admin = vec![SYSTEM_ADMIN.to_owned()];
        assert_eq!(first_not_held(&admin, &too_much), None);
        assert_eq!(
            first_not_held(&held, &[SYSTEM_ADMIN.to_owned()]),
            Some(SYSTEM_ADMIN)
        );
    }
}
