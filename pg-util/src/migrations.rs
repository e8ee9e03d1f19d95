//! Versioned schema migrations for PostgreSQL, in the style of `plantd_sqlite_util::migrations`.
//!
//! A service lists its schema as steps: step `i` (0-based) moves the schema from version `i` to
//! `i + 1`. Applied versions are recorded in a table of the service's own (`<name>`, e.g.
//! `plantd_state_migrations`), one row per step. Each step runs in its own transaction together
//! with its row, under a transaction-level advisory lock, so several services starting against a
//! fresh database at the same moment take turns instead of both running step 1. Services append
//! new steps and never edit a released one.

use tokio_postgres::{Client, GenericClient};

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database was migrated by a newer plantd.
    #[error("database schema version {found} is newer than this binary supports ({supported})")]
    TooNew {
        /// Version recorded in the database.
        found: u32,
        /// The number of steps this binary knows.
        supported: u32,
    },
    /// PostgreSQL refused a statement.
    #[error("migration to version {version} failed: {source}")]
    Postgres {
        /// Target version of the failed step (0: reading the version).
        version: u32,
        /// Cause.
        source: tokio_postgres::Error,
    },
}

/// One schema step: SQL run as a batch (several statements allowed).
pub type Step = &'static str;

/// The highest version recorded in `table` (0 for a fresh database).
pub async fn current_version(client: &Client, table: &str) -> Result<u32, MigrationError> {
    let pg = |source| MigrationError::Postgres { version: 0, source };
    ensure_table(client, table).await.map_err(pg)?;
    let row = client
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {table}"),
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(row.get::<_, i32>(0).max(0) as u32)
}

async fn ensure_table(
    client: &impl GenericClient,
    table: &str,
) -> Result<(), tokio_postgres::Error> {
    // `table` is the service's own constant, never input.
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                 version    INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )"
        ))
        .await
}

/// Applies every step of `steps` not yet recorded in `table`. Returns the version reached, which
/// is `steps.len()`.
pub async fn migrate(
    client: &mut Client,
    table: &str,
    steps: &[Step],
) -> Result<u32, MigrationError> {
    let supported = steps.len() as u32;
    let pg = |version| move |source| MigrationError::Postgres { version, source };
    // Concurrent `CREATE TABLE IF NOT EXISTS` can still collide on the catalog: serialize it too.
    {
        let tx = client.transaction().await.map_err(pg(0))?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&table])
            .await
            .map_err(pg(0))?;
        ensure_table(&tx, table).await.map_err(pg(0))?;
        tx.commit().await.map_err(pg(0))?;
    }
    loop {
        let tx = client.transaction().await.map_err(pg(0))?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&table])
            .await
            .map_err(pg(0))?;
        let found = tx
            .query_one(
                &format!("SELECT COALESCE(MAX(version), 0) FROM {table}"),
                &[],
            )
            .await
            .map_err(pg(0))?
            .get::<_, i32>(0)
            .max(0) as u32;
        if found > supported {
            return Err(MigrationError::TooNew { found, supported });
        }
        let Some(sql) = steps.get(found as usize) else {
            return Ok(supported);
        };
        let version = found + 1;
        tx.batch_execute(sql).await.map_err(pg(version))?;
        tx.execute(
            &format!("INSERT INTO {table} (version) VALUES ($1)"),
            &[&(version as i32)],
        )
        .await
        .map_err(pg(version))?;
        tx.commit().await.map_err(pg(version))?;
        tracing::info!(table, version, "postgres schema migrated");
    }
}
