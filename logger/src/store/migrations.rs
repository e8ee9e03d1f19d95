//! Versioned schema migrations, tracked in SQLite's `PRAGMA user_version`.
//!
//! Migration `i` (0-based) moves the schema from version `i` to `i + 1`, in one transaction with
//! the version bump, so a crash never leaves a half-migrated file. Append new steps; never edit a
//! released one.

use rusqlite::Connection;

/// The schema, one step per entry. Times are Unix microseconds (UTC).
const MIGRATIONS: &[&str] = &[
    // 1: metrics, events (anything that is not a metric, including undecodable payloads), and a
    //    small key/value table for the service's own bookkeeping (the health probe writes there).
    "CREATE TABLE metrics (
        id       INTEGER PRIMARY KEY,
        time     INTEGER NOT NULL,
        bus      TEXT NOT NULL,
        topic    TEXT NOT NULL,
        source   TEXT NOT NULL,
        channel  TEXT NOT NULL,
        value    REAL,
        units    TEXT NOT NULL,
        tags     TEXT NOT NULL
    );
    CREATE INDEX metrics_time ON metrics(time);
    CREATE INDEX metrics_topic_time ON metrics(topic, time);
    CREATE TABLE events (
        id        INTEGER PRIMARY KEY,
        time      INTEGER NOT NULL,
        bus       TEXT NOT NULL,
        topic     TEXT NOT NULL,
        encoding  TEXT NOT NULL,
        payload   TEXT NOT NULL,
        malformed INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_time ON events(time);
    CREATE INDEX events_bus_time ON events(bus, time);
    CREATE INDEX events_malformed ON events(id) WHERE malformed = 1;
    CREATE TABLE meta (
        key    TEXT PRIMARY KEY NOT NULL,
        value  TEXT NOT NULL
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
    fn migrating_twice_is_a_no_op_and_newer_files_are_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(current_version(&conn).unwrap(), SCHEMA_VERSION);
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(MigrationError::TooNew { found: 99, .. })
        ));
    }
}
