//! `plantd-logger migrate-to-postgres`: copies a SQLite logger file into a PostgreSQL database.
//!
//! Every metric and event row is read from one SQLite read transaction, in insertion order, and
//! written with binary `COPY` in one PostgreSQL transaction: the target ends up with all of it or
//! none of it. A target that already holds rows is refused unless `replace` is set, which empties
//! it first (in the same transaction). Stop the logger on the file first.

use std::path::Path;

use plantd_pg_util::{migrations, PostgresConfig};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::store::postgres::{CopyRows, MIGRATIONS, MIGRATIONS_TABLE};
use crate::store::{EventRow, MetricRow, Record, StoreError};

/// Rows per `COPY`.
const CHUNK: usize = 50_000;

/// What a migration copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Copied {
    /// Metric rows written to the target.
    pub metrics: u64,
    /// Event rows written to the target.
    pub events: u64,
    /// Rows the target held before and that `replace` removed.
    pub replaced_rows: u64,
}

/// Why a migration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Reading the source or writing the target failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source file is missing or of another schema version.
    #[error("{0}")]
    Source(String),
    /// The target holds rows and `replace` was not given.
    #[error("the target database already holds {0} row(s); pass --replace to empty it first")]
    NotEmpty(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Store(e.into())
    }
}

impl From<plantd_pg_util::tokio_postgres::Error> for MigrateError {
    fn from(e: plantd_pg_util::tokio_postgres::Error) -> Self {
        MigrateError::Store(e.into())
    }
}

/// Copies the SQLite logger file `from` into the database of `target`.
pub async fn migrate_to_postgres(
    from: &Path,
    target: &PostgresConfig,
    replace: bool,
) -> Result<Copied, MigrateError> {
    let records = read_sqlite(from)?;
    let pool = target.pool().map_err(StoreError::from)?;
    let mut client = target.connect(&pool).await.map_err(StoreError::from)?;
    migrations::migrate(&mut client, MIGRATIONS_TABLE, MIGRATIONS)
        .await
        .map_err(StoreError::from)?;
    let tx = client.transaction().await?;
    tx.batch_execute("LOCK TABLE metrics, events IN EXCLUSIVE MODE")
        .await?;
    let existing: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM metrics) + (SELECT count(*) FROM events)",
            &[],
        )
        .await?
        .get(0);
    if existing > 0 && !replace {
        return Err(MigrateError::NotEmpty(existing));
    }
    if existing > 0 {
        tx.batch_execute("DELETE FROM metrics; DELETE FROM events")
            .await?;
    }
    let mut copied = Copied {
        replaced_rows: existing.max(0) as u64,
        ..Copied::default()
    };
    for chunk in records.chunks(CHUNK) {
        let (metrics, events) = CopyRows::from(chunk).copy(&tx).await?;
        copied.metrics += metrics;
        copied.events += events;
    }
    tx.commit().await?;
    Ok(copied)
}

/// Every row of the file in insertion order (metrics, then events), from one read transaction.
fn read_sqlite(path: &Path) -> Result<Vec<Record>, MigrateError> {
    if !path.is_file() {
        return Err(MigrateError::Source(format!(
            "cannot read {}: no such file",
            path.display()
        )));
    }
    let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    plantd_sqlite_util::integrity::check_connection(&conn, path).map_err(StoreError::from)?;
    let version = crate::store::migrations::current_version(&conn)?;
    if version != crate::store::SCHEMA_VERSION {
        return Err(MigrateError::Source(format!(
            "{} has schema version {version}; this binary copies version {}",
            path.display(),
            crate::store::SCHEMA_VERSION
        )));
    }
    let tx = conn.transaction()?;
    let mut records: Vec<Record> = tx
        .prepare(
            "SELECT time, bus, topic, source, channel, value, units, tags FROM metrics ORDER BY id",
        )?
        .query_map([], |r| {
            Ok(Record::Metric(MetricRow {
                time_us: r.get(0)?,
                bus: r.get(1)?,
                topic: r.get(2)?,
                source: r.get(3)?,
                channel: r.get(4)?,
                value: r.get(5)?,
                units: r.get(6)?,
                tags_json: r.get(7)?,
            }))
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = tx
        .prepare("SELECT time, bus, topic, encoding, payload, malformed FROM events ORDER BY id")?;
    let events = stmt.query_map([], |r| {
        let encoding: String = r.get(3)?;
        Ok(Record::Event(EventRow {
            time_us: r.get(0)?,
            bus: r.get(1)?,
            topic: r.get(2)?,
            encoding: encoding_name(&encoding),
            payload_json: r.get(4)?,
            malformed: r.get(5)?,
        }))
    })?;
    for event in events {
        records.push(event?);
    }
    drop(stmt);
    tx.finish()?;
    Ok(records)
}

/// The `'static` spelling of a stored encoding (rows only ever hold these).
fn encoding_name(stored: &str) -> &'static str {
    ["msgpack", "json", "base64", "multipart", "none"]
        .into_iter()
        .find(|known| *known == stored)
        .unwrap_or("base64")
}
