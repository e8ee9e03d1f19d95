//! `StateStore`: the scoped key/value store, on SQLite (WAL, the default) or PostgreSQL.
//!
//! Both backends take the same [`WriteOp`]s, give the same [`StoreError`]s and keep the same
//! promise: a write's receipt resolves only after the transaction holding it has committed, and
//! the committed changes go to the [`ChangePublisher`] after that.
//!
//! - [`sqlite`](self::sqlite): one writer thread with group commit, pooled readers (one host).
//! - [`postgres`](self::postgres): a few writer tasks per process batching requests into one
//!   transaction each, pooled readers; several processes on several hosts may share the database.

pub mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plantd_pg_util::PostgresConfig;
use plantd_sqlite_util::{DatabaseCheck, IntegrityError};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::changes::{ChangePublisher, NullPublisher, StateChange};
use crate::metrics::StateMetrics;
use crate::migrations::MigrationError;

/// Which database holds the state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One SQLite file (`db`), one service process.
    #[default]
    Sqlite,
    /// A PostgreSQL database (`postgres.dsn`), shared by any number of service processes.
    Postgres,
}

/// How hard a commit tries to reach the disk (SQLite; on PostgreSQL every commit is flushed,
/// `synchronous_commit=on`, whichever is chosen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// SQLite `synchronous=NORMAL`: a commit survives a process crash; a power loss may drop the last
    /// commits (never corrupts).
    #[default]
    Normal,
    /// SQLite `synchronous=FULL`: every commit is fsynced before its replies go out.
    Full,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The scope does not exist.
    #[error("scope '{0}' does not exist")]
    ScopeNotFound(String),
    /// `create-scope` on an existing scope.
    #[error("scope '{0}' already exists")]
    ScopeExists(String),
    /// The key does not exist in the scope.
    #[error("key '{key}' does not exist in scope '{scope}'")]
    KeyNotFound {
        /// Scope searched.
        scope: String,
        /// Missing key.
        key: String,
    },
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The transaction holding this write failed to commit; nothing in it was written.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The schema could not be brought up to date.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The file failed `PRAGMA quick_check` when it was opened.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// PostgreSQL failed (a statement, or the connection).
    #[error("database error: {0}")]
    Postgres(#[from] plantd_pg_util::tokio_postgres::Error),
    /// PostgreSQL could not be reached or configured.
    #[error(transparent)]
    Pg(#[from] plantd_pg_util::PgError),
    /// The PostgreSQL schema could not be brought up to date.
    #[error(transparent)]
    PgMigration(#[from] plantd_pg_util::migrations::MigrationError),
    /// The operation is not available on this backend (e.g. `backup` on PostgreSQL).
    #[error("{0}")]
    Unsupported(String),
    /// A backup target already exists (backups never overwrite).
    #[error("backup target {0} already exists")]
    BackupTargetExists(PathBuf),
    /// The store has been closed (the service is shutting down).
    #[error("the state store is closed")]
    Closed,
}

impl From<plantd_sqlite_util::OpenError> for StoreError {
    fn from(e: plantd_sqlite_util::OpenError) -> Self {
        use plantd_sqlite_util::OpenError;
        match e {
            OpenError::Io { context, source } => StoreError::Io { context, source },
            OpenError::Integrity(e) => StoreError::Integrity(e),
            OpenError::Sqlite(e) => StoreError::Sqlite(e),
            not_wal @ OpenError::NotWal { .. } => StoreError::Commit(not_wal.to_string()),
        }
    }
}

impl StoreError {
    /// True when the database itself failed (I/O, full disk, corruption), not the request: the
    /// errors that make a write fail with `STORAGE_ERROR`.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(_)
                | StoreError::Commit(_)
                | StoreError::Io { .. }
                | StoreError::Postgres(_)
                | StoreError::Pg(_)
        )
    }
}

