//! plantd logger: subscribes to the broker's buses and stores what flows on them in SQLite or
//! PostgreSQL (`store: postgres`), and answers queries about it as the MDP worker
//! `org.plantd.Logger`.
//!
//! - [`ingest`]: one thread per bus; classifies each message as a metric or an event.
//! - [`store`]: schema, the batching writer thread, retention, queries.
//! - [`ops`]: the MDP operations (`metrics-query`, `metrics-summary`, `events-query`, `stats`).
//! - [`metrics`]: Prometheus metrics; [`config`]: settings.
//! - [`migrate`]: `migrate-to-postgres`, copying a SQLite file into PostgreSQL.
//!
//! See `docs/logger.md` for the operator's view.

pub mod config;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod migrate;
pub mod ops;
pub mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plantd_sqlite_util::{integrity, DatabaseCheck};
use plantd_worker_sdk::health::{self, Health};
use plantd_worker_sdk::{Shutdown, Worker};

pub use config::{BusSubscription, LoggerConfig};
pub use error::LoggerError;

/// The MDP service name.
pub const SERVICE: &str = "org.plantd.Logger";

/// Runs the logger until `shutdown` is cancelled: health server, writer, one ingest thread per bus
/// and the query worker. Returns after everything received has been committed.
pub async fn run(config: LoggerConfig, shutdown: Shutdown) -> Result<(), LoggerError> {
    config.validate()?;
    let (sink, queries) = open_store(&config).await?;
    let metrics = metrics::LoggerMetrics::new();
    let health = Health::new(env!("CARGO_PKG_VERSION"));
    let database = DatabaseCheck::new(health.check("database"));
    let subscribed = health.check("subscribed");
    let broker = health.check("broker_connection");

    // Our own token, so a failure here stops our parts without cancelling the caller's.
    let local = shutdown.child_token();
    let server = health::serve(
        config.health_addr()?,
        health.clone(),
        metrics.registry().clone(),
        local.clone(),
    )
    .await?;
    let server = tokio::spawn(server);
    // `PRAGMA quick_check` is SQLite's; PostgreSQL checks its own pages.
    let integrity = (config.store == store::Backend::Sqlite).then(|| {
        tokio::spawn(integrity::watch(
            config.db.clone(),
            Some(Duration::from_secs(config.integrity_check_interval_secs)),
            database.clone(),
            local.clone(),
        ))
    });

    // Bounded: if SQLite falls behind, ingest blocks and the bus sockets' own queues take over.
    let (records_tx, records_rx) =
        std::sync::mpsc::sync_channel(config.batch_size.saturating_mul(8).clamp(1024, 200_000));
    let writer = store::spawn_writer(
        sink,
        records_rx,
        store::WriterSettings {
            batch_size: config.batch_size,
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            retention: config.retention(),
        },
        metrics.clone(),
        database,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let (threads, result) =
        match ingest::spawn_ingest(&config, records_tx, &metrics, subscribed, stop.clone()) {
            Ok(threads) => (
                threads,
                serve_queries(&config, queries, &metrics, broker, &local).await,
            ),
            Err(e) => (Vec::new(), Err(e)),
        };

    // Stop ingest; once its threads drop their senders the writer commits the rest and ends.
    // (Threads of a half-started ingest were not returned but see `stop` just the same.)
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
        let _ = writer.join();
    })
    .await;
    local.cancel();
    if let Some(integrity) = integrity {
        let _ = integrity.await;
    }
    let served = server.await;
    tracing::info!("logger stopped");
    result?;
    match served {
        Ok(served) => served.map_err(Into::into),
        Err(_) => Ok(()), // The health task panicked; nothing left to report it to.
    }
}

/// Opens the configured store: the writer's sink and the query side.
async fn open_store(config: &LoggerConfig) -> Result<(store::Sink, store::Queries), LoggerError> {
    match config.store {
        store::Backend::Sqlite => {
            let conn = store::open_for_writing(&config.db).map_err(|source| match source {
                store::StoreError::Integrity(e) => LoggerError::Integrity(e),
                source => LoggerError::Database {
                    path: config.db.display().to_string(),
                    source,
                },
            })?;
            Ok((
                store::Sink::Sqlite(conn),
                store::Queries::Sqlite(store::Readers::new(&config.db)),
            ))
        }
        store::Backend::Postgres => {
            let postgres = config.postgres.clone();
            // Connecting and migrating block: off the async runtime.
            let pg =
                tokio::task::spawn_blocking(move || store::postgres::PgLogStore::open(&postgres))
                    .await
                    .map_err(|e| LoggerError::Config(format!("store open task failed: {e}")))?
                    .map_err(|source| LoggerError::Database {
                        path: config.postgres.redacted_dsn(),
                        source,
                    })?;
            Ok((
                store::Sink::Postgres(pg.clone()),
                store::Queries::Postgres(pg),
            ))
        }
    }
}

/// Runs the `org.plantd.Logger` worker until `shutdown` is cancelled.
async fn serve_queries(
    config: &LoggerConfig,
    queries: store::Queries,
    metrics: &metrics::LoggerMetrics,
    broker: health::Check,
    shutdown: &Shutdown,
) -> Result<(), LoggerError> {
    let ops = ops::Ops::new(queries, metrics.clone(), config.max_query_rows);
    let curve = config
        .curve
        .client()
        .map_err(|e| LoggerError::Config(format!("curve: {e}")))?;
    // The verifier's listener thread stops when this function returns, however it returns.
    let auth_stop = shutdown.child_token();
    let _auth_stop = auth_stop.clone().drop_guard();
    let ops = match config
        .auth
        .start(&config.broker_endpoint, curve.as_ref(), auth_stop)
    {
        Ok(Some(verifier)) => ops.with_verifier(verifier),
        Ok(None) => {
            tracing::warn!("auth.mode is off: anyone who reaches the broker may query the logger");
            ops
        }
        Err(e) => return Err(LoggerError::Config(format!("auth: {e}"))),
    };
    let ops = Arc::new(ops);
    let worker = Worker::builder(SERVICE)
        .endpoints(plantd_worker_sdk::config::broker_endpoints(
            &config.broker_endpoint,
        ))
        .dialect(config.protocol)
        .concurrency(config.concurrency)
        .curve(curve)
        .connection_check(broker)
        .handler(move |request| Ok(ops.handle(&request)))
        .build()?;
    let location = match config.store {
        store::Backend::Sqlite => config.db.display().to_string(),
        store::Backend::Postgres => config.postgres.redacted_dsn(),
    };
    tracing::info!(endpoint = %config.broker_endpoint, store = %location, "logger started");
    worker.run(shutdown.clone()).await?;
    Ok(())
}
