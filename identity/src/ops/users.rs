//! `user/*`: create, get, update, delete, list, activate, deactivate, verify_email, role
//! assignments (global or within one organization) and organization memberships.
//!
//! Deactivating or deleting a user ends their sessions at once (published as revoked); role and
//! membership changes are published as changed, so verifiers re-read that user's grants.

use serde_json::{json, Value};

use super::auth::end_sessions;
use super::caller::Caller;
use super::{Identity, Request};
use crate::codes::{ErrorCode, OpError};
use crate::password;
use crate::permissions::{
    ORG_UPDATE, ROLE_ASSIGN, USER_CREATE, USER_DELETE, USER_READ, USER_UPDATE,
};
use crate::store::users::{NewUser, UserFilter, UserKey, UserUpdate};
use crate::store::{notices, now_secs, orgs, roles, sessions, users, StoreError};

/// Longest username.
const MAX_USERNAME: usize = 50;
/// Longest email.
const MAX_EMAIL: usize = 255;
/// Longest first or last name.
const MAX_NAME: usize = 100;
/// Longest password read (the policy's own cap applies).
const MAX_PASSWORD: usize = 1024;

pub(super) fn run(id: &Identity, operation: &str, req: &Request) -> Result<Value, OpError> {
    let caller = id.caller(req)?;
    match operation {
        "create" => create(id, req, &caller),
        "get" => get(id, req, &caller),
        "update" => update(id, req, &caller),
        "delete" => delete(id, req, &caller),
        "list" => list(id, req, &caller),
        "activate" => set_active(id, req, &caller, true),
        "deactivate" => set_active(id, req, &caller, false),
        "verify_email" => verify_email(id, req, &caller),
        "assign_role" => assign_role(id, req, &caller, true),
        "unassign_role" => assign_role(id, req, &caller, false),
        "assign_organization" => membership(id, req, &caller, true),
        _ => membership(id, req, &caller, false),
    }
}

/// A valid username: 3 to 50 of letters, digits, `.`, `_`, `-` (no `@`, so a login identifier
/// is unambiguous).
pub fn check_username(name: &str) -> Result<(), OpError> {
    let len = name.chars().count();
    if !(3..=MAX_USERNAME).contains(&len)
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(OpError::invalid(
            "field `username` must be 3 to 50 letters, digits, `.`, `_` or `-`",
        ));
    }
    Ok(())
}

/// A plausible email: one `@` between a non-empty local part and a domain, no whitespace.
pub fn check_email(email: &str) -> Result<(), OpError> {
    let ok = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(OpError::invalid("field `email` must be an email address"))
    }
}

fn create(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, USER_CREATE, None)?;
    let username = req.body.str("username", MAX_USERNAME)?;
    check_username(&username)?;
    let email = req.body.str("email", MAX_EMAIL)?;
    check_email(&email)?;
    let password = req.body.str("password", MAX_PASSWORD)?;
    let first_name = req
        .body
        .opt_str("first_name", MAX_NAME)?
        .unwrap_or_default();
    let last_name = req.body.opt_str("last_name", MAX_NAME)?.unwrap_or_default();
    let is_active = req.body.opt_bool("is_active")?.unwrap_or(true);
    password::check(&id.settings.password, &password, &[&username, &email])
        .map_err(|e| OpError::new(ErrorCode::WeakPassword, e.to_string()))?;
    let password_hash = id
        .hasher
        .hash(&password)
        .map_err(|e| OpError::new(ErrorCode::StorageError, e.to_string()))?;
    let new = NewUser {
        username,
        email: email.to_lowercase(),
        password_hash,
        first_name,
        last_name,
        is_active,
    };
    let row = id.record(req, caller.actor(), "user.create", "", "ok");
    let user = id.write_audited(row, move |conn, row| {
        let user = users::insert(conn, &new, now_secs())?;
        row.target = format!("user:{}", user.id);
        Ok(user)
    })?;
    Ok(json!({ "user": user }))
}

/// The user named by `user_id`, `email` or `username`.
fn user_key(req: &Request) -> Result<UserKey, OpError> {
    if let Some(user_id) = req.body.opt_id("user_id")? {
        return Ok(UserKey::Id(user_id));
    }
    if let Some(email) = req.body.opt_str("email", MAX_EMAIL)? {
        return Ok(UserKey::Email(email));
    }
    if let Some(username) = req.body.opt_str("username", MAX_USERNAME)? {
        return Ok(UserKey::Username(username));
    }
    Err(OpError::invalid(
        "missing field `user_id` (or `email`, or `username`)",
    ))
}

