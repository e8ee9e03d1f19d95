//! The `roles` table and role assignments (`user_roles`, each global or within one organization),
//! and the effective grants of a user computed from them.

use std::collections::{BTreeMap, BTreeSet};

use plantd_worker_sdk::auth;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::users::rfc3339;
use super::{is_unique_violation, StoreError};

/// A role: a named set of permissions. Its permission list is a JSON array on the wire and in the
/// database, never a string holding JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Role {
    /// Row id.
    pub id: i64,
    /// Unique, case-insensitive.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Validated permission names.
    pub permissions: Vec<String>,
    /// `global` (assigned without an organization) or `organization` (assigned within one).
    pub scope: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A role to create, or the new values of one (`None` leaves a field alone).
#[derive(Clone, Debug, Default)]
pub struct RoleFields {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Permissions.
    pub permissions: Option<Vec<String>>,
    /// `global` or `organization`.
    pub scope: Option<String>,
}

/// What a user holds right now, from their role assignments and memberships.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Grants {
    /// Names of every role assigned (globally or in an organization), sorted.
    pub roles: Vec<String>,
    /// Permissions of the global assignments, sorted.
    pub permissions: Vec<String>,
    /// Permissions of the assignments within each organization (decimal id keys).
    pub org_permissions: BTreeMap<String, Vec<String>>,
    /// Organizations the user is a member of.
    pub organizations: Vec<i64>,
}

impl Grants {
    /// True if `permission` is granted globally, or within organization `org`.
    pub fn holds(&self, permission: &str, org: Option<i64>) -> bool {
        auth::grants(&self.permissions, permission)
            || org.is_some_and(|org| {
                self.org_permissions
                    .get(&org.to_string())
                    .is_some_and(|held| auth::grants(held, permission))
            })
    }
}

const COLUMNS: &str = "id, name, description, permissions, scope, created_at, updated_at";

fn role_of(row: &Row<'_>) -> rusqlite::Result<Role> {
    let permissions: String = row.get(3)?;
    Ok(Role {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        // Written by us from a Vec<String>; a damaged row reads as no permissions.
        permissions: serde_json::from_str(&permissions).unwrap_or_default(),
        scope: row.get(4)?,
        created_at: rfc3339(row.get(5)?),
        updated_at: rfc3339(row.get(6)?),
    })
}

fn taken(e: rusqlite::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict("a role with this name exists".into())
    } else {
        StoreError::Sqlite(e)
    }
}

fn json_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

/// Creates a role; `fields.name`, `permissions` and `scope` must be set.
pub fn insert(conn: &Connection, fields: &RoleFields, now: i64) -> Result<Role, StoreError> {
    conn.prepare_cached(
        "INSERT INTO roles (name, description, permissions, scope, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?
    .execute(params![
        fields.name.as_deref().unwrap_or_default(),
        fields.description.as_deref().unwrap_or_default(),
        json_list(fields.permissions.as_deref().unwrap_or_default()),
        fields.scope.as_deref().unwrap_or("global"),
        now
    ])
    .map_err(taken)?;
    get(conn, conn.last_insert_rowid())
}

/// The role with `id`.
pub fn get(conn: &Connection, id: i64) -> Result<Role, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM roles WHERE id = ?1"))?
        .query_row([id], role_of)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no role with id {id}")))
}

/// The role called `name` (any case).
pub fn find_by_name(conn: &Connection, name: &str) -> Result<Role, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM roles WHERE name = ?1"))?
        .query_row([name], role_of)
        .optional()?
        .ok_or_else(|| StoreError::NotFound("no role with this name".into()))
}

/// Applies `fields` to role `id`.
pub fn update(
    conn: &Connection,
    id: i64,
    fields: &RoleFields,
    now: i64,
) -> Result<Role, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE roles SET name = coalesce(?2, name), description = coalesce(?3, description),
                permissions = coalesce(?4, permissions), scope = coalesce(?5, scope),
                updated_at = ?6
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            fields.name,
            fields.description,
            fields.permissions.as_deref().map(json_list),
            fields.scope,
            now
        ])
        .map_err(taken)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("no role with id {id}")));
    }
    get(conn, id)
}

/// Deletes role `id` and its assignments.
pub fn delete(conn: &Connection, id: i64) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM roles WHERE id = ?1")?
        .execute([id])?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("no role with id {id}")));
    }
    Ok(())
}

/// One page of roles (optionally of one scope), and how many there are in all.
pub fn list(
    conn: &Connection,
    scope: Option<&str>,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Role>, i64), StoreError> {
    let total: i64 = conn
        .prepare_cached("SELECT count(*) FROM roles WHERE ?1 IS NULL OR scope = ?1")?
        .query_row([scope], |row| row.get(0))?;
    let roles = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM roles WHERE ?1 IS NULL OR scope = ?1
             ORDER BY id LIMIT ?2 OFFSET ?3"
        ))?
        .query_map(params![scope, limit, offset], role_of)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((roles, total))
}

/// Users holding role `id` (in any organization).
pub fn holders(conn: &Connection, id: i64) -> Result<Vec<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT DISTINCT user_id FROM user_roles WHERE role_id = ?1")?
        .query_map([id], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?)
}

/// Assigns role `role_id` to `user_id`, globally (`org_id` 0) or within organization `org_id`.
pub fn assign(
    conn: &Connection,
    user_id: i64,
    role_id: i64,
    org_id: i64,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO user_roles (user_id, role_id, org_id, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![user_id, role_id, org_id, now])
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict("the user already has this role there".into())
        } else {
            StoreError::Sqlite(e)
        }
    })?;
    Ok(())
}

/// Removes one assignment.
pub fn unassign(
    conn: &Connection,
    user_id: i64,
    role_id: i64,
    org_id: i64,
) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached(
            "DELETE FROM user_roles WHERE user_id = ?1 AND role_id = ?2 AND org_id = ?3",
        )?
        .execute(params![user_id, role_id, org_id])?;
    if n == 0 {
        return Err(StoreError::NotFound(
            "the user does not have this role there".into(),
        ));
    }
    Ok(())
}

/// A user's role assignments: `(role, org_id)` with 0 for global ones.
pub fn assignments(conn: &Connection, user_id: i64) -> Result<Vec<(Role, i64)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT r.id, r.name, r.description, r.permissions, r.scope, r.created_at,
                    r.updated_at, ur.org_id
             FROM user_roles ur JOIN roles r ON r.id = ur.role_id
             WHERE ur.user_id = ?1 ORDER BY r.id, ur.org_id",
        )?
        .query_map([user_id], |row| Ok((role_of(row)?, row.get(7)?)))?
        .collect::<Result<Vec<_>, _>>()?)
}

/// What `user_id` holds now.
pub fn grants(conn: &Connection, user_id: i64) -> Result<Grants, StoreError> {
    let mut roles = BTreeSet::new();
    let mut global = BTreeSet::new();
    let mut per_org: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (role, org) in assignments(conn, user_id)? {
        roles.insert(role.name);
        let target = if org == 0 {
            &mut global
        } else {
            per_org.entry(org).or_default()
        };
        target.extend(role.permissions);
    }
    let organizations = super::orgs::of_user(conn, user_id)?;
    Ok(Grants {
        roles: roles.into_iter().collect(),
        permissions: global.into_iter().collect(),
        org_permissions: per_org
            .into_iter()
            .map(|(org, perms)| (org.to_string(), perms.into_iter().collect()))
            .collect(),
        organizations,
    })
}
