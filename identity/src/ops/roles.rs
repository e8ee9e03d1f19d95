//! `role/*`: create, get, update, delete, list, check_permission. A role's permissions are
//! validated names in a JSON array. Nobody manages a role whose permissions they do not hold:
//! creating, editing and deleting a role all require holding every permission in it.

use serde_json::{json, Value};

use super::caller::Caller;
use super::{Identity, Request};
use crate::codes::OpError;
use crate::permissions::{self, ROLE_CREATE, ROLE_DELETE, ROLE_READ, ROLE_UPDATE};
use crate::store::roles::{self, RoleFields};
use crate::store::{notices, now_secs};

/// Longest role name.
const MAX_NAME: usize = 100;
/// Longest description.
const MAX_DESCRIPTION: usize = 500;

pub(super) fn run(id: &Identity, operation: &str, req: &Request) -> Result<Value, OpError> {
    let caller = id.caller(req)?;
    match operation {
        "create" => create(id, req, &caller),
        "get" => get(id, req, &caller),
        "update" => update(id, req, &caller),
        "delete" => delete(id, req, &caller),
        "list" => list(id, req, &caller),
        _ => check_permission(id, req, &caller),
    }
}

fn check_name(name: &str) -> Result<(), OpError> {
    if name.chars().any(|c| c.is_control()) || name.trim() != name {
        return Err(OpError::invalid(
            "field `name` must not have control characters or surrounding spaces",
        ));
    }
    Ok(())
}

fn scope_field(req: &Request) -> Result<Option<String>, OpError> {
    match req.body.opt_str("scope", 16)?.as_deref() {
        None => Ok(None),
        Some(scope @ ("global" | "organization")) => Ok(Some(scope.to_owned())),
        Some(_) => Err(OpError::invalid(
            "field `scope` must be global or organization",
        )),
    }
}

fn permissions_field(req: &Request) -> Result<Option<Vec<String>>, OpError> {
    match req.body.opt_strings("permissions")? {
        None => Ok(None),
        Some(list) => permissions::validate_list(list)
            .map(Some)
            .map_err(|e| OpError::invalid(format!("field `permissions`: {e}"))),
    }
}

fn create(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, ROLE_CREATE, None)?;
    let name = req.body.str("name", MAX_NAME)?;
    check_name(&name)?;
    let permissions =
        permissions_field(req)?.ok_or_else(|| OpError::invalid("missing field `permissions`"))?;
    id.require_grantable(req, caller, &permissions, None)?;
    let fields = RoleFields {
        name: Some(name),
        description: req.body.opt_str("description", MAX_DESCRIPTION)?,
        permissions: Some(permissions),
        scope: Some(scope_field(req)?.unwrap_or_else(|| "global".into())),
    };
    let row = id.record(req, caller.actor(), "role.create", "", "ok");
    let role = id.write_audited(row, move |conn, row| {
        let role = roles::insert(conn, &fields, now_secs())?;
        row.target = format!("role:{}", role.id);
        Ok(role)
    })?;
    Ok(json!({ "role": role }))
}

/// The role named by `role_id` or `name`.
fn find(id: &Identity, req: &Request) -> Result<roles::Role, OpError> {
    if let Some(role_id) = req.body.opt_id("role_id")? {
        return Ok(id.store.read(|conn| roles::get(conn, role_id))?);
    }
    if let Some(name) = req.body.opt_str("name", MAX_NAME)? {
        return Ok(id.store.read(|conn| roles::find_by_name(conn, &name))?);
    }
    Err(OpError::invalid("missing field `role_id` (or `name`)"))
}

fn get(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, ROLE_READ, None)?;
    let role = find(id, req)?;
    let holders = id.store.read(|conn| roles::holders(conn, role.id))?;
    Ok(json!({"role": role, "users": holders}))
}

fn update(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, ROLE_UPDATE, None)?;
    let role_id = req.body.id("role_id")?;
    let name = req.body.opt_str("name", MAX_NAME)?;
    if let Some(name) = &name {
        if name.is_empty() {
            return Err(OpError::invalid("field `name` must not be empty"));
        }
        check_name(name)?;
    }
    let permissions = permissions_field(req)?;
    let scope = scope_field(req)?;
    let current = id.store.read(|conn| roles::get(conn, role_id))?;
    id.require_grantable(req, caller, &current.permissions, None)?;
    if let Some(permissions) = &permissions {
        id.require_grantable(req, caller, permissions, None)?;
    }
    let holders = id.store.read(|conn| roles::holders(conn, role_id))?;
    if scope.as_ref().is_some_and(|s| *s != current.scope) && !holders.is_empty() {
        return Err(OpError::conflict(
            "the role is assigned: unassign it before changing its scope",
        ));
    }
    let grants_change = permissions.is_some();
    let fields = RoleFields {
        name,
        description: req.body.opt_str("description", MAX_DESCRIPTION)?,
        permissions,
        scope,
    };
    let row = id.record(
        req,
        caller.actor(),
        "role.update",
        format!("role:{role_id}"),
        "ok",
    );
    let (role, changed) = id.write_audited(row, move |conn, _| {
        let role = roles::update(conn, role_id, &fields, now_secs())?;
        let changed = if grants_change {
            roles::holders(conn, role_id)?
        } else {
            Vec::new()
        };
        notices::changed(conn, &changed)?;
        Ok((role, changed))
    })?;
    id.events.changed(changed);
    Ok(json!({ "role": role }))
}

fn delete(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, ROLE_DELETE, None)?;
    let role_id = req.body.id("role_id")?;
    let current = id.store.read(|conn| roles::get(conn, role_id))?;
    id.require_grantable(req, caller, &current.permissions, None)?;
    let row = id.record(
        req,
        caller.actor(),
        "role.delete",
        format!("role:{role_id}"),
        "ok",
    );
    let holders = id.write_audited(row, move |conn, _| {
        let holders = roles::holders(conn, role_id)?;
        roles::delete(conn, role_id)?;
        notices::changed(conn, &holders)?;
        Ok(holders)
    })?;
    id.events.changed(holders);
    Ok(json!({"deleted": true, "role_id": role_id}))
}

fn list(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, ROLE_READ, None)?;
    let (offset, limit) = req.body.page(50, 100)?;
    let scope = scope_field(req)?;
    let (list, total) = id
        .store
        .read(|conn| roles::list(conn, scope.as_deref(), offset, limit))?;
    Ok(json!({"roles": list, "total": total, "offset": offset, "limit": limit}))
}

/// `check_permission {user_id, permission, org_id?}`: whether the user holds it now. Anyone may
/// ask about themselves.
fn check_permission(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    let user_id = req.body.id("user_id")?;
    let permission = req.body.str("permission", permissions::MAX_LEN)?;
    permissions::validate(&permission)
        .map_err(|e| OpError::invalid(format!("field `permission`: {e}")))?;
    let org_id = req.body.opt_id("org_id")?;
    if user_id != caller.user_id {
        id.require(req, caller, ROLE_READ, None)?;
    }
    let held = id.store.read(|conn| {
        crate::store::users::get(conn, user_id)?;
        roles::grants(conn, user_id)
    })?;
    let granted = held.holds(&permission, org_id);
    Ok(json!({
        "user_id": user_id,
        "permission": permission,
        "org_id": org_id,
        "granted": granted,
    }))
}