/// A user with their role assignments and memberships.
fn detailed(id: &Identity, user_id: i64) -> Result<Value, OpError> {
    let (user, assignments, organizations) = id.store.read(|conn| {
        Ok((
            users::get(conn, user_id)?,
            roles::assignments(conn, user_id)?,
            orgs::of_user(conn, user_id)?,
        ))
    })?;
    let roles: Vec<Value> = assignments
        .into_iter()
        .map(|(role, org)| {
            json!({"role_id": role.id, "name": role.name, "org_id": (org != 0).then_some(org)})
        })
        .collect();
    Ok(json!({"user": user, "roles": roles, "organizations": organizations}))
}

fn get(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    let key = user_key(req)?;
    let user = id.store.read(|conn| users::find(conn, &key));
    // Anyone may read themselves; others need the permission, asked before "not found" so
    // the answer does not reveal who exists.
    let is_self = matches!(&user, Ok(u) if u.id == caller.user_id);
    if !is_self {
        id.require(req, caller, USER_READ, None)?;
    }
    detailed(id, user?.id)
}

fn update(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, USER_UPDATE, None)?;
    let user_id = req.body.id("user_id")?;
    let username = req.body.opt_str("username", MAX_USERNAME)?;
    if let Some(name) = &username {
        check_username(name)?;
    }
    let email = req.body.opt_str("email", MAX_EMAIL)?;
    if let Some(email) = &email {
        check_email(email)?;
    }
    let is_active = req.body.opt_bool("is_active")?;
    let change = UserUpdate {
        username,
        email: email.map(|e| e.to_lowercase()),
        first_name: req.body.opt_str("first_name", MAX_NAME)?,
        last_name: req.body.opt_str("last_name", MAX_NAME)?,
        is_active,
    };
    let action = if is_active == Some(false) {
        "user.deactivate"
    } else {
        "user.update"
    };
    apply(id, req, caller, user_id, change, action)
}

/// Applies `change` to `user_id` (audited as `action`); a user left inactive loses every session.
fn apply(
    id: &Identity,
    req: &Request,
    caller: &Caller,
    user_id: i64,
    change: UserUpdate,
    action: &str,
) -> Result<Value, OpError> {
    if change.is_active == Some(false) && user_id == caller.user_id {
        return Err(OpError::invalid("you cannot deactivate yourself"));
    }
    let row = id.record(req, caller.actor(), action, format!("user:{user_id}"), "ok");
    let (user, ended) = id.write_audited(row, move |conn, _| {
        let now = now_secs();
        let user = users::update(conn, user_id, &change, now)?;
        let ended = if user.is_active {
            Vec::new()
        } else {
            sessions::revoke_where(conn, Some(user_id), None, None, "deactivated", now)?
        };
        notices::revoked(conn, &ended, user_id, "deactivated")?;
        Ok((user, ended))
    })?;
    end_sessions(id, ended, user_id, "deactivated");
    Ok(json!({ "user": user }))
}

fn delete(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, USER_DELETE, None)?;
    let user_id = req.body.id("user_id")?;
    if user_id == caller.user_id {
        return Err(OpError::invalid("you cannot delete yourself"));
    }
    let row = id.record(
        req,
        caller.actor(),
        "user.delete",
        format!("user:{user_id}"),
        "ok",
    );
    let ended = id.write_audited(row, move |conn, _| {
        users::get(conn, user_id)?;
        let ended = sessions::revoke_where(conn, Some(user_id), None, None, "deleted", now_secs())?;
        notices::revoked(conn, &ended, user_id, "deleted")?;
        users::delete(conn, user_id)?;
        Ok(ended)
    })?;
    end_sessions(id, ended, user_id, "deleted");
    Ok(json!({"deleted": true, "user_id": user_id}))
}

fn list(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, USER_READ, None)?;
    let (offset, limit) = req.body.page(50, 100)?;
    let sort_by = match req.body.opt_str("sort_by", 32)?.as_deref() {
        None | Some("id") => "id",
        Some("username") => "username",
        Some("email") => "email",
        Some("created_at") => "created_at",
        Some("last_login_at") => "last_login_at",
        Some(_) => {
            return Err(OpError::invalid(
                "field `sort_by` must be id, username, email, created_at or last_login_at",
            ))
        }
    };
    let descending = match req.body.opt_str("sort_order", 8)?.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(OpError::invalid("field `sort_order` must be asc or desc")),
    };
    let filter = UserFilter {
        offset,
        limit,
        include_inactive: req.body.opt_bool("include_inactive")?.unwrap_or(true),
        include_unverified: req.body.opt_bool("include_unverified")?.unwrap_or(true),
        search: req.body.opt_str("search", 100)?.filter(|s| !s.is_empty()),
        org_id: req.body.opt_id("org_id")?,
        role_id: req.body.opt_id("role_id")?,
        sort_by,
        descending,
    };
    let (list, total) = id.store.read(|conn| users::list(conn, &filter))?;
    Ok(json!({"users": list, "total": total, "offset": offset, "limit": limit}))
}

