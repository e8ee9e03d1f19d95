//! The `users` table and login bookkeeping (failed attempts, lockout, last login).

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::{is_unique_violation, StoreError};

/// A user as replies show it: never the password hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Unique, case-insensitive.
    pub username: String,
    /// Unique, case-insensitive.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Inactive users cannot log in and their sessions are revoked.
    pub is_active: bool,
    /// Set by `user/verify_email`.
    pub email_verified: bool,
    /// When the email was verified (RFC 3339).
    pub email_verified_at: Option<String>,
    /// Last successful login (RFC 3339).
    pub last_login_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// What login needs besides the user: the hash and the lock.
#[derive(Clone, Debug)]
pub struct LoginRecord {
    /// The user.
    pub user: User,
    /// PHC string.
    pub password_hash: String,
    /// Unix milliseconds until which the account is locked.
    pub locked_until_ms: Option<i64>,
}

/// A user to create.
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// Username.
    pub username: String,
    /// Email.
    pub email: String,
    /// PHC string.
    pub password_hash: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Whether the user may log in.
    pub is_active: bool,
}

/// Changes to a user; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    /// New username.
    pub username: Option<String>,
    /// New email.
    pub email: Option<String>,
    /// New given name.
    pub first_name: Option<String>,
    /// New family name.
    pub last_name: Option<String>,
    /// New active flag.
    pub is_active: Option<bool>,
}

/// How `user/get` names a user.
#[derive(Clone, Debug)]
pub enum UserKey {
    /// By id.
    Id(i64),
    /// By email, any case.
    Email(String),
    /// By username, any case.
    Username(String),
}

/// `user/list` filters and paging.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    /// Rows to skip.
    pub offset: i64,
    /// Rows to return.
    pub limit: i64,
    /// Keep inactive users.
    pub include_inactive: bool,
    /// Keep users whose email is not verified.
    pub include_unverified: bool,
    /// Substring of username, email or name (any case).
    pub search: Option<String>,
    /// Only members of this organization.
    pub org_id: Option<i64>,
    /// Only holders of this role (any organization).
    pub role_id: Option<i64>,
    /// `id`, `username`, `email`, `created_at` or `last_login_at`.
    pub sort_by: &'static str,
    /// True for descending.
    pub descending: bool,
}

/// RFC 3339 of Unix seconds.
pub(crate) fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

const COLUMNS: &str = "id, username, email, first_name, last_name, is_active, email_verified, \
                       email_verified_at, last_login_at, created_at, updated_at";

fn user_of(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        email: row.get(2)?,
        first_name: row.get(3)?,
        last_name: row.get(4)?,
        is_active: row.get(5)?,
        email_verified: row.get(6)?,
        email_verified_at: row.get::<_, Option<i64>>(7)?.map(rfc3339),
        last_login_at: row.get::<_, Option<i64>>(8)?.map(rfc3339),
        created_at: rfc3339(row.get(9)?),
        updated_at: rfc3339(row.get(10)?),
    })
}

fn taken(e: rusqlite::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict("a user with this username or email exists".into())
    } else {
        StoreError::Sqlite(e)
    }
}

/// Creates a user.
pub fn insert(conn: &Connection, user: &NewUser, now: i64) -> Result<User, StoreError> {
    conn.prepare_cached(
        "INSERT INTO users (username, email, password_hash, first_name, last_name, is_active,
                            created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![
        user.username,
        user.email,
        user.password_hash,
        user.first_name,
        user.last_name,
        user.is_active,
        now
    ])
    .map_err(taken)?;
    get(conn, conn.last_insert_rowid())
}

/// The user with `id`.
pub fn get(conn: &Connection, id: i64) -> Result<User, StoreError> {
    find(conn, &UserKey::Id(id))
}

/// The user named by `key`.
pub fn find(conn: &Connection, key: &UserKey) -> Result<User, StoreError> {
    let (column, value): (&str, rusqlite::types::Value) = match key {
        UserKey::Id(id) => ("id", (*id).into()),
        UserKey::Email(email) => ("email", email.clone().into()),
        UserKey::Username(name) => ("username", name.clone().into()),
    };
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE {column} = ?1"))?
        .query_row([value], user_of)
        .optional()?
        .ok_or_else(|| StoreError::NotFound("no such user".into()))
}

/// The user whose username or email is `identifier` (any case), with its hash and lock.
pub fn find_for_login(
    conn: &Connection,
    identifier: &str,
) -> Result<Option<LoginRecord>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS}, password_hash, locked_until FROM users
             WHERE username = ?1 OR email = ?1 LIMIT 1"
        ))?
        .query_row([identifier], |row| {
            Ok(LoginRecord {
                user: user_of(row)?,
                password_hash: row.get(11)?,
                locked_until_ms: row.get(12)?,
            })
        })
        .optional()?)
}

