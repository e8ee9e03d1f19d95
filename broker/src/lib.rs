//! `plantd-broker`: the plantd MDP broker.
//!
//! It routes client requests to workers by service name over one ROUTER socket, in three MDP
//! dialects at once (18/MDP, 7/MDP and the Go plantd dialect; see `docs/protocol.md`), heartbeats
//! workers, re-dispatches requests of lost workers, queues and expires requests, and answers MMI
//! queries. `/healthz` and `/metrics` are served over HTTP beside it.
//!
//! - [`config`]: [`BrokerConfig`], every key and default.
//! - `broker`: the loop thread that owns the socket; `service` and `worker`: its records;
//!   `wire`: sending; `mmi`: management queries; `metrics`: Prometheus handles; `monitor`: the
//!   socket's connection events; `trim`: handing freed memory back.
//! - [`security`]: CURVE, the ZAP handler, the allow list and per-key policy, protected mode,
//!   the rate limit and the audit trail (`docs/security.md`).
//! - [`run`]: starts everything and returns when the shutdown token is cancelled.

mod broker;
pub mod bus;
pub mod config;
mod error;
mod frame;
mod id_map;
mod ledger;
mod metrics;
mod mmi;
mod monitor;
mod request;
pub mod security;
mod service;
mod slots;
mod summary;
mod trim;
mod watchdog;
mod wire;
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use plantd_worker_sdk::health::{self, Health};
use plantd_worker_sdk::Shutdown;
use tracing::{error, info, warn};

pub use config::BrokerConfig;
pub use error::BrokerError;
pub use mmi::{BrokerInfo, BusSummary};

use crate::broker::Broker;
use crate::metrics::Metrics;
use crate::security::gate::Gate;
use crate::security::rate::RequestLimiter;
use crate::watchdog::LoopStatus;
use plantd_worker_sdk::wake::{Doorbell, Waker};

/// The crate version, reported in `/healthz` and `mmi.broker`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long the ROUTER socket keeps trying to deliver the final DISCONNECTs after shutdown.
const CLOSE_LINGER_MS: i32 = 250;

