//! The SQLite backend of [`StateStore`](super::StateStore) (WAL).
//!
//! Writes go through one writer thread that owns the only write connection. It drains every write
//! request queued so far, applies them in one transaction (each inside its own savepoint, so one
//! failing request does not undo its neighbours), commits once (group commit), and only then
//! releases the replies: a successful reply means the write is in the database under the configured
//! durability. Reads use a small pool of separate connections, which WAL lets run alongside the
//! writer. Values are stored as JSON text exactly as the client sent them.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use plantd_sqlite_util::{open_reader, open_writer, DatabaseCheck, WriterSettings};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{changes_of, now_ms, Durability, StoreError, StoreOptions, WriteOp, WriteReceipt};
use crate::changes::ChangePublisher;
use crate::metrics::StateMetrics;
use crate::migrations;

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

struct WriteJob {
    op: WriteOp,
    done: oneshot::Sender<Result<(), StoreError>>,
}

enum WriterMsg {
    Job(WriteJob),
    Shutdown,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<WriterMsg>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    max_idle_readers: usize,
}

/// The SQLite backend. Cheap to clone; all clones share the writer thread and reader pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, checks its integrity (`PRAGMA
    /// quick_check`: a damaged file is [`StoreError::Integrity`]), migrates it and starts the
    /// writer thread.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let settings = WriterSettings {
            synchronous: options.durability.pragma(),
            // Services keep what they like in their scopes: nobody else's to read.
            private: true,
        };
        let mut conn = open_writer(&path, settings)?;
        migrations::migrate(&mut conn)?;
        if options.max_db_bytes > 0 {
            let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
            let pages = (options.max_db_bytes / page_size.max(1) as u64).max(1);
            // Per connection, and only the writer writes. SQLite never sets it below the
            // current size.
            conn.pragma_update(
                None,
                "max_page_count",
                i64::try_from(pages).unwrap_or(i64::MAX),
            )?;
        }

        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            conn,
            max_batch: options.max_batch.max(1),
            metrics: options.metrics,
            publisher: options.publisher,
            health: options.health,
        };
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| StoreError::Io {
                context: "cannot start the writer thread".into(),
                source,
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: tx,
                writer_thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
                max_idle_readers: options.max_idle_readers,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queues a write; the receipt resolves once the transaction holding it has committed.
    pub fn submit(&self, op: WriteOp) -> WriteReceipt {
        let (done, receipt) = oneshot::channel();
        // If the writer is gone the job (and its sender) is dropped, and the receipt reports Closed.
        let _ = self
            .inner
            .writer
            .send(WriterMsg::Job(WriteJob { op, done }));
        receipt
    }

    /// The JSON text stored under `scope`/`key`.
    pub fn get(&self, scope: &str, key: &str) -> Result<String, StoreError> {
        self.with_reader(|conn| {
            let value: Option<String> = conn
                .prepare_cached("SELECT value FROM entries WHERE scope = ?1 AND key = ?2")?
                .query_row(params![scope, key], |row| row.get(0))
                .optional()?;
            match value {
                Some(v) => Ok(v),
                None if scope_exists(conn, scope)? => Err(StoreError::KeyNotFound {
                    scope: scope.to_owned(),
                    key: key.to_owned(),
                }),
                None => Err(StoreError::ScopeNotFound(scope.to_owned())),
            }
        })
    }

    /// The JSON text of each of `keys` (`None` where missing), read from one snapshot.
    pub fn get_many(
        &self,
        scope: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        self.with_reader(|conn| {
            let tx = conn.transaction()?;
            if !scope_exists(&tx, scope)? {
                return Err(StoreError::ScopeNotFound(scope.to_owned()));
            }
            let mut values = Vec::with_capacity(keys.len());
            {
                let mut stmt =
                    tx.prepare_cached("SELECT value FROM entries WHERE scope = ?1 AND key = ?2")?;
                for key in keys {
                    values.push(
                        stmt.query_row(params![scope, key], |row| row.get(0))
                            .optional()?,
                    );
                }
            }
            tx.finish()?;
            Ok(values)
        })
    }

    /// The keys of a scope, sorted.
    pub fn list_keys(&self, scope: &str) -> Result<Vec<String>, StoreError> {
        self.with_reader(|conn| {
            let tx = conn.transaction()?;
            if !scope_exists(&tx, scope)? {
                return Err(StoreError::ScopeNotFound(scope.to_owned()));
            }
            let keys = tx
                .prepare_cached("SELECT key FROM entries WHERE scope = ?1 ORDER BY key")?
                .query_map([scope], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            tx.finish()?;
            Ok(keys)
        })
    }

    /// Every scope, sorted.
    pub fn list_scopes(&self) -> Result<Vec<String>, StoreError> {
        self.with_reader(|conn| {
            Ok(conn
                .prepare_cached("SELECT name FROM scopes ORDER BY name")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()?)
        })
    }

    /// True if the scope exists.
    pub fn scope_exists(&self, scope: &str) -> Result<bool, StoreError> {
        self.with_reader(|conn| scope_exists(conn, scope))
    }

    /// Copies a consistent snapshot of the database to `dest` with SQLite's online backup API.
    /// Never overwrites: `dest` must not exist. Returns the size of the copy in bytes.
    pub fn backup_to(&self, dest: &Path) -> Result<u64, StoreError> {
        self.with_reader(|conn| crate::backup::online_backup(conn, dest))
    }

    /// Stops the writer after it has committed everything queued so far, and waits for it.
    /// Later writes fail with [`StoreError::Closed`]; reads keep working.
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

    /// Runs `f` with a pooled read connection.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.inner.path)?,
        };
        let result = f(&mut conn);
        let mut readers = self.inner.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < self.inner.max_idle_readers {
            readers.push(conn);
        }
        result
    }
}

