//! API keys: the key itself is shown once at creation and kept only as its SHA-256 hash.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::users::rfc3339;
use super::StoreError;

/// An API key as replies show it: never the key or its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Row id (the `akid` of tokens exchanged for it).
    pub id: i64,
    /// Whose key it is (its creator).
    pub user_id: i64,
    /// A label.
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    /// What tokens exchanged for the key may do (a subset of the creator's).
    pub permissions: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, if it expires.
    pub expires_at: Option<String>,
    /// RFC 3339, once revoked.
    pub revoked_at: Option<String>,
    /// RFC 3339 of the last exchange.
    pub last_used_at: Option<String>,
    /// Unix seconds of `expires_at` (not shown).
    #[serde(skip)]
    pub expires_at_secs: Option<i64>,
    /// Whether revoked (not shown beyond `revoked_at`).
    #[serde(skip)]
    pub revoked: bool,
}

const COLUMNS: &str =
    "id, user_id, name, prefix, permissions, created_at, expires_at, revoked_at, last_used_at";

fn key_of(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let permissions: String = row.get(4)?;
    let expires: Option<i64> = row.get(6)?;
    let revoked: Option<i64> = row.get(7)?;
    Ok(ApiKey {
        id: row.get(0)?,
        user_id: row.get(1)?,
        name: row.get(2)?,
        prefix: row.get(3)?,
        permissions: serde_json::from_str(&permissions).unwrap_or_default(),
        created_at: rfc3339(row.get(5)?),
        expires_at: expires.map(rfc3339),
        revoked_at: revoked.map(rfc3339),
        last_used_at: row.get::<_, Option<i64>>(8)?.map(rfc3339),
        expires_at_secs: expires,
        revoked: revoked.is_some(),
    })
}

/// Stores a new key.
#[allow(clippy::too_many_arguments)]
pub fn insert(
    conn: &Connection,
    user_id: i64,
    name: &str,
    prefix: &str,
    hash: &[u8],
    permissions: &[String],
    now: i64,
    expires_at: Option<i64>,
) -> Result<ApiKey, StoreError> {
    let permissions = serde_json::to_string(permissions).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash, permissions, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![user_id, name, prefix, hash, permissions, now, expires_at])?;
    get(conn, conn.last_insert_rowid())
}

/// The key with `id`.
pub fn get(conn: &Connection, id: i64) -> Result<ApiKey, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"))?
        .query_row([id], key_of)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no API key with id {id}")))
}

/// The key whose hash is `hash`, if any.
pub fn find_by_hash(conn: &Connection, hash: &[u8]) -> Result<Option<ApiKey>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE key_hash = ?1"
        ))?
        .query_row([hash], key_of)
        .optional()?)
}

/// The keys of `user_id`, oldest first.
pub fn of_user(conn: &Connection, user_id: i64) -> Result<Vec<ApiKey>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE user_id = ?1 ORDER BY id"
        ))?
        .query_map([user_id], key_of)?
        .collect::<Result<Vec<_>, _>>()?)
}

/// Revokes key `id`; `Conflict` if it was revoked already.
pub fn revoke(conn: &Connection, id: i64, now: i64) -> Result<(), StoreError> {
    let key = get(conn, id)?;
    if key.revoked {
        return Err(StoreError::Conflict(format!(
            "API key {id} is revoked already"
        )));
    }
    conn.prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}

/// Stamps the last exchange.
pub fn touch(conn: &Connection, id: i64, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}
