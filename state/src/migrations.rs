//! Versioned schema migrations, tracked in SQLite's `PRAGMA user_version`.
//!
//! Migration `i` (0-based) moves the schema from version `i` to `i + 1`. Each runs in its own
//! transaction together with the version bump, so a crash never leaves a half-migrated file. Append
//! new migrations; never edit a released one.

use rusqlite::{Connection, TransactionBehavior};

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
///
/// Each step reads the version inside an IMMEDIATE transaction (the write lock), so processes
/// opening a fresh file at the same moment take turns instead of both running step 1.
pub fn migrate(conn: &mut Connection) -> Result<u32, MigrationError> {
    let sqlite = |version| move |source| MigrationError::Sqlite { version, source };
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(0))?;
        let found = current_version(&tx).map_err(sqlite(0))?;
        if found > SCHEMA_VERSION {
            return Err(MigrationError::TooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(sql) = MIGRATIONS.get(found as usize) else {
            return Ok(SCHEMA_VERSION);
        };
        let version = found + 1;
        tx.execute_batch(sql).map_err(sqlite(version))?;
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))
            .map_err(sqlite(version))?;
        tx.commit().map_err(sqlite(version))?;
    }
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

    #[test]
    fn processes_opening_a_fresh_file_at_once_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.db");
        let barrier = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut conn = Connection::open(&path).unwrap();
                        conn.busy_timeout(std::time::Duration::from_secs(10))
                            .unwrap();
                        barrier.wait();
                        migrate(&mut conn).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for run in runs {
                assert_eq!(run.join().unwrap(), Ok(SCHEMA_VERSION));
            }
        });
    }
}