fn scope_exists(conn: &Connection, scope: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM scopes WHERE name = ?1")?
        .query_row([scope], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    max_batch: usize,
    metrics: Option<StateMetrics>,
    publisher: Arc<dyn ChangePublisher>,
    health: Option<DatabaseCheck>,
}

impl Writer {
    fn run(self, rx: mpsc::Receiver<WriterMsg>) {
        let mut batch: Vec<WriteJob> = Vec::with_capacity(self.max_batch);
        loop {
            let mut stop = match rx.recv() {
                Ok(WriterMsg::Job(job)) => {
                    batch.push(job);
                    false
                }
                Ok(WriterMsg::Shutdown) | Err(_) => true,
            };
            // Group commit: take whatever else is already waiting.
            while !stop && batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(WriterMsg::Job(job)) => batch.push(job),
                    Ok(WriterMsg::Shutdown) => stop = true,
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch);
            }
            if stop {
                break;
            }
        }
        // Best effort: fold the WAL back so the file alone is a complete copy after shutdown.
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }

    fn commit_batch(&self, batch: &mut Vec<WriteJob>) {
        let started = Instant::now();
        let now = now_ms();
        let publish = self.publisher.enabled();
        let mut results: Vec<Result<(), StoreError>> = Vec::with_capacity(batch.len());
        let mut changes = Vec::new();

        let mut run = || -> Result<(), String> {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| e.to_string())?;
            for job in batch.iter() {
                let result = self.apply_in_savepoint(&job.op, now);
                if let Err(e) = &result {
                    if self.conn.is_autocommit() {
                        // SQLite rolled the whole transaction back itself (it may on a full disk
                        // or an I/O error): nothing of the batch is written, and later jobs
                        // would each commit on their own outside it.
                        return Err(e.to_string());
                    }
                }
                if publish && result.is_ok() {
                    changes_of(&job.op, now, &mut changes);
                }
                results.push(result);
            }
            self.conn.execute_batch("COMMIT").map_err(|e| e.to_string())
        };
        if let Err(message) = run() {
            let _ = self.conn.execute_batch("ROLLBACK");
            results.clear();
            results.extend(
                batch
                    .iter()
                    .map(|_| Err(StoreError::Commit(message.clone()))),
            );
            changes.clear();
            tracing::error!(error = %message, jobs = batch.len(), "state commit failed");
        }

        // Before the replies go out: a client that got STORAGE_ERROR finds `/healthz` DOWN.
        super::report_health(
            self.health.as_ref(),
            batch.iter().map(|job| &job.op),
            &results,
        );
        if let Some(metrics) = &self.metrics {
            metrics.commit_batch_size.observe(batch.len() as f64);
            metrics
                .commit_duration
                .observe(started.elapsed().as_secs_f64());
        }
        for (job, result) in batch.drain(..).zip(results) {
            // The requester may have given up; that is not our failure.
            let _ = job.done.send(result);
        }
        if !changes.is_empty() {
            self.publisher.publish(changes);
        }
    }

    /// Applies one request inside a savepoint so its failure leaves the rest of the batch intact.
    fn apply_in_savepoint(&self, op: &WriteOp, now: i64) -> Result<(), StoreError> {
        self.conn.prepare_cached("SAVEPOINT job")?.execute([])?;
        match self.apply(op, now) {
            Ok(()) => {
                self.conn.prepare_cached("RELEASE job")?.execute([])?;
                Ok(())
            }
            Err(e) => {
                // No savepoint is left to undo if SQLite already rolled the transaction back.
                if !self.conn.is_autocommit() {
                    self.conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
                    self.conn.prepare_cached("RELEASE job")?.execute([])?;
                }
                Err(e)
            }
        }
    }

    fn apply(&self, op: &WriteOp, now: i64) -> Result<(), StoreError> {
        let conn = &self.conn;
        match op {
            WriteOp::CreateScope { scope } => {
                if ensure_scope(conn, scope, now)? {
                    Ok(())
                } else {
                    Err(StoreError::ScopeExists(scope.clone()))
                }
            }
            WriteOp::DeleteScope { scope } => {
                // Entries go with it (ON DELETE CASCADE).
                let n = conn
                    .prepare_cached("DELETE FROM scopes WHERE name = ?1")?
                    .execute([scope])?;
                if n == 0 {
                    return Err(StoreError::ScopeNotFound(scope.clone()));
                }
                Ok(())
            }
            WriteOp::Set { scope, key, value } => {
                ensure_scope(conn, scope, now)?;
                upsert(conn, scope, key, value, now)
            }
            WriteOp::SetMany { scope, entries } => {
                ensure_scope(conn, scope, now)?;
                for (key, value) in entries {
                    upsert(conn, scope, key, value, now)?;
                }
                Ok(())
            }
            WriteOp::Delete { scope, key } => {
                let n = conn
                    .prepare_cached("DELETE FROM entries WHERE scope = ?1 AND key = ?2")?
                    .execute([scope, key])?;
                if n > 0 {
                    Ok(())
                } else if scope_exists(conn, scope)? {
                    Err(StoreError::KeyNotFound {
                        scope: scope.clone(),
                        key: key.clone(),
                    })
                } else {
                    Err(StoreError::ScopeNotFound(scope.clone()))
                }
            }
            WriteOp::Probe => {
                conn.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('health_probe', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute([now.to_string()])?;
                Ok(())
            }
        }
    }
}

/// Creates `scope` if missing; true if it was created.
fn ensure_scope(conn: &Connection, scope: &str, now: i64) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO scopes (name, created_at, updated_at) VALUES (?1, ?2, ?2)
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![scope, now])?;
    Ok(n > 0)
}

fn upsert(
    conn: &Connection,
    scope: &str,
    key: &str,
    value: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO entries (scope, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )?
    .execute(params![scope, key, value, now])?;
    Ok(())
}
