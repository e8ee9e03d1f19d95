//! The identity database's schema, as versioned migrations run by
//! [`plantd_sqlite_util::migrations`]. Append new steps; never edit a released one.
//!
//! Times are Unix milliseconds (`*_ms`) or seconds (`*_at`, where they meet JWT `exp`). Deletes
//! are real (no soft delete), so a deleted user's name and email can be used again; the audit
//! table keeps names, not foreign keys, so it outlives what it describes.

use rusqlite::Connection;

pub use plantd_sqlite_util::migrations::{current_version, MigrationError};

/// The schema, one step per entry.
const MIGRATIONS: &[&str] = &[
    // 1: the whole model.
    "CREATE TABLE users (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        username          TEXT NOT NULL UNIQUE COLLATE NOCASE,
        email             TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash     TEXT NOT NULL,
        first_name        TEXT NOT NULL DEFAULT '',
        last_name         TEXT NOT NULL DEFAULT '',
        is_active         INTEGER NOT NULL DEFAULT 1,
        email_verified    INTEGER NOT NULL DEFAULT 0,
        email_verified_at INTEGER,
        last_login_at     INTEGER,
        locked_until      INTEGER, -- Unix ms
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL
    );
    CREATE TABLE login_failures (
        user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        at_ms    INTEGER NOT NULL
    );
    CREATE INDEX login_failures_user ON login_failures(user_id, at_ms);
    CREATE TABLE organizations (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT NOT NULL,
        slug        TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        is_active   INTEGER NOT NULL DEFAULT 1,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE TABLE roles (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT NOT NULL UNIQUE COLLATE NOCASE,
        description TEXT NOT NULL DEFAULT '',
        permissions TEXT NOT NULL,
        scope       TEXT NOT NULL CHECK (scope IN ('global', 'organization')),
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    -- org_id 0 is a global assignment; a real organization otherwise.
    CREATE TABLE user_roles (
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role_id    INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
        org_id     INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, role_id, org_id)
    );
    CREATE INDEX user_roles_role ON user_roles(role_id);
    CREATE TABLE user_organizations (
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        org_id     INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, org_id)
    );
    CREATE INDEX user_organizations_org ON user_organizations(org_id);
    CREATE TABLE api_keys (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        prefix       TEXT NOT NULL,
        key_hash     BLOB NOT NULL UNIQUE,
        permissions  TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        revoked_at   INTEGER,
        last_used_at INTEGER
    );
    -- One login (or one API key exchange). Access tokens carry its id as `sid`.
    CREATE TABLE sessions (
        id              TEXT PRIMARY KEY NOT NULL,
        user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        api_key_id      INTEGER REFERENCES api_keys(id) ON DELETE CASCADE,
        created_at      INTEGER NOT NULL,
        access_until    INTEGER NOT NULL,
        revoked_at      INTEGER,
        revoked_reason  TEXT
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE INDEX sessions_api_key ON sessions(api_key_id);
    -- Opaque refresh tokens, by SHA-256; a row is used once (used_at set).
    CREATE TABLE refresh_tokens (
        token_hash  BLOB PRIMARY KEY NOT NULL,
        session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        used_at     INTEGER
    );
    CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);
    -- Ed25519 signing keys. The newest unretired key signs; retired keys stay listed until
    -- `listed_until` (when the last token they signed has expired).
    CREATE TABLE signing_keys (
        kid          TEXT PRIMARY KEY NOT NULL,
        secret_key   BLOB NOT NULL,
        public_key   BLOB NOT NULL,
        created_at   INTEGER NOT NULL,
        retired_at   INTEGER,
        listed_until INTEGER
    );
    CREATE TABLE audit (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms  INTEGER NOT NULL,
        actor    TEXT NOT NULL,
        action   TEXT NOT NULL,
        target   TEXT NOT NULL,
        outcome  TEXT NOT NULL,
        source   TEXT NOT NULL
    );
    CREATE INDEX audit_time ON audit(time_ms);
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 2: the notice log verifiers catch up from (`store::notices`).
    "CREATE TABLE notices (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms  INTEGER NOT NULL,
        topic    TEXT NOT NULL,
        data     TEXT NOT NULL
    );
    CREATE INDEX notices_time ON notices(time_ms);",
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies every migration the file has not seen yet. Returns the version reached.
pub fn migrate(conn: &mut Connection) -> Result<u32, MigrationError> {
    plantd_sqlite_util::migrations::migrate(conn, MIGRATIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_fresh_database_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(current_version(&conn).unwrap(), SCHEMA_VERSION);
    }
}