/// Tuning of a [`StateStore`].
#[derive(Clone)]
pub struct StoreOptions {
    /// `synchronous` level of commits.
    pub durability: Durability,
    /// Most write requests committed in one transaction.
    pub max_batch: usize,
    /// Read connections kept open between requests.
    pub max_idle_readers: usize,
    /// Where commit batch sizes and latencies are recorded.
    pub metrics: Option<StateMetrics>,
    /// Who hears about committed changes.
    pub publisher: Arc<dyn ChangePublisher>,
    /// Told the outcome of every commit, so `/healthz` sees failed writes as they happen.
    pub health: Option<DatabaseCheck>,
    /// Largest the database may grow to, in bytes (SQLite's `max_page_count`); `0` = no limit.
    /// Writes that need more space fail as they would on a full disk.
    pub max_db_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Normal,
            max_batch: 1024,
            max_idle_readers: 8,
            metrics: None,
            publisher: Arc::new(NullPublisher),
            health: None,
            max_db_bytes: 0,
        }
    }
}

/// One write request.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOp {
    /// Creates a scope; `ScopeExists` if it is there.
    CreateScope {
        /// Scope name.
        scope: String,
    },
    /// Deletes a scope and all its entries; `ScopeNotFound` if missing.
    DeleteScope {
        /// Scope name.
        scope: String,
    },
    /// Sets one key (creating the scope if needed).
    Set {
        /// Scope name.
        scope: String,
        /// Key.
        key: String,
        /// JSON text.
        value: String,
    },
    /// Sets several keys of one scope atomically (creating the scope if needed).
    SetMany {
        /// Scope name.
        scope: String,
        /// `(key, JSON text)` pairs.
        entries: Vec<(String, String)>,
    },
    /// Deletes one key; `ScopeNotFound` / `KeyNotFound` if missing.
    Delete {
        /// Scope name.
        scope: String,
        /// Key.
        key: String,
    },
    /// Writes a heartbeat row: proves the database is writable and the writer alive.
    Probe,
}

/// The pending result of a write: resolves after the commit that holds it.
pub type WriteReceipt = oneshot::Receiver<Result<(), StoreError>>;

/// Handle to the store. Cheap to clone; all clones share the writer and the readers.
#[derive(Clone)]
pub struct StateStore {
    backend: Arc<Store>,
}

enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

