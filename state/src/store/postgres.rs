//! The PostgreSQL backend of [`StateStore`](super::StateStore).
//!
//! A few writer tasks per process take turns at the queue: each takes every write request queued
//! so far and applies them in one transaction, then commits, and only then releases the replies
//! (group commit, as on SQLite; while one waits for its commit the next gathers a batch): a
//! successful reply means the write is committed (`synchronous_commit=on` on every connection).
//! Runs of `state-set`/`state-set-many` are applied as one multi-row `INSERT ... ON CONFLICT`
//! (last write of a key in the run wins, as applying them one by one would), with rows in key
//! order, so two processes writing overlapping keys lock them in the same order.
//!
//! Several processes (on several hosts) may serve one database: every write is a single
//! statement that is atomic on its own (`INSERT ... ON CONFLICT`, `DELETE`), nothing reads a value
//! to write it back, and a transaction that loses a race (a deadlock, a serialization failure, a
//! scope deleted under a concurrent set) is rolled back and retried whole, so no request is lost
//! or half-applied. Multi-key reads run in one `REPEATABLE READ` snapshot.
//!
//! The backend runs its own small tokio runtime, so its blocking methods work from the service's
//! handler threads and its connections do not depend on the caller's runtime.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plantd_pg_util::deadpool_postgres::Transaction;
use plantd_pg_util::tokio_postgres::{self, IsolationLevel};
use plantd_pg_util::{migrations, Pool, PostgresConfig};
use plantd_sqlite_util::DatabaseCheck;
use tokio::sync::{mpsc, oneshot};

use super::{changes_of, now_ms, StoreError, StoreOptions, WriteOp, WriteReceipt};
use crate::changes::ChangePublisher;
use crate::metrics::StateMetrics;

/// Table recording the applied schema steps.
pub const MIGRATIONS_TABLE: &str = "plantd_state_migrations";

/// The schema, one step per entry (see `plantd_pg_util::migrations`). Append; never edit.
/// Names sort bytewise (`COLLATE "C"`), as SQLite's do.
pub const MIGRATIONS: &[migrations::Step] = &[
    // 1: scopes, entries (values are JSON text exactly as sent), the service's own bookkeeping.
    r#"CREATE TABLE scopes (
        name        TEXT COLLATE "C" PRIMARY KEY,
        created_at  BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL
    );
    CREATE TABLE entries (
        scope       TEXT COLLATE "C" NOT NULL REFERENCES scopes(name) ON DELETE CASCADE,
        key         TEXT COLLATE "C" NOT NULL,
        value       TEXT NOT NULL,
        updated_at  BIGINT NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE TABLE meta (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL
    );"#,
];

/// Attempts of one batch that keeps losing races before its requests fail.
const MAX_ATTEMPTS: u32 = 20;
/// Writer tasks per process: while one waits for its `COMMIT` to be flushed, the next gathers and
/// applies the following batch (PostgreSQL flushes concurrent commits together).
const WRITERS: usize = 4;

const ENSURE_SCOPES: &str = "INSERT INTO scopes (name, created_at, updated_at)
     SELECT name, $2, $2 FROM unnest($1::text[]) AS t(name)
     ON CONFLICT (name) DO NOTHING";
const UPSERT_ENTRIES: &str = "INSERT INTO entries (scope, key, value, updated_at)
     SELECT s, k, v, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS t(s, k, v)
     ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
const CREATE_SCOPE: &str = "INSERT INTO scopes (name, created_at, updated_at) VALUES ($1, $2, $2)
     ON CONFLICT (name) DO NOTHING";
const DELETE_SCOPE: &str = "DELETE FROM scopes WHERE name = $1";
const DELETE_ENTRY: &str = "DELETE FROM entries WHERE scope = $1 AND key = $2";
const SCOPE_EXISTS: &str = "SELECT 1 FROM scopes WHERE name = $1";
const PROBE: &str = "INSERT INTO meta (key, value) VALUES ('health_probe', $1)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

struct WriteJob {
    op: WriteOp,
    done: oneshot::Sender<Result<(), StoreError>>,
}

enum WriterMsg {
    Job(WriteJob),
    Shutdown,
}

struct Inner {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    location: String,
    writer: mpsc::UnboundedSender<WriterMsg>,
    writer_done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Never blocks, so dropping the last handle is fine anywhere (even in async code).
        if let Some(runtime) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            runtime.shutdown_background();
        }
    }
}