/// Runs the broker until `shutdown` is cancelled, then disconnects every worker and returns.
///
/// The HTTP port is bound before this returns its first `Pending` and the MDP socket right after,
/// so a port clash is an immediate error.
pub async fn run(config: BrokerConfig, shutdown: Shutdown) -> Result<(), BrokerError> {
    config.validate()?;
    // Protected mode: refuse plaintext on the network unless told it is meant.
    let insecure = config.check_protected_mode()?;
    let keys = security::Keys::load(&config.curve)?;
    let metrics = Metrics::new()?;
    let health = Health::new(VERSION);
    let loop_check = health.check("broker_loop");
    let security_check = health.check("transport_security");
    match (&insecure, &keys) {
        (Some(warning), _) => {
            warn!("{warning}");
            security_check.up_with(warning.clone());
        }
        (None, Some(keys)) => security_check.up_with(format!(
            "curve: {} keys authorized (broker public key {})",
            keys.allow.load().len(),
            keys.server.public_key()
        )),
        (None, None) => security_check.up_with("no curve: loopback only"),
    }

    let context = zmq::Context::new();
    context
        .set_io_threads(config.io_threads)
        .map_err(|source| BrokerError::Socket {
            endpoint: "the MDP context's I/O threads".into(),
            source,
        })?;
    let bus_context = zmq::Context::new();
    // The audit trail and the ZAP handler come before any CURVE socket binds: with
    // ZAP_ENFORCE_DOMAIN a connection arriving before the handler would be refused.
    let secure = match &keys {
        Some(keys) => Some(start_security(
            &config,
            keys,
            &metrics,
            (&[&context, &bus_context], &bus_context),
        )?),
        None => None,
    };
    let (doorbell, waker) = Doorbell::new(&context).map_err(|source| BrokerError::Socket {
        endpoint: "inproc doorbell".into(),
        source,
    })?;

    // Stops the HTTP side and the watchdog once the loop has ended (by request or by failure).
    // Not a child of `shutdown`: HTTP must outlive the loop's goodbyes, and an HTTP server that
    // ends on its own is then always a failure.
    let stop = Shutdown::new();
    let http = health::serve(
        config.health_addr()?,
        health,
        metrics.registry().clone(),
        stop.clone(),
    )
    .await?;

    // The pub/sub buses: bound now, stopped when `buses` is dropped at the end of `run`.
    let bus_security = match (&keys, &secure) {
        (Some(keys), Some(secure)) => Some(bus::BusSecurity {
            server: keys.server.clone(),
            allow: keys.allow.clone(),
            audit: secure.audit.clone(),
        }),
        _ => None,
    };
    let buses = Arc::new(bus::Buses::start_in(
        bus_context.clone(),
        &config.bus,
        config.max_message_size,
        bus_security.as_ref(),
    )?);
    drop(bus_security);
    metrics
        .registry()
        .register(Box::new(bus::BusCollector::new(buses.clone())))?;
    let info = BrokerInfo {
        version: VERSION,
        endpoint: config.endpoint.clone(),
        started: Instant::now(),
        buses: buses.summaries(),
        buses_enabled: config.bus.enabled,
    };

    // Opened after everything else that can fail: from here the socket belongs to the broker, whose
    // drop stops the connection monitor before the socket closes.
    let (socket, monitor) = open_router(&context, &config, &metrics, keys.as_ref())?;
    let status = Arc::new(LoopStatus::default());
    let metrics_for_trim = metrics.trim_metrics();
    let gate = Gate::new(
        keys.as_ref().map(|k| k.allow.view()),
        secure.as_ref().map(|s| s.audit.clone()),
        RequestLimiter::new(&config.rate_limit),
    );
    let security_metrics = metrics.security.clone();
    let broker = Broker::new(
        socket,
        doorbell,
        &config,
        metrics,
        info,
        status.clone(),
        gate,
    );
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("plantd-broker".into())
        .spawn(move || {
            let _ = done_tx.send(broker.run());
        })
        .map_err(|e| BrokerError::Loop(format!("cannot start the broker thread: {e}")))?;
    // If this future is dropped before the end, the guard still stops the loop thread.
    let guard = StopGuard(Some(waker));

    let max_silence = config.heartbeat_interval() * 2 + Duration::from_secs(1);
    let watchdog = tokio::spawn(watchdog::watch(
        status,
        loop_check,
        max_silence,
        stop.clone(),
    ));
    let trimmer = config
        .memory_trim_interval()
        .filter(|_| trim::SUPPORTED)
        .map(|interval| {
            trim::configure_malloc();
            tokio::spawn(trim::trim_periodically(
                interval,
                metrics_for_trim,
                stop.clone(),
            ))
        });
    let reloader = keys.map(|keys| {
        let buses = buses.clone();
        tokio::spawn(reload_allow_list(
            keys,
            config.curve.reload_interval(),
            buses,
            security_metrics,
            stop.clone(),
        ))
    });
    let mut http = tokio::spawn(http);
    info!(
        endpoint = %config.endpoint,
        health = %config.health_addr()?,
        curve = config.curve.enabled(),
        "broker listening"
    );

    let outcome = tokio::select! {
        _ = shutdown.cancelled() => {
            guard.ring();
            (&mut done_rx).await
        }
        result = &mut done_rx => result,
        served = &mut http => {
            // The HTTP server only ends early on failure: stop the loop too.
            guard.ring();
            let _ = (&mut done_rx).await;
            stop.cancel();
            let _ = watchdog.await;
            return Err(match served {
                Ok(Err(e)) => BrokerError::Health(e),
                Ok(Ok(())) => BrokerError::Loop("health server stopped unexpectedly".into()),
                Err(e) => BrokerError::Loop(format!("health server task failed: {e}")),
            });
        }
    };
    stop.cancel();

    // Closing the last socket terminates the zmq context, which waits up to the linger for the
    // DISCONNECTs to go out: do that off the async runtime.
    if let Some(reloader) = reloader {
        let _ = reloader.await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        drop(guard);
        let _ = thread.join();
        // Audit events of the last moments go out while the event bus still runs.
        let secure = secure.map(Secured::stop_audit);
        buses.stop();
        // The loop's socket is closed and its monitor stopped: the event reader can go, and then
        // the ZAP handler, and the contexts (which wait for every socket of theirs).
        monitor.join();
        drop(secure);
        drop(buses);
        drop(context);
        drop(bus_context);
    })
    .await;
    let _ = watchdog.await;
    if let Some(trimmer) = trimmer {
        let _ = trimmer.await;
    }
    if tokio::time::timeout(Duration::from_millis(500), &mut http)
        .await
        .is_err()
    {
        http.abort();
    }

    match outcome {
        Ok(result) => result,
        Err(_) => {
            error!("broker loop thread ended without a result");
            Err(BrokerError::Loop("broker loop thread panicked".into()))
        }
    }
}