/// The PHC string of user `id`.
pub fn password_hash(conn: &Connection, id: i64) -> Result<String, StoreError> {
    conn.prepare_cached("SELECT password_hash FROM users WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound("no such user".into()))
}

/// Applies `update` to user `id`.
pub fn update(
    conn: &Connection,
    id: i64,
    update: &UserUpdate,
    now: i64,
) -> Result<User, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE users SET username = coalesce(?2, username), email = coalesce(?3, email),
                first_name = coalesce(?4, first_name), last_name = coalesce(?5, last_name),
                is_active = coalesce(?6, is_active), updated_at = ?7
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            update.username,
            update.email,
            update.first_name,
            update.last_name,
            update.is_active,
            now
        ])
        .map_err(taken)?;
    if n == 0 {
        return Err(StoreError::NotFound("no such user".into()));
    }
    get(conn, id)
}

/// Replaces user `id`'s password hash.
pub fn set_password(conn: &Connection, id: i64, hash: &str, now: i64) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, hash, now])?;
    if n == 0 {
        return Err(StoreError::NotFound("no such user".into()));
    }
    Ok(())
}

/// Marks user `id`'s email verified.
pub fn verify_email(conn: &Connection, id: i64, now: i64) -> Result<User, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE users SET email_verified = 1, email_verified_at = coalesce(email_verified_at, ?2),
                updated_at = ?2 WHERE id = ?1",
        )?
        .execute(params![id, now])?;
    if n == 0 {
        return Err(StoreError::NotFound("no such user".into()));
    }
    get(conn, id)
}

/// Deletes user `id` with its sessions, assignments and API keys.
pub fn delete(conn: &Connection, id: i64) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM users WHERE id = ?1")?
        .execute([id])?;
    if n == 0 {
        return Err(StoreError::NotFound("no such user".into()));
    }
    Ok(())
}

/// How many users exist.
pub fn count(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM users", [], |row| row.get(0))?)
}

/// One page of users matching `filter`, and how many match in all.
pub fn list(conn: &Connection, filter: &UserFilter) -> Result<(Vec<User>, i64), StoreError> {
    let mut clauses = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if !filter.include_inactive {
        clauses.push("is_active = 1".to_owned());
    }
    if !filter.include_unverified {
        clauses.push("email_verified = 1".to_owned());
    }
    if let Some(search) = &filter.search {
        values.push(format!("%{}%", like_escape(search)).into());
        let n = values.len();
        clauses.push(format!(
            "(username LIKE ?{n} ESCAPE '\\' OR email LIKE ?{n} ESCAPE '\\'
              OR first_name LIKE ?{n} ESCAPE '\\' OR last_name LIKE ?{n} ESCAPE '\\')"
        ));
    }
    if let Some(org) = filter.org_id {
        values.push(org.into());
        clauses.push(format!(
            "id IN (SELECT user_id FROM user_organizations WHERE org_id = ?{})",
            values.len()
        ));
    }
    if let Some(role) = filter.role_id {
        values.push(role.into());
        clauses.push(format!(
            "id IN (SELECT user_id FROM user_roles WHERE role_id = ?{})",
            values.len()
        ));
    }
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM users {filter_sql}"),
        rusqlite::params_from_iter(values.iter()),
        |row| row.get(0),
    )?;
    let order = if filter.descending { "DESC" } else { "ASC" };
    // `sort_by` is one of our own column names (checked by the caller), never client text.
    let sql = format!(
        "SELECT {COLUMNS} FROM users {filter_sql} ORDER BY {} {order}, id {order} LIMIT {} OFFSET {}",
        filter.sort_by, filter.limit, filter.offset
    );
    let users = conn
        .prepare(&sql)?
        .query_map(rusqlite::params_from_iter(values.iter()), user_of)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((users, total))
}

/// `s` with LIKE's wildcards escaped by `\`.
pub(crate) fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Records a failed login at `now_ms`. If `max_failures` failures fall within `window_ms`, locks
/// the account until `now_ms + lock_ms` (clearing the count) and returns the lock's end in Unix
/// milliseconds.
pub fn record_failure(
    conn: &Connection,
    id: i64,
    now_ms: i64,
    max_failures: u32,
    window_ms: i64,
    lock_ms: i64,
) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("DELETE FROM login_failures WHERE user_id = ?1 AND at_ms <= ?2")?
        .execute(params![id, now_ms - window_ms])?;
    conn.prepare_cached("INSERT INTO login_failures (user_id, at_ms) VALUES (?1, ?2)")?
        .execute(params![id, now_ms])?;
    let failures: i64 = conn
        .prepare_cached("SELECT count(*) FROM login_failures WHERE user_id = ?1")?
        .query_row([id], |row| row.get(0))?;
    if max_failures == 0 || failures < i64::from(max_failures) {
        return Ok(None);
    }
    let until = now_ms + lock_ms;
    conn.prepare_cached("UPDATE users SET locked_until = ?2 WHERE id = ?1")?
        .execute(params![id, until])?;
    conn.prepare_cached("DELETE FROM login_failures WHERE user_id = ?1")?
        .execute([id])?;
    Ok(Some(until))
}

/// A successful login: clears failures and the lock, stamps `last_login_at`.
pub fn login_succeeded(conn: &Connection, id: i64, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM login_failures WHERE user_id = ?1")?
        .execute([id])?;
    conn.prepare_cached("UPDATE users SET last_login_at = ?2, locked_until = NULL WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}
