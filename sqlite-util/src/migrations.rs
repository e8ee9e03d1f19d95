//! Versioned schema migrations, tracked in SQLite's `PRAGMA user_version`.
//!
//! A service lists its schema as steps: step `i` (0-based) moves the schema from version `i` to
//! `i + 1`. Each runs in its own transaction together with the version bump, so a crash never
//! leaves a half-migrated file. Services append new steps and never edit a released one.

use rusqlite::{Connection, TransactionBehavior};

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
///
/// Each step reads the version inside an IMMEDIATE transaction (the write lock), so processes
/// opening a fresh file at the same moment take turns instead of both running step 1.
pub fn migrate(conn: &mut Connection, steps: &[&str]) -> Result<u32, MigrationError> {
    let supported = steps.len() as u32;
    let sqlite = |version| move |source| MigrationError::Sqlite { version, source };
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(0))?;
        let found = current_version(&tx).map_err(sqlite(0))?;
        if found > supported {
            return Err(MigrationError::TooNew { found, supported });
        }
        let Some(sql) = steps.get(found as usize) else {
            return Ok(supported);
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
                        migrate(&mut conn, STEPS).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for run in runs {
                assert_eq!(run.join().unwrap(), Ok(2));
            }
        });
    }
}
