//! Sessions (one per login or API key exchange; access tokens carry the id as `sid`) and their
//! single-use refresh tokens, kept by SHA-256 hash.

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// Verifiers accept a token up to 30 s past its expiry (clock skew); a session whose last token
/// expired less than this long ago is still listed as revoked, to be safe.
const VERIFIER_LEEWAY_SECS: i64 = 60;

/// One session row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The `sid`.
    pub id: String,
    /// Whose session it is.
    pub user_id: i64,
    /// The API key it was exchanged for, if any.
    pub api_key_id: Option<i64>,
    /// Unix seconds by which every access token of the session has expired.
    pub access_until: i64,
    /// Set once revoked.
    pub revoked_reason: Option<String>,
}

/// A refresh token's row, looked up by hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    /// Its session.
    pub session_id: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// True once presented: a second use is reuse.
    pub used: bool,
}

/// Starts a session whose first access token expires at `access_until`.
pub fn create(
    conn: &Connection,
    sid: &str,
    user_id: i64,
    api_key_id: Option<i64>,
    now: i64,
    access_until: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO sessions (id, user_id, api_key_id, created_at, access_until)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![sid, user_id, api_key_id, now, access_until])?;
    Ok(())
}

/// The session `sid`, if it exists.
pub fn get(conn: &Connection, sid: &str) -> Result<Option<Session>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, user_id, api_key_id, access_until, revoked_reason FROM sessions
             WHERE id = ?1",
        )?
        .query_row([sid], |row| {
            Ok(Session {
                id: row.get(0)?,
                user_id: row.get(1)?,
                api_key_id: row.get(2)?,
                access_until: row.get(3)?,
                revoked_reason: row.get(4)?,
            })
        })
        .optional()?)
}

/// Records that the session has an access token valid until `until`.
pub fn extend_access(conn: &Connection, sid: &str, until: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE sessions SET access_until = max(access_until, ?2) WHERE id = ?1")?
        .execute(params![sid, until])?;
    Ok(())
}

/// Revokes one session. False if it was revoked already. Its refresh tokens stay (until they
/// expire), so presenting one later says "revoked" rather than "unknown".
pub fn revoke(conn: &Connection, sid: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE sessions SET revoked_at = ?2, revoked_reason = ?3
             WHERE id = ?1 AND revoked_at IS NULL",
        )?
        .execute(params![sid, now, reason])?;
    Ok(n > 0)
}

/// Revokes `user_id`'s sessions (all, or those of API key `api_key`; never `keep`). Returns the
/// ids of the revoked sessions that may still have access tokens a verifier would accept.
pub fn revoke_where(
    conn: &Connection,
    user_id: Option<i64>,
    api_key: Option<i64>,
    keep: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<Vec<String>, StoreError> {
    let filter = "revoked_at IS NULL AND (?1 IS NULL OR user_id = ?1)
                  AND (?2 IS NULL OR api_key_id = ?2) AND (?3 IS NULL OR id <> ?3)";
    let live: Vec<String> = conn
        .prepare_cached(&format!(
            "SELECT id FROM sessions WHERE {filter} AND access_until >= ?4 ORDER BY id"
        ))?
        .query_map(
            params![user_id, api_key, keep, now - VERIFIER_LEEWAY_SECS],
            |row| row.get(0),
        )?
        .collect::<Result<Vec<_>, _>>()?;
    conn.prepare_cached(&format!(
        "UPDATE sessions SET revoked_at = ?4, revoked_reason = ?5 WHERE {filter}"
    ))?
    .execute(params![user_id, api_key, keep, now, reason])?;
    Ok(live)
}

/// Stores a refresh token's hash for session `sid`.
pub fn add_refresh(
    conn: &Connection,
    hash: &[u8],
    sid: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![hash, sid, now, expires_at])?;
    Ok(())
}

/// Looks up a refresh token by hash and marks it used, in one step (so two concurrent
/// presentations cannot both win: the writer runs one after the other).
pub fn use_refresh(
    conn: &Connection,
    hash: &[u8],
    now: i64,
) -> Result<Option<RefreshToken>, StoreError> {
    let found = conn
        .prepare_cached(
            "SELECT session_id, expires_at, used_at IS NOT NULL FROM refresh_tokens
             WHERE token_hash = ?1",
        )?
        .query_row([hash], |row| {
            Ok(RefreshToken {
                session_id: row.get(0)?,
                expires_at: row.get(1)?,
                used: row.get(2)?,
            })
        })
        .optional()?;
    if matches!(&found, Some(token) if !token.used) {
        conn.prepare_cached("UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1")?
            .execute(params![hash, now])?;
    }
    Ok(found)
}

/// Deletes what can no longer matter: sessions whose access tokens and refresh tokens have all
/// expired (revoked or not), `grace` seconds after that.
pub fn prune(conn: &Connection, now: i64, grace: i64) -> Result<usize, StoreError> {
    conn.prepare_cached("DELETE FROM refresh_tokens WHERE expires_at < ?1")?
        .execute([now - grace])?;
    Ok(conn
        .prepare_cached(
            "DELETE FROM sessions WHERE access_until < ?1
             AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.session_id = sessions.id)",
        )?
        .execute([now - grace])?)
}
