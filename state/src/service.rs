//! [`run`]: the state service as a whole. Opens the store, serves `org.plantd.State` on the broker
//! with `concurrency` worker sessions, serves `/healthz` and `/metrics`, probes the database and
//! checks its integrity, publishes changes on the `state` bus and takes scheduled backups, until
//! shutdown.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use plantd_sqlite_util::{integrity, DatabaseCheck};
use plantd_worker_sdk::bus::BusError;
use plantd_worker_sdk::health::{self, Health, HealthError};
use plantd_worker_sdk::worker::WorkerError;
use plantd_worker_sdk::{Frames, HandlerError, Worker};
use prometheus::Registry;

use crate::auth::{AllowAll, Authorizer, TokenAuthorizer};
use crate::bus_publisher::BusPublisher;
use crate::changes::{ChangePublisher, NullPublisher};
use crate::config::StateConfig;
use crate::metrics::StateMetrics;
use crate::ops::{Dispatcher, SERVICE_NAME};
use crate::store::{Backend, StateStore, StoreError, StoreOptions, WriteOp};
use crate::{backup, Shutdown};

/// How long a database probe may take before `/healthz` reports the database DOWN.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database could not be opened or migrated.
    #[error("cannot open the state database: {0}")]
    Store(#[from] StoreError),
    /// The health/metrics server could not start.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// The MDP worker could not start.
    #[error("state worker: {0}")]
    Worker(#[from] WorkerError),
    /// The bus publisher could not be created.
    #[error("state bus publisher: {0}")]
    Bus(#[from] BusError),
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Pluggable parts of the service; the defaults follow the configuration (`auth`, `bus_endpoint`).
#[derive(Clone, Default)]
pub struct Hooks {
    /// Consulted for every operation; `None` means what `config.auth` says (identity's tokens
    /// under `required`, nothing under `off`).
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// Receives committed changes; `None` means the `state` bus at `config.bus_endpoint`.
    pub publisher: Option<Arc<dyn ChangePublisher>>,
}

/// Runs the state service until `shutdown` is cancelled.
pub async fn run(config: StateConfig, shutdown: Shutdown) -> Result<(), StateError> {
    run_with(config, Hooks::default(), shutdown).await
}

/// [`run`] with a custom authorizer or change publisher.
pub async fn run_with(
    config: StateConfig,
    hooks: Hooks,
    shutdown: Shutdown,
) -> Result<(), StateError> {
    if config.concurrency == 0 {
        return Err(StateError::Config("concurrency must be at least 1".into()));
    }
    let health_addr = health_addr(&config)?;
    let registry = Registry::new();
    let metrics = StateMetrics::register(&registry)?;
    let health = Health::new(env!("CARGO_PKG_VERSION"));
    let broker_check = health.check("broker_connection");
    let database_check = DatabaseCheck::new(health.check("database"));

    let curve = config
        .curve
        .client()
        .map_err(|e| StateError::Config(format!("curve: {e}")))?;
    let publisher: Arc<dyn ChangePublisher> = match hooks.publisher {
        Some(publisher) => publisher,
        None if config.bus_endpoint.is_empty() => Arc::new(NullPublisher),
        None => Arc::new(BusPublisher::connect(
            &config.bus_endpoint,
            curve.as_ref(),
            metrics.changes_published.clone(),
            metrics.changes_dropped.clone(),
        )?),
    };
    // The verifier's listener thread stops when this function returns, however it returns.
    let auth_stop = shutdown.child_token();
    let _auth_stop = auth_stop.clone().drop_guard();
    let authorizer: Arc<dyn Authorizer> = match hooks.authorizer {
        Some(authorizer) => authorizer,
        None => match config
            .auth
            .start(&config.broker_endpoint, curve.as_ref(), auth_stop)
        {
            Ok(Some(verifier)) => Arc::new(TokenAuthorizer::new(verifier)),
            Ok(None) => {
                tracing::warn!("auth.mode is off: anyone who reaches the broker may read and change every scope");
                Arc::new(AllowAll)
            }
            Err(e) => return Err(StateError::Config(format!("auth: {e}"))),
        },
    };
    let options = StoreOptions {
        durability: config.durability,
        max_idle_readers: (config.concurrency * config.credit as usize).clamp(1, 64) * 2,
        metrics: Some(metrics.clone()),
        publisher,
        health: Some(database_check.clone()),
        max_db_bytes: config.max_db_bytes,
        ..StoreOptions::default()
    };
    let (backend, db, postgres) = (config.store, config.db.clone(), config.postgres.clone());
    if backend == Backend::Postgres {
        if config.backup.interval_secs > 0 {
            return Err(StateError::Config(
                "backup.interval_secs: scheduled backups are SQLite snapshots; back a PostgreSQL \
                 store up with pg_dump"
                    .into(),
            ));
        }
        if config.max_db_bytes > 0 {
            tracing::warn!("max_db_bytes applies to SQLite only; ignored with store: postgres");
        }
    }
    let store = tokio::task::spawn_blocking(move || match backend {
        Backend::Sqlite => StateStore::open(db, options),
        Backend::Postgres => StateStore::open_postgres(&postgres, options),
    })
    .await
    .map_err(|e| StateError::Config(format!("store open task failed: {e}")))??;

    let backup_dir = config.backup.dir_for(store.path());
    let dispatcher = Arc::new(
        Dispatcher::new(store.clone(), metrics.clone())
            .with_limits(config.limits.clone())
            .with_authorizer(authorizer)
            .with_backup_dir(backup_dir),
    );
    let builder = Worker::builder(SERVICE_NAME)
        .endpoints(plantd_worker_sdk::config::broker_endpoints(
            &config.broker_endpoint,
        ))
        .dialect(config.protocol)
        .heartbeat(Duration::from_millis(config.heartbeat_ms.max(1)))
        .liveness(config.liveness)
        .concurrency(config.concurrency)
        .credit(config.credit)
        .curve(curve)
        .connection_check(broker_check);
    let worker = if config.credit > 1 {
        // Requests a session holds run side by side on the blocking pool (they wait on SQLite
        // and on group commits), so a session's credit is real parallelism, not a queue.
        builder.async_handler(move |request: Frames| {
            let dispatcher = dispatcher.clone();
            async move {
                tokio::task::spawn_blocking(move || vec![dispatcher.handle(&request)])
                    .await
                    .map_err(|e| HandlerError::new(format!("state request failed: {e}")))
            }
        })
    } else {
        builder.handler(move |request: Frames| -> Result<Frames, HandlerError> {
            Ok(vec![dispatcher.handle(&request)])
        })
    }
    .build();
    let worker = match worker {
        Ok(worker) => worker,
        Err(e) => {
            close(store).await;
            return Err(e.into());
        }
    };

    // Everything below stops with `stop`, which also fires if the worker fails.
    let stop = shutdown.child_token();
    let server = match health::serve(health_addr, health, registry, stop.clone()).await {
        Ok(server) => server,
        Err(e) => {
            close(store).await;
            return Err(e.into());
        }
    };
    let server = tokio::spawn(server);
    let probe = tokio::spawn(probe_database(
        store.clone(),
        database_check.clone(),
        Duration::from_secs(config.probe_interval_secs.max(1)),
        stop.clone(),
    ));
    // `PRAGMA quick_check` is SQLite's; PostgreSQL checks its own pages.
    let integrity = (backend == Backend::Sqlite).then(|| {
        tokio::spawn(integrity::watch(
            store.path().to_owned(),
            Some(Duration::from_secs(config.integrity_check_interval_secs)),
            database_check,
            stop.clone(),
        ))
    });
    let schedule = tokio::spawn(backup::run_schedule(
        store.clone(),
        config.backup.clone(),
        metrics,
        stop.clone(),
    ));
    tracing::info!(
        store = %store.location(),
        broker = %config.broker_endpoint,
        sessions = config.concurrency,
        health = %health_addr,
        "state service started"
    );

    let result = worker.run(stop.clone()).await;
    stop.cancel();
    let _ = probe.await;
    if let Some(integrity) = integrity {
        let _ = integrity.await;
    }
    let _ = schedule.await;
    let served = server.await;
    close(store).await;
    tracing::info!("state service stopped");
    result?;
    match served {
        Ok(result) => result.map_err(StateError::from),
        Err(e) => Err(StateError::Config(format!(
            "health server task failed: {e}"
        ))),
    }
}

fn health_addr(config: &StateConfig) -> Result<SocketAddr, StateError> {
    (config.health_host.as_str(), config.health_port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            StateError::Config(format!(
                "cannot resolve health address {}:{}",
                config.health_host, config.health_port
            ))
        })
}

/// Commits everything queued, then stops the writer (off the async runtime: it joins a thread).
async fn close(store: StateStore) {
    let _ = tokio::task::spawn_blocking(move || store.close()).await;
}

/// Keeps the `database` check true while nobody writes: a real write through the writer thread
/// every `interval`. (Client writes report their own outcome from the writer.)
async fn probe_database(
    store: StateStore,
    check: DatabaseCheck,
    interval: Duration,
    stop: Shutdown,
) {
    loop {
        match tokio::time::timeout(PROBE_TIMEOUT, store.write(WriteOp::Probe)).await {
            Ok(Ok(())) => check.probe_succeeded(),
            Ok(Err(e)) => check.write_failed(format!("probe: {e}")),
            Err(_) => check.write_failed(format!(
                "probe did not complete within {} s",
                PROBE_TIMEOUT.as_secs()
            )),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
