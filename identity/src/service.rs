//! [`run`]: the identity service as a whole. Opens the store (bootstrapping the admin on first
//! start), loads or creates the signing key, serves `org.plantd.Identity` on the broker with
//! `concurrency` worker sessions, serves `/healthz` and `/metrics`, probes the database, checks
//! its integrity and prunes dead sessions, until shutdown.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plantd_sqlite_util::{integrity, DatabaseCheck};
use plantd_worker_sdk::bus::BusError;
use plantd_worker_sdk::health::{self, Health, HealthError};
use plantd_worker_sdk::worker::WorkerError;
use plantd_worker_sdk::{Frames, HandlerError, Worker};
use prometheus::Registry;

use crate::bootstrap::{self, Bootstrap, BootstrapError};
use crate::config::IdentityConfig;
use crate::events::Events;
use crate::limits::{SourceLimiter, UnknownLockout};
use crate::metrics::IdentityMetrics;
use crate::ops::{Identity, Settings, SERVICE_NAME};
use crate::password::{Hasher, PasswordError};
use crate::store::{now_secs, sessions, Store, StoreError};
use crate::tokens::{SignError, Signer, StoreKeys};
use crate::Shutdown;

/// How long a database probe may take before `/healthz` reports the database DOWN.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often dead sessions and refresh tokens are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How long after their last token expired sessions are kept (so a late token still reads
/// as revoked rather than unknown).
const PRUNE_GRACE_SECS: i64 = 24 * 3600;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The database could not be opened or migrated.
    #[error("cannot open the identity database: {0}")]
    Store(#[from] StoreError),
    /// The first admin could not be created.
    #[error("cannot bootstrap the admin user: {0}")]
    Bootstrap(#[from] BootstrapError),
    /// The signing key could not be loaded or created.
    #[error("signing key: {0}")]
    Key(#[from] SignError),
    /// The password hasher could not be set up.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The health/metrics server could not start.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// The MDP worker could not start.
    #[error("identity worker: {0}")]
    Worker(#[from] WorkerError),
    /// The event bus publisher could not be created.
    #[error("identity event publisher: {0}")]
    Bus(#[from] BusError),
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Refuses settings the service cannot work with.
fn check(config: &IdentityConfig) -> Result<(), IdentityError> {
    let bad = |m: &str| Err(IdentityError::Config(m.to_owned()));
    if config.concurrency == 0 {
        return bad("concurrency must be at least 1");
    }
    if config.tokens.access_ttl_secs == 0 || config.tokens.refresh_ttl_secs == 0 {
        return bad("token lifetimes must be positive");
    }
    if i64::try_from(config.tokens.access_ttl_secs).unwrap_or(i64::MAX)
        > crate::store::notices::RETENTION_SECS / 2
    {
        return bad("tokens.access_ttl_secs must be at most 43200 (12 hours): verifiers catch up on revocations from a log kept for 24 hours");
    }
    if config.password.min_length == 0 || config.password.min_length > config.password.max_length {
        return bad("password.min_length must be between 1 and password.max_length");
    }
    Ok(())
}

/// What the blocking part of the start produces.
struct Opened {
    store: Store,
    hasher: Hasher,
    signer: Signer,
    bootstrap: Bootstrap,
}

fn open(config: &IdentityConfig, check: DatabaseCheck) -> Result<Opened, IdentityError> {
    let store = Store::open(&config.db, Some(check))?;
    let opened = (|| {
        let hasher = Hasher::new()?;
        let bootstrap = bootstrap::run(&store, &hasher, config)?;
        let signer = Signer::load(&store)?;
        Ok::<_, IdentityError>((hasher, signer, bootstrap))
    })();
    match opened {
        Ok((hasher, signer, bootstrap)) => Ok(Opened {
            store,
            hasher,
            signer,
            bootstrap,
        }),
        Err(e) => {
            store.close();
            Err(e)
        }
    }
}

/// Runs the identity service until `shutdown` is cancelled.
pub async fn run(config: IdentityConfig, shutdown: Shutdown) -> Result<(), IdentityError> {
    check(&config)?;
    let health_addr = health_addr(&config)?;
    let registry = Registry::new();
    let metrics = IdentityMetrics::register(&registry)?;
    let health = Health::new(env!("CARGO_PKG_VERSION"));
    let broker_check = health.check("broker_connection");
    let database_check = DatabaseCheck::new(health.check("database"));

    let curve = config
        .curve
        .client()
        .map_err(|e| IdentityError::Config(format!("curve: {e}")))?;
    let events = Events::connect(
        &config.event_endpoint,
        curve.as_ref(),
        metrics.events_published.clone(),
        metrics.events_dropped.clone(),
    )?;
    let (open_config, open_check) = (config.clone(), database_check.clone());
    let opened = tokio::task::spawn_blocking(move || open(&open_config, open_check))
        .await
        .map_err(|e| IdentityError::Config(format!("store open task failed: {e}")))??;
    let Opened {
        store,
        hasher,
        signer,
        bootstrap,
    } = opened;
    match &bootstrap {
        Bootstrap::Created {
            password_file,
            generated: true,
        } => tracing::warn!(
            user = bootstrap::ADMIN_USERNAME,
            password_file = %password_file.display(),
            "first start: created the admin user; its generated password is in the password file"
        ),
        Bootstrap::Created { password_file, .. } => tracing::info!(
            user = bootstrap::ADMIN_USERNAME,
            password_file = %password_file.display(),
            "first start: created the admin user with the password from the password file"
        ),
        Bootstrap::NotNeeded => {}
    }

    let verifier = StoreKeys::verifier(store.clone(), config.tokens.access_ttl_secs);
    let identity = Arc::new(Identity {
        store: store.clone(),
        settings: Settings::of(&config),
        hasher,
        signer,
        verifier,
        events,
        metrics,
        limiter: SourceLimiter::new(&config.rate_limit),
        unknown: UnknownLockout::new(config.lockout.clone()),
        health: health.clone(),
        started: Instant::now(),
    });
    let handler = identity.clone();
    let worker = Worker::builder(SERVICE_NAME)
        .endpoints(plantd_worker_sdk::config::broker_endpoints(
            &config.broker_endpoint,
        ))
        .dialect(config.protocol)
        .heartbeat(Duration::from_millis(config.heartbeat_ms.max(1)))
        .liveness(config.liveness)
        .concurrency(config.concurrency)
        .curve(curve)
        .connection_check(broker_check)
        // Requests run on each session's handler thread: password hashing there never delays
        // the session's heartbeats.
        .handler_with_client(
            move |client: &[u8], request: Frames| -> Result<Frames, HandlerError> {
                Ok(vec![handler.handle(client, &request)])
            },
        )
        .build();
    let worker = match worker {
        Ok(worker) => worker,
        Err(e) => {
            close(store).await;
            return Err(e.into());
        }
    };

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
    let integrity = tokio::spawn(integrity::watch(
        store.path().to_owned(),
        Some(Duration::from_secs(config.integrity_check_interval_secs)),
        database_check,
        stop.clone(),
    ));
    let prune = tokio::spawn(prune_sessions(store.clone(), stop.clone()));
    tracing::info!(
        db = %store.path().display(),
        broker = %config.broker_endpoint,
        sessions = config.concurrency,
        health = %health_addr,
        events = %config.event_endpoint,
        "identity service started"
    );

    let result = worker.run(stop.clone()).await;
    stop.cancel();
    let _ = probe.await;
    let _ = integrity.await;
    let _ = prune.await;
    let served = server.await;
    drop(identity);
    close(store).await;
    tracing::info!("identity service stopped");
    result?;
    match served {
        Ok(result) => result.map_err(IdentityError::from),
        Err(e) => Err(IdentityError::Config(format!(
            "health server task failed: {e}"
        ))),
    }
}

fn health_addr(config: &IdentityConfig) -> Result<SocketAddr, IdentityError> {
    (config.health_host.as_str(), config.health_port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            IdentityError::Config(format!(
                "cannot resolve health address {}:{}",
                config.health_host, config.health_port
            ))
        })
}

/// Commits everything queued, then stops the writer (off the async runtime: it joins a thread).
async fn close(store: Store) {
    let _ = tokio::task::spawn_blocking(move || store.close()).await;
}

/// Keeps the `database` check true while nobody writes: a real write every `interval`.
async fn probe_database(store: Store, check: DatabaseCheck, interval: Duration, stop: Shutdown) {
    loop {
        let probe = store.clone();
        let write = tokio::task::spawn_blocking(move || probe.probe());
        match tokio::time::timeout(PROBE_TIMEOUT, write).await {
            Ok(Ok(Ok(()))) => check.probe_succeeded(),
            Ok(Ok(Err(e))) => check.write_failed(format!("probe: {e}")),
            Ok(Err(e)) => check.write_failed(format!("probe task failed: {e}")),
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

/// Deletes sessions and refresh tokens that can no longer matter, every hour.
async fn prune_sessions(store: Store, stop: Shutdown) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
        let pruner = store.clone();
        let pruned = tokio::task::spawn_blocking(move || {
            pruner.write(|conn| sessions::prune(conn, now_secs(), PRUNE_GRACE_SECS))
        })
        .await;
        match pruned {
            Ok(Ok(n)) if n > 0 => tracing::debug!(sessions = n, "pruned dead sessions"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune sessions"),
            Err(e) => tracing::warn!(error = %e, "session prune task failed"),
        }
    }
}
