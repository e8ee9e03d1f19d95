//! Storage: SQLite (the default) or PostgreSQL ([`postgres`], `store: postgres`). The schema
//! ([`migrations`]), the single writer thread that batches inserts and applies retention
//! ([`writer`], writing to a [`Sink`]), and the read side used by queries ([`query`],
//! [`Queries`]). Both backends store the same rows and answer the same queries alike.
//!
//! The file runs in WAL mode with `synchronous=NORMAL`: a crash may lose the last batch (bus
//! messages are fire-and-forget anyway) but never corrupts the file, and readers never block the
//! writer. Times are stored as Unix microseconds (UTC).

pub mod migrations;
pub mod postgres;
pub mod query;
pub mod writer;

use plantd_sqlite_util::{open_reader, open_writer, IntegrityError, OpenError};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;

use postgres::PgLogStore;

pub use migrations::{MigrationError, SCHEMA_VERSION};
pub use writer::{spawn_writer, WriterSettings};

/// Rows deleted per retention statement, so one pass never holds the write lock for long.
const RETENTION_CHUNK: u64 = 10_000;

/// Why storage failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema could not be migrated.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The file failed `PRAGMA quick_check` when it was opened.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// The file or its directory could not be created, or it would not go into WAL mode.
    #[error(transparent)]
    Open(OpenError),
    /// PostgreSQL failed (a statement, or the connection).
    #[error("postgres: {0}")]
    Postgres(#[from] plantd_pg_util::tokio_postgres::Error),
    /// PostgreSQL could not be reached or configured.
    #[error(transparent)]
    Pg(#[from] plantd_pg_util::PgError),
    /// The PostgreSQL schema could not be migrated.
    #[error(transparent)]
    PgMigration(#[from] plantd_pg_util::migrations::MigrationError),
    /// No PostgreSQL connection could be had from the pool.
    #[error("no PostgreSQL connection: {0}")]
    Pool(String),
    /// The PostgreSQL runtime could not start.
    #[error("cannot start the PostgreSQL runtime: {0}")]
    Io(std::io::Error),
    /// The PostgreSQL runtime stopped (shutting down).
    #[error(transparent)]
    Stopped(#[from] plantd_pg_util::blocking::Stopped),
}

/// Which database holds the logger's rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The SQLite file `db`.
    #[default]
    Sqlite,
    /// The PostgreSQL database of `postgres.dsn` (TimescaleDB hypertable when available).
    Postgres,
}

/// Where the writer thread puts rows.
pub enum Sink {
    /// The SQLite write connection.
    Sqlite(Connection),
    /// The PostgreSQL store.
    Postgres(PgLogStore),
}

impl Sink {
    /// Inserts every record in one transaction. Returns (metric rows, event rows).
    pub fn insert_batch(&mut self, batch: &[Record]) -> Result<(u64, u64), StoreError> {
        match self {
            Sink::Sqlite(conn) => Ok(writer::insert_batch(conn, batch)?),
            Sink::Postgres(pg) => pg.insert_batch(batch),
        }
    }

    /// Writes the health probe row.
    pub fn probe(&mut self) -> Result<(), StoreError> {
        match self {
            Sink::Sqlite(conn) => {
                let now = chrono::Utc::now().to_rfc3339();
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('health_probe', ?1)",
                    [now],
                )?;
                Ok(())
            }
            Sink::Postgres(pg) => pg.probe(),
        }
    }

    /// Deletes what `retention` says must go, given the current time.
    pub fn apply_retention(
        &mut self,
        retention: &Retention,
        now_us: i64,
    ) -> Result<Deleted, StoreError> {
        match self {
            Sink::Sqlite(conn) => Ok(apply_retention(conn, retention, now_us)?),
            Sink::Postgres(pg) => pg.apply_retention(retention, now_us),
        }
    }
}

/// The read side of either backend, as the query operations use it.
pub enum Queries {
    /// Pooled SQLite readers.
    Sqlite(Readers),
    /// The PostgreSQL store.
    Postgres(PgLogStore),
}

impl Queries {
    /// Metrics matching `filter`, newest first, at most `limit`.
    pub fn metrics(
        &self,
        filter: &query::Filter,
        limit: usize,
    ) -> Result<Vec<query::StoredMetric>, StoreError> {
        match self {
            Queries::Sqlite(r) => r.with(|c| query::metrics(c, filter, limit)),
            Queries::Postgres(pg) => pg.metrics(filter, limit),
        }
    }

    /// Per-topic, per-bucket count/min/max/avg, at most `max_buckets` buckets.
    pub fn summary(
        &self,
        filter: &query::Filter,
        bucket_us: i64,
        max_buckets: usize,
    ) -> Result<Vec<query::Series>, StoreError> {
        match self {
            Queries::Sqlite(r) => r.with(|c| query::summary(c, filter, bucket_us, max_buckets)),
            Queries::Postgres(pg) => pg.summary(filter, bucket_us, max_buckets),
        }
    }

    /// Events matching `filter` (only malformed ones if asked), newest first, at most `limit`.
    pub fn events(
        &self,
        filter: &query::Filter,
        malformed_only: bool,
        limit: usize,
    ) -> Result<Vec<query::StoredEvent>, StoreError> {
        match self {
            Queries::Sqlite(r) => r.with(|c| query::events(c, filter, malformed_only, limit)),
            Queries::Postgres(pg) => pg.events(filter, malformed_only, limit),
        }
    }

    /// Table statistics.
    pub fn stats(&self) -> Result<serde_json::Value, StoreError> {
        match self {
            Queries::Sqlite(r) => r.with(query::stats),
            Queries::Postgres(pg) => pg.stats(),
        }
    }
}

/// One row of the `metrics` table, ready to insert.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricRow {
    /// Reading time, Unix microseconds.
    pub time_us: i64,
    /// Bus it arrived on.
    pub bus: String,
    /// Bus topic.
    pub topic: String,
    /// Producer (device, host).
    pub source: String,
    /// Channel measured.
    pub channel: String,
    /// The reading; `None` for NaN (JSON and SQLite have no NaN).
    pub value: Option<f64>,
    /// Units.
    pub units: String,
    /// Tags as a JSON object.
    pub tags_json: String,
}

