//! Versioned schema migrations, tracked in SQLite's `PRAGMA user_version`.
//!
//! Migration `i` (0-based) moves the schema from version `i` to `i + 1`. Each runs in its own
//! transaction together with the version bump, so a crash never leaves a half-migrated file. Append
//! new migrations; never edit a released one.

use rusqlite::Connection;

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

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The file was written by a newer plantd.
    #[error("database schema version {found} is newer than this binary supports ({supported})")]
    TooNew {
        /// Version in the file.
        found: u32,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// SQLite refused a statement.
    #[error("migration to version {version} failed: {source}")]
    Sqlite {
        /// Target version of the failed step.
        version: u32,
        /// Cause.
        source: rusqlite::Error,
    },
}

/// The schema version recorded in the file.
pub fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Applies every migration the file has not seen yet. Returns the version reached.
pub fn migrate(conn: &mut Connection) -> Result<u32, MigrationError> {
    let sqlite = |version| move |source| MigrationError::Sqlite { version, source };
    let found = current_version(conn).map_err(sqlite(0))?;
    if found > SCHEMA_VERSION {
        return Err(MigrationError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as u32 + 1;
        let tx = conn.transaction().map_err(sqlite(version))?;
        tx.execute_batch(sql).map_err(sqlite(version))?;
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))
            .map_err(sqlite(version))?;
        tx.commit().map_err(sqlite(version))?;
    }
    Ok(SCHEMA_VERSION)
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
