//! The state database's schema, as versioned migrations run by
//! [`plantd_sqlite_util::migrations`]. Append new steps; never edit a released one.

use rusqlite::Connection;

pub use plantd_sqlite_util::migrations::{current_version, MigrationError};

/// The schema, one step per entry.
const MIGRATIONS: &[&str] = &[
    // 1: scopes, entries (values are JSON text), and a small key/value table for the service's own
    //    bookkeeping (the health probe writes there).
    "CREATE TABLE scopes (
        name        TEXT PRIMARY KEY NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE entries (
        scope       TEXT NOT NULL REFERENCES scopes(name) ON DELETE CASCADE,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID;
    CREATE TABLE meta (
        key         TEXT PRIMARY KEY NOT NULL,
        value       TEXT NOT NULL
    ) WITHOUT ROWID;",
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
    fn migrates_a_fresh_database_once_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(current_version(&conn).unwrap(), 0);
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(current_version(&conn).unwrap(), SCHEMA_VERSION);
        // A second run has nothing to do and must not fail on existing tables.
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN ('scopes','entries','meta')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 3);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(MigrationError::TooNew { .. })
        ));
    }
}