impl StateStore {
    /// Opens (creating if needed) the SQLite database at `path`, checks its integrity (`PRAGMA
    /// quick_check`: a damaged file is [`StoreError::Integrity`]), migrates it and starts the
    /// writer thread.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        Ok(StateStore {
            backend: Arc::new(Store::Sqlite(sqlite::SqliteStore::open(path, options)?)),
        })
    }

    /// Connects to the PostgreSQL database of `config`, migrates it (under an advisory lock, so
    /// several services may start at once) and starts the writer. Blocks: call it off the async
    /// runtime.
    pub fn open_postgres(
        config: &PostgresConfig,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        Ok(StateStore {
            backend: Arc::new(Store::Postgres(postgres::PgStore::open(config, options)?)),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match &*self.backend {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite database file (an empty path on PostgreSQL).
    pub fn path(&self) -> &Path {
        match &*self.backend {
            Store::Sqlite(s) => s.path(),
            Store::Postgres(_) => Path::new(""),
        }
    }

    /// Where the store is, for logs: the SQLite file or the redacted DSN.
    pub fn location(&self) -> String {
        match &*self.backend {
            Store::Sqlite(s) => s.path().display().to_string(),
            Store::Postgres(p) => p.location().to_owned(),
        }
    }

    /// Queues a write; the receipt resolves once the transaction holding it has committed.
    pub fn submit(&self, op: WriteOp) -> WriteReceipt {
        match &*self.backend {
            Store::Sqlite(s) => s.submit(op),
            Store::Postgres(p) => p.submit(op),
        }
    }

    /// Queues a write and blocks until it is committed. Must not be called from async code.
    pub fn write_blocking(&self, op: WriteOp) -> Result<(), StoreError> {
        self.submit(op)
            .blocking_recv()
            .unwrap_or(Err(StoreError::Closed))
    }

    /// Queues a write and waits until it is committed.
    pub async fn write(&self, op: WriteOp) -> Result<(), StoreError> {
        self.submit(op).await.unwrap_or(Err(StoreError::Closed))
    }

    /// The JSON text stored under `scope`/`key`.
    pub fn get(&self, scope: &str, key: &str) -> Result<String, StoreError> {
        match &*self.backend {
            Store::Sqlite(s) => s.get(scope, key),
            Store::Postgres(p) => p.get(scope, key),
        }
    }

    /// The JSON text of each of `keys` (`None` where missing), read from one snapshot.
    pub fn get_many(
        &self,
        scope: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        match &*self.backend {
            Store::Sqlite(s) => s.get_many(scope, keys),
            Store::Postgres(p) => p.get_many(scope, keys),
        }
    }

    /// The keys of a scope, sorted (bytewise, on both backends).
    pub fn list_keys(&self, scope: &str) -> Result<Vec<String>, StoreError> {
        match &*self.backend {
            Store::Sqlite(s) => s.list_keys(scope),
            Store::Postgres(p) => p.list_keys(scope),
        }
    }

    /// Every scope, sorted (bytewise, on both backends).
    pub fn list_scopes(&self) -> Result<Vec<String>, StoreError> {
        match &*self.backend {
            Store::Sqlite(s) => s.list_scopes(),
            Store::Postgres(p) => p.list_scopes(),
        }
    }

    /// True if the scope exists.
    pub fn scope_exists(&self, scope: &str) -> Result<bool, StoreError> {
        match &*self.backend {
            Store::Sqlite(s) => s.scope_exists(scope),
            Store::Postgres(p) => p.scope_exists(scope),
        }
    }

    /// Copies a consistent snapshot of the SQLite database to `dest` with SQLite's online backup
    /// API. Never overwrites: `dest` must not exist. Returns the size of the copy in bytes. On
    /// PostgreSQL: [`StoreError::Unsupported`] (use `pg_dump`).
    pub fn backup_to(&self, dest: &Path) -> Result<u64, StoreError> {
        match &*self.backend {
            Store::Sqlite(s) => s.backup_to(dest),
            Store::Postgres(_) => Err(StoreError::Unsupported(
                "backup is not available on the PostgreSQL store: back the database up with pg_dump"
                    .into(),
            )),
        }
    }

    /// Stops the writer after it has committed everything queued so far, and waits for it.
    /// Later writes fail with [`StoreError::Closed`]; reads keep working.
    pub fn close(&self) {
        match &*self.backend {
            Store::Sqlite(s) => s.close(),
            Store::Postgres(p) => p.close(),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Tells the database check what a batch proved: a storage failure anywhere in it, or a real
/// write that reached the database. (Probe-only batches are reported by the prober.)
fn report_health<'a>(
    health: Option<&DatabaseCheck>,
    ops: impl Iterator<Item = &'a WriteOp>,
    results: &[Result<(), StoreError>],
) {
    let Some(health) = health else {
        return;
    };
    let failure = results
        .iter()
        .find_map(|r| r.as_ref().err().filter(|e| e.is_storage_failure()));
    if let Some(e) = failure {
        health.write_failed(e.to_string());
    } else if ops
        .zip(results)
        .any(|(op, r)| r.is_ok() && *op != WriteOp::Probe)
    {
        health.write_succeeded();
    }
}

/// The notifications a successful `op` produces.
fn changes_of(op: &WriteOp, time_ms: i64, out: &mut Vec<StateChange>) {
    let change = |scope: &str, key: Option<&str>, value: Option<&str>, deleted| StateChange {
        scope: scope.to_owned(),
        key: key.map(str::to_owned),
        value_json: value.map(str::to_owned),
        deleted,
        time_ms,
    };
    match op {
        WriteOp::CreateScope { scope } => out.push(change(scope, None, None, false)),
        WriteOp::DeleteScope { scope } => out.push(change(scope, None, None, true)),
        WriteOp::Set { scope, key, value } => {
            out.push(change(scope, Some(key), Some(value), false))
        }
        WriteOp::SetMany { scope, entries } => out.extend(
            entries
                .iter()
                .map(|(key, value)| change(scope, Some(key), Some(value), false)),
        ),
        WriteOp::Delete { scope, key } => out.push(change(scope, Some(key), None, true)),
        WriteOp::Probe => {}
    }
}

#[cfg(test)]
mod tests;