/// The running security pieces: the audit thread and the ZAP handler.
struct Secured {
    audit: security::audit::Audit,
    audit_thread: Option<security::audit::AuditThread>,
    /// Stopped when dropped, after the sockets it authenticates for.
    _zap: security::zap::ZapHandler,
}

impl Secured {
    /// Ends the audit thread (it flushes first); the ZAP handler runs on until dropped.
    fn stop_audit(mut self) -> Self {
        if let Some(thread) = self.audit_thread.take() {
            thread.stop();
        }
        self
    }
}

/// Starts the audit thread (feeding the `event` bus of `bus_context`, if it runs) and the ZAP
/// handler in `contexts`.
fn start_security(
    config: &BrokerConfig,
    keys: &security::Keys,
    metrics: &Metrics,
    (contexts, bus_context): (&[&zmq::Context], &zmq::Context),
) -> Result<Secured, BrokerError> {
    let inject = security::audit::AUDIT_INJECT;
    let sink = if config.bus.active().iter().any(|b| b.name == bus::AUDIT_BUS) {
        // Inproc may connect before the proxy binds; events wait in the pipe until it does.
        let push = bus_context
            .socket(zmq::PUSH)
            .and_then(|s| s.set_linger(0).map(|()| s))
            .and_then(|s| s.set_sndhwm(4096).map(|()| s))
            .and_then(|s| s.connect(inject).map(|()| s))
            .map_err(|source| BrokerError::Socket {
                endpoint: inject.into(),
                source,
            })?;
        Some(push)
    } else {
        None
    };
    let (audit, audit_thread) = security::audit::AuditThread::start(
        sink,
        &metrics.security.refusals,
        metrics.security.audit_dropped.clone(),
    )
    .map_err(|e| BrokerError::Loop(format!("cannot start the audit thread: {e}")))?;
    let zap = security::zap::ZapHandler::start(
        contexts,
        keys.allow.clone(),
        audit.clone(),
        &metrics.security.zap,
    )
    .map_err(|source| BrokerError::Socket {
        endpoint: security::zap::ZAP_ENDPOINT.into(),
        source,
    })?;
    metrics
        .security
        .authorized_keys
        .set(keys.allow.load().len() as i64);
    info!(
        public_key = %keys.server.public_key(),
        authorized_keys = keys.allow.load().len(),
        file = %keys.path().display(),
        "curve on: every MDP and bus socket is a CURVE server"
    );
    Ok(Secured {
        audit,
        audit_thread: Some(audit_thread),
        _zap: zap,
    })
}

