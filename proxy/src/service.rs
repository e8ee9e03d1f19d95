//! [`run`]: the proxy as a whole. Connects the async MDP client and the bus publishers, starts
//! the token verifier (for `bus:publish`), probes the broker for `/healthz`, and serves the API
//! on `http_port` (with the dashboard at `/` and its MMI poller) and `/healthz` + `/metrics` on
//! `health_port` until shutdown.

use std::sync::Arc;
use std::time::Duration;

use plantd_worker_sdk::client::AsyncClient;
use plantd_worker_sdk::health::{self, Check, Health};
use prometheus::Registry;
use tokio::sync::Semaphore;

use crate::buses::Buses;
use crate::config::ProxyConfig;
use crate::dashboard::{self, Dashboard};
use crate::error::ProxyError;
use crate::limits::RateLimits;
use crate::metrics::ProxyMetrics;
use crate::router::{self, AppState};
use crate::server::{self, ServerLimits};
use crate::Shutdown;

/// How often the broker is asked `mmi.broker` for the `broker_connection` check.
const BROKER_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often idle rate-limit buckets are forgotten.
const LIMITS_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Runs the proxy until `shutdown` is cancelled; in-flight requests then get up to
/// `shutdown_grace_ms` to finish.
pub async fn run(config: ProxyConfig, shutdown: Shutdown) -> Result<(), ProxyError> {
    config.validate()?;
    let registry = Registry::new();
    let metrics = ProxyMetrics::register(&registry)?;
    let health = Health::new(env!("CARGO_PKG_VERSION"));
    let broker_check = health.check("broker_connection");
    let curve = config
        .curve
        .client()
        .map_err(|e| ProxyError::Config(format!("curve: {e}")))?;
    let client = AsyncClient::connect_with(&config.broker_endpoint, curve.clone())?
        .with_dialect(config.protocol);
    let buses = Buses::connect(&config.buses, curve.as_ref())?;

    // The verifier's listener thread stops when this function returns, however it returns.
    let auth_stop = shutdown.child_token();
    let _auth_stop = auth_stop.clone().drop_guard();
    let verifier = config
        .auth
        .start(&config.broker_endpoint, curve.as_ref(), auth_stop)
        .map_err(|e| ProxyError::Config(format!("auth: {e}")))?;
    if verifier.is_none() {
        tracing::warn!("auth.mode is off: anyone who reaches the proxy may publish on every bus");
    }

    let http_addr = config.http_addr()?;
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        max_connections: config.max_connections,
        grace: Duration::from_millis(config.shutdown_grace_ms),
    };
    let health_server = health::serve(
        config.health_addr()?,
        health.clone(),
        registry,
        shutdown.clone(),
    )
    .await?;
    let state = Arc::new(AppState {
        client: client.clone(),
        limits: RateLimits::new(&config.rate_limit),
        in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        metrics,
        broker_check: broker_check.clone(),
        health,
        verifier,
        buses,
        curve,
        shutdown: shutdown.clone(),
        dashboard: Arc::new(Dashboard::new(&config.dashboard)),
        config,
    });
    let api = server::bind(
        http_addr,
        router::app(state.clone()),
        limits,
        shutdown.clone(),
    )
    .await?;
    tracing::info!(addr = %http_addr, broker = %client.endpoint(), "proxy serving the HTTP API");

    let poller = state.config.dashboard.enabled.then(|| {
        tokio::spawn(dashboard::live::poll(
            client.clone(),
            state.config.dashboard.clone(),
            state.dashboard.live.clone(),
            state.metrics.clone(),
            shutdown.clone(),
        ))
    });
    let probe = tokio::spawn(probe_broker(client, broker_check, shutdown.clone()));
    let sweep = tokio::spawn(sweep_limits(state, shutdown.clone()));
    let (health_result, ()) = tokio::join!(health_server, api);
    probe.abort();
    sweep.abort();
    if let Some(poller) = poller {
        poller.abort();
    }
    health_result?;
    Ok(())
}

/// Keeps `check` UP while the broker answers `mmi.broker`.
async fn probe_broker(client: AsyncClient, check: Check, shutdown: Shutdown) {
    let client = client.with_timeout(BROKER_PROBE_INTERVAL);
    loop {
        match client.broker_info().await {
            Ok(_) => check.up(),
            Err(e) => check.down(format!("broker does not answer: {e}")),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(BROKER_PROBE_INTERVAL) => {}
        }
    }
}

async fn sweep_limits(state: Arc<AppState>, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LIMITS_SWEEP_INTERVAL) => {
                state.limits.forget_idle();
                state.dashboard.sessions.sweep();
                state.metrics.dashboard_sessions.set(state.dashboard.sessions.len() as i64);
            }
        }
    }
}