fn set_active(
    id: &Identity,
    req: &Request,
    caller: &Caller,
    active: bool,
) -> Result<Value, OpError> {
    id.require(req, caller, USER_UPDATE, None)?;
    let user_id = req.body.id("user_id")?;
    let change = UserUpdate {
        is_active: Some(active),
        ..UserUpdate::default()
    };
    let action = if active {
        "user.activate"
    } else {
        "user.deactivate"
    };
    apply(id, req, caller, user_id, change, action)
}

fn verify_email(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, USER_UPDATE, None)?;
    let user_id = req.body.id("user_id")?;
    let row = id.record(
        req,
        caller.actor(),
        "user.verify_email",
        format!("user:{user_id}"),
        "ok",
    );
    let user = id.write_audited(row, move |conn, _| {
        let user = users::verify_email(conn, user_id, now_secs())?;
        Ok(user)
    })?;
    Ok(json!({ "user": user }))
}

/// `assign_role` / `unassign_role {user_id, role_id, org_id?}`. A global role is assigned
/// without `org_id`; an organization role within one organization the user belongs to. The
/// caller must hold every permission of the role (there: globally or within that organization).
fn assign_role(
    id: &Identity,
    req: &Request,
    caller: &Caller,
    assign: bool,
) -> Result<Value, OpError> {
    let user_id = req.body.id("user_id")?;
    let role_id = req.body.id("role_id")?;
    let org_id = req.body.opt_id("org_id")?;
    id.require(req, caller, ROLE_ASSIGN, org_id)?;
    let role = id.store.read(|conn| roles::get(conn, role_id))?;
    id.require_grantable(req, caller, &role.permissions, org_id)?;
    match (role.scope.as_str(), org_id) {
        ("global", Some(_)) => {
            return Err(OpError::invalid(
                "role is global: assign it without `org_id`",
            ))
        }
        ("organization", None) => {
            return Err(OpError::invalid(
                "role is an organization role: field `org_id` is required",
            ))
        }
        _ => {}
    }
    let action = if assign {
        "role.assign"
    } else {
        "role.unassign"
    };
    let target = match org_id {
        Some(org) => format!("user:{user_id} role:{role_id} org:{org}"),
        None => format!("user:{user_id} role:{role_id}"),
    };
    let row = id.record(req, caller.actor(), action, target, "ok");
    id.write_audited(row, move |conn, _| {
        users::get(conn, user_id)?;
        let org = org_id.unwrap_or(0);
        if assign {
            if let Some(org_id) = org_id {
                orgs::get(conn, org_id)?;
                if !orgs::is_member(conn, org_id, user_id)? {
                    return Err(StoreError::Conflict(
                        "the user is not a member of the organization".into(),
                    ));
                }
            }
            roles::assign(conn, user_id, role_id, org, now_secs())?;
        } else {
            roles::unassign(conn, user_id, role_id, org)?;
        }
        notices::changed(conn, &[user_id])
    })?;
    id.events.changed(vec![user_id]);
    Ok(json!({
        "user_id": user_id,
        "role_id": role_id,
        "org_id": org_id,
        "assigned": assign,
    }))
}

/// `assign_organization` / `unassign_organization {user_id, org_id}`.
fn membership(id: &Identity, req: &Request, caller: &Caller, add: bool) -> Result<Value, OpError> {
    let user_id = req.body.id("user_id")?;
    let org_id = req.body.id("org_id")?;
    id.require(req, caller, ORG_UPDATE, Some(org_id))?;
    let action = if add {
        "org.member.add"
    } else {
        "org.member.remove"
    };
    let row = id.record(
        req,
        caller.actor(),
        action,
        format!("user:{user_id} org:{org_id}"),
        "ok",
    );
    id.write_audited(row, move |conn, _| {
        users::get(conn, user_id)?;
        orgs::get(conn, org_id)?;
        if add {
            orgs::add_member(conn, org_id, user_id, now_secs())?;
        } else {
            orgs::remove_member(conn, org_id, user_id)?;
        }
        notices::changed(conn, &[user_id])
    })?;
    id.events.changed(vec![user_id]);
    Ok(json!({"user_id": user_id, "org_id": org_id, "member": add}))
}
