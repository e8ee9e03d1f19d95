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
//! - [`run`]: starts everything and returns when the shutdown token is cancelled.

mod broker;
pub mod bus;
pub mod config;
mod error;
mod frame;
mod ledger;
mod metrics;
mod mmi;
mod monitor;
mod request;
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
use tracing::{error, info};

pub use config::BrokerConfig;
pub use error::BrokerError;
pub use mmi::{BrokerInfo, BusSummary};

use crate::broker::Broker;
use crate::metrics::Metrics;
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
    let metrics = Metrics::new()?;
    let health = Health::new(VERSION);
    let loop_check = health.check("broker_loop");

    let context = zmq::Context::new();
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
    let buses = Arc::new(bus::Buses::start(&config.bus, config.max_message_size)?);
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
    let (socket, monitor) = open_router(&context, &config, &metrics)?;
    let status = Arc::new(LoopStatus::default());
    let metrics_for_trim = metrics.trim_metrics();
    let broker = Broker::new(socket, doorbell, &config, metrics, info, status.clone());
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
    let mut http = tokio::spawn(http);
    info!(
        endpoint = %config.endpoint,
        health = %config.health_addr()?,
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
    let _ = tokio::task::spawn_blocking(move || {
        buses.stop();
        drop(guard);
        let _ = thread.join();
        // The loop's socket is closed and its monitor stopped: the event reader can go, and then
        // the context (which waits for every socket of it).
        monitor.join();
        drop(context);
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

/// The bound ROUTER socket, with the monitor counting its connections.
fn open_router(
    context: &zmq::Context,
    config: &BrokerConfig,
    metrics: &Metrics,
) -> Result<(zmq::Socket, monitor::ConnectionMonitor), BrokerError> {
    let fail = |source| BrokerError::Socket {
        endpoint: config.endpoint.clone(),
        source,
    };
    let socket = context.socket(zmq::ROUTER).map_err(fail)?;
    // Unroutable replies fail loudly (EHOSTUNREACH) instead of vanishing, so the loop can tell a
    // dead worker; a reconnecting peer with a fixed identity takes over its old route.
    socket.set_router_mandatory(true).map_err(fail)?;
    socket.set_router_handover(true).map_err(fail)?;
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
