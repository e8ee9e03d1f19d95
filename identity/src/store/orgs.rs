//! The `organizations` table and memberships (`user_organizations`).

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::users::{like_escape, rfc3339};
use super::{is_unique_violation, StoreError};

/// An organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Organization {
    /// Row id.
    pub id: i64,
    /// Display name (need not be unique).
    pub name: String,
    /// Unique URL-safe name, derived from the name unless given.
    pub slug: String,
    /// Free text.
    pub description: String,
    /// Whether the organization is in use.
    pub is_active: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// An organization to create, or the new values of one (`None` leaves a field alone).
#[derive(Clone, Debug, Default)]
pub struct OrgFields {
    /// Name.
    pub name: Option<String>,
    /// Slug.
    pub slug: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Active flag.
    pub is_active: Option<bool>,
}

const COLUMNS: &str = "id, name, slug, description, is_active, created_at, updated_at";

fn org_of(row: &Row<'_>) -> rusqlite::Result<Organization> {
    Ok(Organization {
        id: row.get(0)?,
        name: row.get(1)?,
        slug: row.get(2)?,
        description: row.get(3)?,
        is_active: row.get(4)?,
        created_at: rfc3339(row.get(5)?),
        updated_at: rfc3339(row.get(6)?),
    })
}

fn taken(e: rusqlite::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict("an organization with this slug exists".into())
    } else {
        StoreError::Sqlite(e)
    }
}

/// The slug of a name: lowercase ASCII letters and digits, other runs of characters become one
/// `-`, no `-` at either end (the Go `GenerateSlug`).
pub fn slug_of(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if (c == ' ' || c == '_' || c == '-') && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_owned()
}

/// Creates an organization; `fields.name` and `slug` must be set.
pub fn insert(conn: &Connection, fields: &OrgFields, now: i64) -> Result<Organization, StoreError> {
    conn.prepare_cached(
        "INSERT INTO organizations (name, slug, description, is_active, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?
    .execute(params![
        fields.name.as_deref().unwrap_or_default(),
        fields.slug.as_deref().unwrap_or_default(),
        fields.description.as_deref().unwrap_or_default(),
        fields.is_active.unwrap_or(true),
        now
    ])
    .map_err(taken)?;
    get(conn, conn.last_insert_rowid())
}

/// The organization with `id`.
pub fn get(conn: &Connection, id: i64) -> Result<Organization, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM organizations WHERE id = ?1"
    ))?
    .query_row([id], org_of)
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("no organization with id {id}")))
}

/// The organization with `slug`.
pub fn find_by_slug(conn: &Connection, slug: &str) -> Result<Organization, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM organizations WHERE slug = ?1"
    ))?
    .query_row([slug], org_of)
    .optional()?
    .ok_or_else(|| StoreError::NotFound("no organization with this slug".into()))
}

/// Applies `fields` to organization `id`.
pub fn update(
    conn: &Connection,
    id: i64,
    fields: &OrgFields,
    now: i64,
) -> Result<Organization, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE organizations SET name = coalesce(?2, name), slug = coalesce(?3, slug),
                description = coalesce(?4, description), is_active = coalesce(?5, is_active),
                updated_at = ?6
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            fields.name,
            fields.slug,
            fields.description,
            fields.is_active,
            now
        ])
        .map_err(taken)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!(
            "no organization with id {id}"
        )));
    }
    get(conn, id)
}

/// Deletes organization `id`, its memberships and the role assignments made within it.
pub fn delete(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM user_roles WHERE org_id = ?1")?
        .execute([id])?;
    let n = conn
        .prepare_cached("DELETE FROM organizations WHERE id = ?1")?
        .execute([id])?;
    if n == 0 {
        return Err(StoreError::NotFound(format!(
            "no organization with id {id}"
        )));
    }
    Ok(())
}

/// One page of organizations, and how many match in all.
pub fn list(
    conn: &Connection,
    include_inactive: bool,
    search: Option<&str>,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Organization>, i64), StoreError> {
    let pattern = search.map(|s| format!("%{}%", like_escape(s)));
    let filter = "WHERE (?1 OR is_active = 1)
                  AND (?2 IS NULL OR name LIKE ?2 ESCAPE '\\' OR slug LIKE ?2 ESCAPE '\\')";
    let total: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM organizations {filter}"))?
        .query_row(params![include_inactive, pattern], |row| row.get(0))?;
    let orgs = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM organizations {filter} ORDER BY id LIMIT ?3 OFFSET ?4"
        ))?
        .query_map(params![include_inactive, pattern, limit, offset], org_of)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((orgs, total))
}

/// Makes `user_id` a member of `org_id`.
pub fn add_member(
    conn: &Connection,
    org_id: i64,
    user_id: i64,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO user_organizations (user_id, org_id, created_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![user_id, org_id, now])
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict("the user is already a member".into())
        } else {
            StoreError::Sqlite(e)
        }
    })?;
    Ok(())
}

/// Ends `user_id`'s membership of `org_id`, and the roles they held within it.
pub fn remove_member(conn: &Connection, org_id: i64, user_id: i64) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM user_organizations WHERE user_id = ?1 AND org_id = ?2")?
        .execute(params![user_id, org_id])?;
    if n == 0 {
        return Err(StoreError::NotFound("the user is not a member".into()));
    }
    conn.prepare_cached("DELETE FROM user_roles WHERE user_id = ?1 AND org_id = ?2")?
        .execute(params![user_id, org_id])?;
    Ok(())
}

/// True if `user_id` is a member of `org_id`.
pub fn is_member(conn: &Connection, org_id: i64, user_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM user_organizations WHERE user_id = ?1 AND org_id = ?2")?
        .query_row(params![user_id, org_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Members of `org_id`: user ids in order.
pub fn members(conn: &Connection, org_id: i64) -> Result<Vec<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT user_id FROM user_organizations WHERE org_id = ?1 ORDER BY user_id",
        )?
        .query_map([org_id], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?)
}

/// Organizations `user_id` is a member of, in order.
pub fn of_user(conn: &Connection, user_id: i64) -> Result<Vec<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT org_id FROM user_organizations WHERE user_id = ?1 ORDER BY org_id")?
        .query_map([user_id], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?)
}
