//! Versioned schema migrations, tracked in SQLite's `PRAGMA user_version`.
//!
//! A service lists its schema as steps: step `i` (0-based) moves the schema from version `i` to
//! `i + 1`. Each runs in its own transaction together with the version bump, so a crash never
//! leaves a half-migrated file. Services append new steps and never edit a released one.

use rusqlite::Connection;

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The file was written by a newer plantd.
    #[error("database schema version {found} is newer than this binary supports ({supported})")]
    TooNew {
        /// Version in the file.
        found: u32,
        /// The number of steps this binary knows.
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

/// Applies every step of `steps` the file has not seen yet. Returns the version reached, which is
/// `steps.len()`.
pub fn migrate(conn: &mut Connection, steps: &[&str]) -> Result<u32, MigrationError> {
    let supported = steps.len() as u32;
    let sqlite = |version| move |source| MigrationError::Sqlite { version, source };
    let found = current_version(conn).map_err(sqlite(0))?;
    if found > supported {
        return Err(MigrationError::TooNew { found, supported });
    }
    for (index, sql) in steps.iter().enumerate().skip(found as usize) {
        let version = index as u32 + 1;
        let tx = conn.transaction().map_err(sqlite(version))?;
        tx.execute_batch(sql).map_err(sqlite(version))?;
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))
            .map_err(sqlite(version))?;
        tx.commit().map_err(sqlite(version))?;
    }
    Ok(supported)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[&str] = &["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (y INTEGER);"];

    #[test]
    fn migrates_step_by_step_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn, &STEPS[..1]).unwrap(), 1);
        assert_eq!(current_version(&conn).unwrap(), 1);
        // A later binary adds a step: only that one runs (re-running step 1 would fail).
        assert_eq!(migrate(&mut conn, STEPS).unwrap(), 2);
        assert_eq!(migrate(&mut conn, STEPS).unwrap(), 2);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 2);
    }

    #[test]
    fn refuses_a_newer_schema_and_keeps_a_failed_step_out() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = 3").unwrap();
        assert!(matches!(
            migrate(&mut conn, STEPS),
            Err(MigrationError::TooNew {
                found: 3,
                supported: 2
            })
        ));

        let mut conn = Connection::open_in_memory().unwrap();
        let broken = &["CREATE TABLE a (x INTEGER);", "CREATE TABLE a (x INTEGER);"];
        assert!(matches!(
            migrate(&mut conn, broken),
            Err(MigrationError::Sqlite { version: 2, .. })
        ));
        assert_eq!(current_version(&conn).unwrap(), 1, "step 2 rolled back");
    }
}
