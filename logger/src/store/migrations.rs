//! The logger database's schema, as versioned migrations run by
//! [`plantd_sqlite_util::migrations`]. Append new steps; never edit a released one.

use rusqlite::Connection;

pub use plantd_sqlite_util::migrations::{current_version, MigrationError};

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

/// Applies every migration the file has not seen yet. Returns the version reached.
pub fn migrate(conn: &mut Connection) -> Result<u32, MigrationError> {
    plantd_sqlite_util::migrations::migrate(conn, MIGRATIONS)
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