/// The PostgreSQL backend. Cheap to clone; all clones share the writer and the pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl PgStore {
    /// Connects, migrates and starts the writer. Blocks until the database answered.
    pub fn open(config: &PostgresConfig, options: StoreOptions) -> Result<Self, StoreError> {
        let mut pg = config.pg_config()?;
        // A reply of success follows a commit that is on disk, whatever the server's default.
        pg.options("-c synchronous_commit=on");
        let pool_config = PostgresConfig {
            pool_size: config.pool_size.max(2),
            ..config.clone()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("state-postgres")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                context: "cannot start the PostgreSQL runtime".into(),
                source,
            })?;
        let handle = runtime.handle().clone();
        let pool = {
            let _guard = runtime.enter();
            plantd_pg_util::config::pool_from(pg, &pool_config)?
        };
        let location = config.redacted_dsn();
        {
            let (pool, config) = (pool.clone(), config.clone());
            runtime.block_on(async move {
                let mut client = config.connect(&pool).await?;
                migrations::migrate(&mut client, MIGRATIONS_TABLE, MIGRATIONS).await?;
                Ok::<_, StoreError>(())
            })?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(WRITERS);
        for _ in 0..WRITERS {
            let writer = Writer {
                pool: pool.clone(),
                max_batch: options.max_batch.max(1),
                metrics: options.metrics.clone(),
                publisher: options.publisher.clone(),
                health: options.health.clone(),
            };
            let (rx, done_tx) = (rx.clone(), done_tx.clone());
            runtime.spawn(async move {
                writer.run(rx).await;
                let _ = done_tx.send(());
            });
        }
        Ok(PgStore {
            inner: Arc::new(Inner {
                runtime: Mutex::new(Some(runtime)),
                handle,
                pool,
                location,
                writer: tx,
                writer_done: Mutex::new(Some(done_rx)),
            }),
        })
    }

    /// The redacted DSN.
    pub fn location(&self) -> &str {
        &self.inner.location
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

    /// Runs `f` with a pooled connection on the backend's runtime and waits for it.
    fn read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(plantd_pg_util::PooledClient) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        let pool = self.inner.pool.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.inner.handle.spawn(async move {
            let result = match pool.get().await {
                Ok(client) => f(client).await,
                Err(e) => Err(StoreError::Commit(format!("no PostgreSQL connection: {e}"))),
            };
            let _ = tx.send(result);
        });
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// The JSON text stored under `scope`/`key`.
    pub fn get(&self, scope: &str, key: &str) -> Result<String, StoreError> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.read(move |client| async move {
            let stmt = client
                .prepare_cached("SELECT value FROM entries WHERE scope = $1 AND key = $2")
                .await?;
            match client.query_opt(&stmt, &[&scope, &key]).await? {
                Some(row) => Ok(row.get(0)),
                None if scope_exists(&client, &scope).await? => {
                    Err(StoreError::KeyNotFound { scope, key })
                }
                None => Err(StoreError::ScopeNotFound(scope)),
            }
        })
    }

    /// The JSON text of each of `keys` (`None` where missing), read from one snapshot.
    pub fn get_many(
        &self,
        scope: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let (scope, keys) = (scope.to_owned(), keys.to_vec());
        self.read(move |mut client| async move {
            let tx = snapshot(&mut client).await?;
            if !scope_exists(&tx, &scope).await? {
                return Err(StoreError::ScopeNotFound(scope));
            }
            let rows = tx
                .query(
                    "SELECT key, value FROM entries WHERE scope = $1 AND key = ANY($2)",
                    &[&scope, &keys],
                )
                .await?;
            tx.commit().await?;
            let mut found: BTreeMap<String, String> =
                rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
            Ok(keys.iter().map(|k| found.remove(k)).collect())
        })
    }

    /// The keys of a scope, sorted.
    pub fn list_keys(&self, scope: &str) -> Result<Vec<String>, StoreError> {
        let scope = scope.to_owned();
        self.read(move |mut client| async move {
            let tx = snapshot(&mut client).await?;
            if !scope_exists(&tx, &scope).await? {
                return Err(StoreError::ScopeNotFound(scope));
            }
            let rows = tx
                .query(
                    "SELECT key FROM entries WHERE scope = $1 ORDER BY key",
                    &[&scope],
                )
                .await?;
            tx.commit().await?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    /// Every scope, sorted.
    pub fn list_scopes(&self) -> Result<Vec<String>, StoreError> {
        self.read(move |client| async move {
            let rows = client
                .query("SELECT name FROM scopes ORDER BY name", &[])
                .await?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    /// True if the scope exists.
    pub fn scope_exists(&self, scope: &str) -> Result<bool, StoreError> {
        let scope = scope.to_owned();
        self.read(move |client| async move { scope_exists(&client, &scope).await })
    }

    /// Stops the writer after it has committed everything queued so far, and waits for it.
    pub fn close(&self) {
        let _ = self.inner.writer.send(WriterMsg::Shutdown);
        let done = self
            .inner
            .writer_done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(done) = done {
            for _ in 0..WRITERS {
                let _ = done.recv();
            }
        }
    }
}

async fn snapshot(
    client: &mut plantd_pg_util::PooledClient,
) -> Result<Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

async fn scope_exists(
    client: &impl plantd_pg_util::deadpool_postgres::GenericClient,
    scope: &str,
) -> Result<bool, StoreError> {
    Ok(client.query_opt(SCOPE_EXISTS, &[&scope]).await?.is_some())
}

/// The writer task's state.
struct Writer {
    pool: Pool,
    max_batch: usize,
    metrics: Option<StateMetrics>,
    publisher: Arc<dyn ChangePublisher>,
    health: Option<DatabaseCheck>,
}

impl Writer {
    /// Takes batches from the queue it shares with the other writers until the queue is closed
    /// (a `Shutdown` closes it for all of them; what was queued before is still committed).
    async fn run(self, rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<WriterMsg>>>) {
        let mut batch: Vec<WriteJob> = Vec::with_capacity(self.max_batch);
        loop {
            let mut stop = false;
            {
                let mut rx = rx.lock().await;
                match rx.recv().await {
                    Some(WriterMsg::Job(job)) => batch.push(job),
                    Some(WriterMsg::Shutdown) => rx.close(),
                    None => stop = true,
                }
                // Group commit: take whatever else is already waiting.
                while batch.len() < self.max_batch {
                    match rx.try_recv() {
                        Ok(WriterMsg::Job(job)) => batch.push(job),
                        Ok(WriterMsg::Shutdown) => rx.close(),
                        Err(_) => break,
                    }
                }
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch).await;
            }
            if stop {
                break;
            }
        }
    }

    async fn commit_batch(&self, batch: &mut Vec<WriteJob>) {
        let started = Instant::now();
        let now = now_ms();
        let ops: Vec<&WriteOp> = batch.iter().map(|job| &job.op).collect();
        let mut attempt = 0;
        let results = loop {
            attempt += 1;
            match self.apply_batch(&ops, now).await {
                Ok(results) => break results,
                Err(Failure::Retry(e)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "state transaction lost a race; retrying");
                    // A little jitter so two losers do not collide again in lockstep.
                    let ms = 1 + (now as u64 + u64::from(attempt) * 7) % (5 * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Err(Failure::Retry(e) | Failure::Fatal(e)) => {
                    tracing::error!(error = %e, jobs = batch.len(), "state commit failed");
                    break batch
                        .iter()
                        .map(|_| Err(StoreError::Commit(e.clone())))
                        .collect();
                }
            }
        };
        let mut changes = Vec::new();
        if self.publisher.enabled() {
            for (op, result) in ops.iter().zip(&results) {
                if result.is_ok() {
                    changes_of(op, now, &mut changes);
                }
            }
        }
        // Before the replies go out: a client that got STORAGE_ERROR finds `/healthz` DOWN.
        super::report_health(self.health.as_ref(), ops.into_iter(), &results);
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

    /// One attempt at the whole batch in one transaction: the per-request outcomes once
    /// committed, or why nothing was.
    async fn apply_batch(
        &self,
        ops: &[&WriteOp],
        now: i64,
    ) -> Result<Vec<Result<(), StoreError>>, Failure> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| Failure::Fatal(format!("no PostgreSQL connection: {e}")))?;
        let tx = client.transaction().await.map_err(Failure::from)?;
        let mut results = Vec::with_capacity(ops.len());
        let mut run = SetRun::default();
        for op in ops {
            let result = match op {
                WriteOp::Set { scope, key, value } => {
                    run.add(scope, key, value);
                    Ok(())
                }
                WriteOp::SetMany { scope, entries } => {
                    for (key, value) in entries {
                        run.add(scope, key, value);
                    }
                    Ok(())
                }
                other => {
                    run.flush(&tx, now).await?;
                    apply_one(&tx, other, now).await?
                }
            };
            results.push(result);
        }
        run.flush(&tx, now).await?;
        tx.commit().await.map_err(Failure::from)?;
        Ok(results)
    }
}

/// Why a batch was not committed.
enum Failure {
    /// Lost a race with another writer: try the whole batch again.
    Retry(String),
    /// The database failed: every request in the batch fails.
    Fatal(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        if plantd_pg_util::is_retryable(&e) {
            Failure::Retry(e.to_string())
        } else {
            Failure::Fatal(e.to_string())
        }
    }
}

/// Consecutive sets, applied together: the last value of each key wins, rows go in key order.
#[derive(Default)]
struct SetRun {
    entries: BTreeMap<(String, String), String>,
}

impl SetRun {
    fn add(&mut self, scope: &str, key: &str, value: &str) {
        self.entries
            .insert((scope.to_owned(), key.to_owned()), value.to_owned());
    }

    async fn flush(&mut self, tx: &Transaction<'_>, now: i64) -> Result<(), Failure> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.entries);
        let mut scopes: Vec<&str> = entries.keys().map(|(s, _)| s.as_str()).collect();
        scopes.dedup();
        let ensure = tx.prepare_cached(ENSURE_SCOPES).await?;
        tx.execute(&ensure, &[&scopes, &now]).await?;
        let (mut s, mut k, mut v) = (
            Vec::with_capacity(entries.len()),
            Vec::with_capacity(entries.len()),
            Vec::with_capacity(entries.len()),
        );
        for ((scope, key), value) in &entries {
            s.push(scope.as_str());
            k.push(key.as_str());
            v.push(value.as_str());
        }
        let upsert = tx.prepare_cached(UPSERT_ENTRIES).await?;
        tx.execute(&upsert, &[&s, &k, &v, &now]).await?;
        Ok(())
    }
}

/// Applies a request that is not a set; `Ok(Err(..))` is the request's own failure (missing
/// scope, ...), which leaves the rest of the batch alone.
async fn apply_one(
    tx: &Transaction<'_>,
    op: &WriteOp,
    now: i64,
) -> Result<Result<(), StoreError>, Failure> {
    Ok(match op {
        WriteOp::CreateScope { scope } => {
            let stmt = tx.prepare_cached(CREATE_SCOPE).await?;
            if tx.execute(&stmt, &[scope, &now]).await? > 0 {
                Ok(())
            } else {
                Err(StoreError::ScopeExists(scope.clone()))
            }
        }
        WriteOp::DeleteScope { scope } => {
            // Entries go with it (ON DELETE CASCADE).
            let stmt = tx.prepare_cached(DELETE_SCOPE).await?;
            if tx.execute(&stmt, &[scope]).await? > 0 {
                Ok(())
            } else {
                Err(StoreError::ScopeNotFound(scope.clone()))
            }
        }
        WriteOp::Delete { scope, key } => {
            let stmt = tx.prepare_cached(DELETE_ENTRY).await?;
            if tx.execute(&stmt, &[scope, key]).await? > 0 {
                Ok(())
            } else {
                let stmt = tx.prepare_cached(SCOPE_EXISTS).await?;
                if tx.query_opt(&stmt, &[scope]).await?.is_some() {
                    Err(StoreError::KeyNotFound {
                        scope: scope.clone(),
                        key: key.clone(),
                    })
                } else {
                    Err(StoreError::ScopeNotFound(scope.clone()))
                }
            }
        }
        WriteOp::Probe => {
            let stmt = tx.prepare_cached(PROBE).await?;
            tx.execute(&stmt, &[&now.to_string()]).await?;
            Ok(())
        }
        // The caller applies sets in runs ([`SetRun`]); nothing is left to do for them here.
        WriteOp::Set { .. } | WriteOp::SetMany { .. } => Ok(()),
    })
}