/// Reloads the allow list on SIGHUP and, every `interval`, when its file changed; until `stop`.
async fn reload_allow_list(
    keys: security::Keys,
    interval: Option<Duration>,
    buses: Arc<bus::Buses>,
    metrics: crate::metrics::SecurityMetrics,
    stop: Shutdown,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            warn!(error = %e, "cannot watch SIGHUP; the allow list reloads on file change only");
            None
        }
    };
    let bus_names: Vec<String> = buses.configs().map(|c| c.name.clone()).collect();
    let mut stamp = security::FileStamp::of(keys.path());
    loop {
        let tick = async {
            match interval {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup => "SIGHUP",
            _ = tick => {
                let now = security::FileStamp::of(keys.path());
                if now == stamp {
                    continue;
                }
                "file changed"
            }
        };
        stamp = security::FileStamp::of(keys.path());
        match security::reload(&keys, &bus_names) {
            Ok(reloaded) => {
                metrics.reloads.with_label_values(&["ok"]).inc();
                metrics.authorized_keys.set(reloaded.keys as i64);
                info!(keys = reloaded.keys, cause = why, "allow list reloaded");
                for bus in &reloaded.revoked_subscriptions {
                    info!(%bus, "a subscribe right was revoked: subscribers reconnect");
                    buses.rebind_backend(bus);
                }
            }
            Err(e) => {
                metrics.reloads.with_label_values(&["error"]).inc();
                error!(
                    cause = why,
                    "allow list not reloaded, the previous one stays: {e}"
                );
            }
        }
    }
}

/// The bound ROUTER socket, with the monitor counting its connections; a CURVE server with
/// `keys`.
fn open_router(
    context: &zmq::Context,
    config: &BrokerConfig,
    metrics: &Metrics,
    keys: Option<&security::Keys>,
) -> Result<(zmq::Socket, monitor::ConnectionMonitor), BrokerError> {
    let fail = |source| BrokerError::Socket {
        endpoint: config.endpoint.clone(),
        source,
    };
    let mut socket = context.socket(zmq::ROUTER).map_err(fail)?;
    // Unroutable replies fail loudly (EHOSTUNREACH) instead of vanishing, so the loop can tell a
    // dead worker. Without CURVE a reconnecting peer with a fixed identity takes over its old
    // route; with CURVE it may not: a connection presenting a routing id already in use is
    // ignored, so another key cannot take over (displace) a connected worker's route.
    socket.set_router_mandatory(true).map_err(fail)?;
    socket.set_router_handover(keys.is_none()).map_err(fail)?;
    if let Some(keys) = keys {
        keys.server
            .apply(&mut socket, security::MDP_ZAP_DOMAIN)
            .map_err(fail)?;
    }
    socket.set_sndhwm(config.socket_hwm).map_err(fail)?;
    socket.set_rcvhwm(config.socket_hwm).map_err(fail)?;
    socket.set_linger(CLOSE_LINGER_MS).map_err(fail)?;
    // libzmq reads each frame's size first and drops a peer announcing more than this, so an
    // oversized frame is never allocated.
    socket
        .set_maxmsgsize(config::zmq_max_message_size(config.max_message_size))
        .map_err(fail)?;
    // Before binding, so that every connection is seen.
    let monitor =
        monitor::ConnectionMonitor::attach(context, &socket, metrics.connection_metrics())
            .map_err(fail)?;
    if let Err(e) = socket.bind(&config.endpoint) {
        let mut socket = socket;
        monitor::stop(&mut socket);
        drop(socket);
        monitor.join();
        return Err(fail(e));
    }
    Ok((socket, monitor))
}

/// Rings the loop's doorbell when dropped (or on demand), so the loop thread never outlives `run`.
struct StopGuard(Option<Waker>);

impl StopGuard {
    fn ring(&self) {
        if let Some(waker) = &self.0 {
            waker.wake();
        }
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        if let Some(waker) = self.0.take() {
            waker.wake();
        }
    }
}
