//! `plantd-state migrate-to-postgres`: copies a SQLite state file into a PostgreSQL database.
//!
//! Every scope and entry (with its timestamps) is read from one SQLite read transaction and
//! written in one PostgreSQL transaction, so the target ends up with all of it or none of it. A
//! target that already holds scopes is refused unless `replace` is set, which empties it first (in
//! the same transaction). Stop the state service on the SQLite file first: writes made during the
//! copy are not in it.

use std::path::Path;

use plantd_pg_util::{migrations, PostgresConfig};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::store::postgres::{MIGRATIONS, MIGRATIONS_TABLE};
use crate::store::StoreError;

/// Rows per `INSERT` statement.
const CHUNK: usize = 5_000;

/// What a migration copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Copied {
    /// Scopes written to the target.
    pub scopes: u64,
    /// Entries written to the target.
    pub entries: u64,
    /// Scopes the target held before and that `replace` removed.
    pub replaced_scopes: u64,
}

type Scope = (String, i64, i64);
type Entry = (String, String, String, i64);

/// Copies the SQLite state file `from` into the database of `target`.
pub async fn migrate_to_postgres(
    from: &Path,
    target: &PostgresConfig,
    replace: bool,
) -> Result<Copied, StoreError> {
    let (scopes, entries) = read_sqlite(from)?;
    let pool = target.pool()?;
    let mut client = target.connect(&pool).await?;
    migrations::migrate(&mut client, MIGRATIONS_TABLE, MIGRATIONS).await?;
    let tx = client.transaction().await?;
    // Nobody else may write while we check and copy.
    tx.batch_execute("LOCK TABLE scopes, entries IN EXCLUSIVE MODE")
        .await?;
    let existing: i64 = tx
        .query_one("SELECT count(*) FROM scopes", &[])
        .await?
        .get(0);
    if existing > 0 && !replace {
        return Err(StoreError::Unsupported(format!(
            "the target database already holds {existing} scope(s); pass --replace to empty it \
             first"
        )));
    }
    if existing > 0 {
        tx.execute("DELETE FROM scopes", &[]).await?;
    }
    for chunk in scopes.chunks(CHUNK) {
        let names: Vec<&str> = chunk.iter().map(|s| s.0.as_str()).collect();
        let created: Vec<i64> = chunk.iter().map(|s| s.1).collect();
        let updated: Vec<i64> = chunk.iter().map(|s| s.2).collect();
        tx.execute(
            "INSERT INTO scopes (name, created_at, updated_at)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])",
            &[&names, &created, &updated],
        )
        .await?;
    }
    for chunk in entries.chunks(CHUNK) {
        let s: Vec<&str> = chunk.iter().map(|e| e.0.as_str()).collect();
        let k: Vec<&str> = chunk.iter().map(|e| e.1.as_str()).collect();
        let v: Vec<&str> = chunk.iter().map(|e| e.2.as_str()).collect();
        let t: Vec<i64> = chunk.iter().map(|e| e.3).collect();
        tx.execute(
            "INSERT INTO entries (scope, key, value, updated_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])",
            &[&s, &k, &v, &t],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Copied {
        scopes: scopes.len() as u64,
        entries: entries.len() as u64,
        replaced_scopes: existing.max(0) as u64,
    })
}

/// Every scope and entry of the file, from one read transaction. The file must exist and carry
/// the schema this binary writes.
fn read_sqlite(path: &Path) -> Result<(Vec<Scope>, Vec<Entry>), StoreError> {
    if !path.is_file() {
        return Err(StoreError::Io {
            context: format!("cannot read {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    plantd_sqlite_util::integrity::check_connection(&conn, path)?;
    let version = crate::migrations::current_version(&conn)?;
    if version != crate::migrations::SCHEMA_VERSION {
        return Err(StoreError::Unsupported(format!(
            "{} has schema version {version}; this binary copies version {} (start the state \
             service on it once to migrate it)",
            path.display(),
            crate::migrations::SCHEMA_VERSION
        )));
    }
    let tx = conn.transaction()?;
    let scopes = tx
        .prepare("SELECT name, created_at, updated_at FROM scopes ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<Scope>, _>>()?;
    let entries = tx
        .prepare("SELECT scope, key, value, updated_at FROM entries ORDER BY scope, key")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<Vec<Entry>, _>>()?;
    tx.finish()?;
    Ok((scopes, entries))
}
