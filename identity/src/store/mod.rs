//! `Store`: the identity database (SQLite, WAL) behind one writer thread.
//!
//! Every write is a closure run on the writer thread, which owns the only write connection. It
//! takes every job queued so far, runs each inside its own savepoint of one transaction (so one
//! failing job does not undo its neighbours), commits once (group commit), and only then hands
//! each job its result: a reply that says "done" means the change is in the database. Reads use a
//! small pool of read-only connections beside the writer, which WAL allows.
//!
//! The submodules hold the queries of one table family each; they take a `&Connection`, so the
//! same function serves a read on the pool and a step of a write job.

pub mod api_keys;
pub mod audit;
pub mod keys;
pub mod notices;
pub mod orgs;
pub mod roles;
pub mod sessions;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use plantd_sqlite_util::{open_reader, open_writer, DatabaseCheck, IntegrityError};
use plantd_sqlite_util::{OpenError, WriterSettings};
use rusqlite::Connection;

use crate::migrations::{self, MigrationError};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 256;
/// Read connections kept open between requests.
const MAX_IDLE_READERS: usize = 8;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist (the message says which).
    #[error("{0}")]
    NotFound(String),
    /// A unique name is taken or the row exists already (the message says which).
    #[error("{0}")]
    Conflict(String),
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
    /// A stored value could not be decoded (a damaged row).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The store has been closed (the service is shutting down).
    #[error("the identity store is closed")]
    Closed,
}

impl StoreError {
    /// True when the database itself failed, not the request.
    pub fn is_storage_failure(&self) -> bool {
        !matches!(self, StoreError::NotFound(_) | StoreError::Conflict(_))
    }
}

/// True if `e` is a UNIQUE or PRIMARY KEY violation.
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// What a job hands back to the writer: a continuation told whether the commit succeeded.
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;
/// One write job: runs inside a savepoint on the writer connection (`None`: no transaction could
/// be started, so it does not run).
type Job = Box<dyn FnOnce(Option<&Connection>) -> Deliver + Send>;

enum WriterMsg {
    Job(Job),
    Shutdown,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<WriterMsg>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
}

/// Handle to the store. Cheap to clone; clones share the writer thread and the reader pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (creating, mode 0600, if needed) the database at `path`, checks its integrity,
    /// migrates it and starts the writer thread. `health` hears about every commit.
    pub fn open(path: impl AsRef<Path>, health: Option<DatabaseCheck>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let settings = WriterSettings {
            // FULL: a revocation or a used refresh token that was acknowledged must survive a
            // power loss, or a stolen refresh token could be replayed after a crash.
            synchronous: "FULL",
            // It holds password hashes and signing keys.
            private: true,
        };
        let mut conn = open_writer(&path, settings)?;
        migrations::migrate(&mut conn)?;

        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("identity-writer".into())
            .spawn(move || writer(conn, rx, health))
            .map_err(|source| StoreError::Io {
                context: "cannot start the writer thread".into(),
                source,
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                writer: tx,
                writer_thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer connection and blocks until the transaction holding it has
    /// committed. Must not be called from async code (use `spawn_blocking`).
    pub fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, receipt) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let result = conn.map(|conn| in_savepoint(conn, f));
            Box::new(move |commit: Result<(), String>| {
                let result = match (commit, result) {
                    (Ok(()), Some(result)) => result,
                    (Err(message), _) => Err(StoreError::Commit(message)),
                    (Ok(()), None) => Err(StoreError::Commit("the job did not run".into())),
                };
                let _ = done.send(result);
            })
        });
        if self.inner.writer.send(WriterMsg::Job(job)).is_err() {
            return Err(StoreError::Closed);
        }
        receipt.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Runs `f` with a pooled read-only connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.inner.path)?,
        };
        let result = f(&conn);
        let mut readers = self.inner.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        result
    }

    /// A write that proves the database is writable and the writer alive (`/healthz`).
    pub fn probe(&self) -> Result<(), StoreError> {
        self.write(|conn| {
            conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('health_probe', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([now_ms().to_string()])?;
            Ok(())
        })
    }

    /// Stops the writer after it has committed everything queued so far, and waits for it.
    pub fn close(&self) {
        let _ = self.inner.writer.send(WriterMsg::Shutdown);
        let thread = self
            .inner
            .writer_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl From<OpenError> for StoreError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Io { context, source } => StoreError::Io { context, source },
            OpenError::Integrity(e) => StoreError::Integrity(e),
            OpenError::Sqlite(e) => StoreError::Sqlite(e),
            not_wal @ OpenError::NotWal { .. } => StoreError::Commit(not_wal.to_string()),
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Runs `f` in a savepoint, rolled back if `f` fails.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f(conn) {
        Ok(value) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(e) => {
            // Nothing is left to undo if SQLite already rolled the whole transaction back.
            if !conn.is_autocommit() {
                conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
                conn.prepare_cached("RELEASE job")?.execute([])?;
            }
            Err(e)
        }
    }
}

/// The writer thread: group commits until shutdown.
fn writer(conn: Connection, rx: mpsc::Receiver<WriterMsg>, health: Option<DatabaseCheck>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        let mut stop = match rx.recv() {
            Ok(WriterMsg::Job(job)) => {
                batch.push(job);
                false
            }
            Ok(WriterMsg::Shutdown) | Err(_) => true,
        };
        while !stop && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                Ok(WriterMsg::Shutdown) => stop = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, &mut batch, health.as_ref());
        }
        if stop {
            break;
        }
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Job>, health: Option<&DatabaseCheck>) {
    let mut delivers: Vec<Deliver> = Vec::with_capacity(batch.len());
    let outcome = match conn.execute_batch("BEGIN IMMEDIATE") {
        Err(e) => {
            // No transaction: every job fails without running.
            delivers.extend(batch.drain(..).map(|job| job(None)));
            Err(e.to_string())
        }
        Ok(()) => {
            for job in batch.drain(..) {
                delivers.push(job(Some(conn)));
            }
            if conn.is_autocommit() {
                // SQLite rolled the transaction back itself (full disk, I/O error).
                Err("the transaction was rolled back by SQLite".to_owned())
            } else {
                conn.execute_batch("COMMIT").map_err(|e| e.to_string())
            }
        }
    };
    if let Err(message) = &outcome {
        let _ = conn.execute_batch("ROLLBACK");
        tracing::error!(error = %message, "identity commit failed");
    }
    if let Some(health) = health {
        match &outcome {
            Ok(()) => health.write_succeeded(),
            Err(message) => health.write_failed(message.clone()),
        }
    }
    for deliver in delivers {
        deliver(outcome.clone());
    }
}