/// One row of the `events` table, ready to insert.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    /// Event time (its own `time` field if it has one, else when it arrived), Unix microseconds.
    pub time_us: i64,
    /// Bus it arrived on.
    pub bus: String,
    /// Bus topic.
    pub topic: String,
    /// How the payload was read: `msgpack`, `json`, `base64` (undecodable), `multipart`, `none`.
    pub encoding: &'static str,
    /// The payload as JSON text (undecodable bytes as a base64 string).
    pub payload_json: String,
    /// True when (part of) the payload was neither MessagePack nor JSON.
    pub malformed: bool,
}

/// What the ingest side hands the writer.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A decoded [`plantd_worker_sdk::bus::Metric`].
    Metric(MetricRow),
    /// Anything else.
    Event(EventRow),
}

/// The retention policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Rows older than this are deleted.
    pub max_age: Option<Duration>,
    /// Each table keeps at most this many rows (the newest).
    pub max_rows: Option<u64>,
    /// How often the policy runs.
    pub interval: Duration,
}

/// Rows deleted by one retention pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// From `metrics`.
    pub metrics: u64,
    /// From `events`.
    pub events: u64,
}

/// Opens (creating if needed, mode 0600) the database for writing: checked with `PRAGMA
/// quick_check` (a damaged file is [`StoreError::Integrity`]), WAL, `synchronous=NORMAL`,
/// migrated.
pub fn open_for_writing(path: &Path) -> Result<Connection, StoreError> {
    let settings = plantd_sqlite_util::WriterSettings {
        synchronous: "NORMAL",
        // Events and metrics say a lot about a plant: nobody else's to read.
        private: true,
    };
    let mut conn = open_writer(path, settings).map_err(|e| match e {
        OpenError::Integrity(e) => StoreError::Integrity(e),
        OpenError::Sqlite(e) => StoreError::Sqlite(e),
        other => StoreError::Open(other),
    })?;
    migrations::migrate(&mut conn)?;
    Ok(conn)
}

/// Read-only connections for queries, opened on demand and reused.
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Readers of the database at `path` (which the writer has already created).
    pub fn new(path: &Path) -> Self {
        Readers {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on an idle reader (opening one if none is idle).
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&conn);
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        Ok(result?)
    }
}

/// Deletes what `retention` says must go, given the current time.
pub fn apply_retention(
    conn: &Connection,
    retention: &Retention,
    now_us: i64,
) -> rusqlite::Result<Deleted> {
    let mut deleted = Deleted::default();
    for (table, count) in [
        ("metrics", &mut deleted.metrics),
        ("events", &mut deleted.events),
    ] {
        if let Some(max_age) = retention.max_age {
            let cutoff =
                now_us.saturating_sub(i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX));
            // The table name is one of our two constants, never input.
            let sql = format!(
                "DELETE FROM {table} WHERE id IN \
                 (SELECT id FROM {table} WHERE time < ?1 LIMIT {RETENTION_CHUNK})"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            loop {
                let n = stmt.execute([cutoff])? as u64;
                *count += n;
                if n < RETENTION_CHUNK {
                    break;
                }
            }
        }
        if let Some(max_rows) = retention.max_rows {
            // Row ids grow with insertion order, so "the newest N rows" are the N highest ids.
            let sql = format!(
                "DELETE FROM {table} WHERE id <= \
                 (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?1)"
            );
            *count += conn.execute(&sql, [max_rows])? as u64;
        }
    }
    Ok(deleted)
}
