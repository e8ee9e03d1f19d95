//! Ed25519 signing keys. The newest key that is not retired signs; a retired key stays listed
//! (for verifiers) until `listed_until`, when the last token it signed has expired.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::StoreError;

/// One signing key row.
#[derive(Clone)]
pub struct KeyRow {
    /// Key id (`kid` header).
    pub kid: String,
    /// The 32-byte Ed25519 seed.
    pub secret: [u8; 32],
    /// The 32-byte public key.
    pub public: [u8; 32],
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for KeyRow {
    // The secret never reaches a log line, even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow").field("kid", &self.kid).finish()
    }
}

fn bytes32(row: &Row<'_>, index: usize) -> rusqlite::Result<[u8; 32]> {
    let bytes: Vec<u8> = row.get(index)?;
    bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Blob,
            "a signing key is not 32 bytes".into(),
        )
    })
}

fn key_of(row: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        kid: row.get(0)?,
        secret: bytes32(row, 1)?,
        public: bytes32(row, 2)?,
        created_at: row.get(3)?,
    })
}

/// The key that signs now, if any.
pub fn active(conn: &Connection) -> Result<Option<KeyRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT kid, secret_key, public_key, created_at FROM signing_keys
             WHERE retired_at IS NULL ORDER BY created_at DESC, rowid DESC LIMIT 1",
        )?
        .query_row([], key_of)
        .optional()?)
}

/// Retires every signing key (listed until `listed_until`) and stores `key` as the one that
/// signs from now on.
pub fn rotate(
    conn: &Connection,
    key: &KeyRow,
    now: i64,
    listed_until: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE signing_keys SET retired_at = ?1, listed_until = ?2 WHERE retired_at IS NULL",
    )?
    .execute(params![now, listed_until])?;
    conn.prepare_cached(
        "INSERT INTO signing_keys (kid, secret_key, public_key, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![key.kid, &key.secret[..], &key.public[..], key.created_at])?;
    Ok(())
}

/// Keys verifiers need at `now`: the active one and retired ones still listed, newest first.
pub fn listed(conn: &Connection, now: i64) -> Result<Vec<KeyRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT kid, secret_key, public_key, created_at FROM signing_keys
             WHERE retired_at IS NULL OR listed_until >= ?1
             ORDER BY created_at DESC, rowid DESC",
        )?
        .query_map([now], key_of)?
        .collect::<Result<Vec<_>, _>>()?)
}
