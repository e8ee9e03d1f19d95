//! The pub/sub buses the broker hosts: each one an XSUB frontend joined to an XPUB backend by
//! libzmq's steerable proxy on its own thread.
//!
//! Publishers connect PUB sockets to the frontend, subscribers connect SUB sockets to the backend;
//! subscriptions travel upstream through the proxy, so publishers only send what someone wants.
//! (The Go broker used a SUB frontend without any subscription, which forwarded nothing.)
//!
//! Each proxy has an inproc PAIR control socket: `STATISTICS` feeds `/metrics` with the messages
//! forwarded, `TERMINATE` stops it on shutdown. An optional capture endpoint is a PUB socket the
//! bus *binds*, carrying a copy of every frame the proxy moves (messages and subscription
//! frames); observers connect a SUB to it. Being a PUB it drops when nobody keeps up, so a
//! capture never stalls the bus (the Go capture was a blocking PUSH).
//!
//! With CURVE (`curve.*`), every bus socket is a CURVE server authenticated by the broker's ZAP
//! handler (domains `plantd.bus.<name>.frontend`, `.backend`, `.capture`), and the proxy is the
//! loop of [`secure`], which enforces each key's `bus.publish` and `bus.subscribe` per message.
//!
//! Both bus sockets use a high-water mark of `high_water_mark` messages (default 2,000,000, the
//! SDK's `DEFAULT_HIGH_WATER_MARK`, which explains the factor of two): with libzmq's default of
//! 1000 a million-message burst loses 10-17% even when the subscriber keeps up.

pub mod secure;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use plantd_worker_sdk::bus::{DEFAULT_BUSES, DEFAULT_HIGH_WATER_MARK};
use plantd_worker_sdk::curve::ServerCurve;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::security::allow_list::SharedAllowList;
use crate::security::audit::Audit;

/// What the buses need for CURVE: the broker's keys, the allow list and the audit trail.
#[derive(Clone)]
pub struct BusSecurity {
    /// The broker's CURVE server settings.
    pub server: ServerCurve,
    /// The allow list.
    pub allow: Arc<SharedAllowList>,
    /// Where refusals go.
    pub audit: Audit,
}

/// The bus the broker's audit events go on (`security::audit`).
pub const AUDIT_BUS: &str = "event";

/// The ZAP domain of one bus socket (`frontend`, `backend` or `capture`).
pub fn zap_domain(bus: &str, socket: &str) -> String {
    format!("plantd.bus.{bus}.{socket}")
}

/// How long a `STATISTICS` query may take before `/metrics` reports the bus without numbers.
const STATS_TIMEOUT_MS: i64 = 1000;

/// The `bus` section of the broker configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BusSettings {
    /// Host the buses at all. `false` (or an empty `buses` list) binds no bus socket.
    pub enabled: bool,
    /// Queue limit of each bus socket, in messages (0 = unlimited).
    pub high_water_mark: i32,
    /// The buses.
    pub buses: Vec<BusConfig>,
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            enabled: true,
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
            buses: DEFAULT_BUSES
                .iter()
                .map(|(name, front, back)| BusConfig {
                    name: (*name).to_owned(),
                    // Loopback, like the MDP endpoint (protected mode).
                    frontend: format!("tcp://127.0.0.1:{front}"),
                    backend: format!("tcp://127.0.0.1:{back}"),
                    capture: None,
                })
                .collect(),
        }
    }
}

impl BusSettings {
    /// No buses at all (what tests that run several brokers side by side want).
    pub fn disabled() -> Self {
        BusSettings {
            enabled: false,
            ..BusSettings::default()
        }
    }

    /// Buses to start: none when disabled.
    pub fn active(&self) -> &[BusConfig] {
        if self.enabled {
            &self.buses
        } else {
            &[]
        }
    }

    /// Rejects duplicate names, empty endpoints and negative HWMs.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.high_water_mark < 0 {
            return Err(BusError::Config(
                "bus.high_water_mark must not be negative (0 means unlimited)".into(),
            ));
        }

        for (i, bus) in self.active().iter().enumerate() {
            if bus.name.trim().is_empty() || bus.frontend.is_empty() || bus.backend.is_empty() {
                return Err(BusError::Config(format!(
                    "bus #{i} needs a name, a frontend and a backend"
                )));
            }
            if self.active()[..i].iter().any(|b| b.name == bus.name) {
                return Err(BusError::Config(format!(
                    "bus {:?} is configured twice",
                    bus.name
                )));
            }
        }
        Ok(())
    }
}

/// One bus: where publishers and subscribers connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusConfig {
    /// Name clients use to find it (`state`, `event`, `metric`).
    pub name: String,
    /// Endpoint the XSUB binds; publishers connect here.
    pub frontend: String,
    /// Endpoint the XPUB binds; subscribers connect here.
    pub backend: String,
    /// Endpoint a capture PUB binds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
}

/// Why a bus could not be started.
#[derive(Debug, Error)]
pub enum BusError {
    /// The bus configuration is inconsistent.
    #[error("invalid bus configuration: {0}")]
    Config(String),
    /// A socket could not be created, configured or bound.
    #[error("bus {bus}: {what} {endpoint}: {source}")]
    Socket {
        /// Bus name.
        bus: String,
        /// What failed (`bind frontend`, ...).
        what: &'static str,
        /// Endpoint involved.
        endpoint: String,
        /// The libzmq error.
        source: zmq::Error,
    },
}

impl From<BusError> for crate::BrokerError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Config(reason) => crate::BrokerError::Config(reason),
            BusError::Socket {
                endpoint, source, ..
            } => crate::BrokerError::Socket { endpoint, source },
        }
    }
}

/// Counters libzmq keeps for one proxy (a multipart message counts once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Messages publishers sent into the frontend.
    pub messages_in: u64,
    /// Bytes of those messages.
    pub bytes_in: u64,
    /// Messages handed to the backend for subscribers.
    pub messages_forwarded: u64,
    /// Bytes of those messages.
    pub bytes_forwarded: u64,
    /// Subscribe/unsubscribe messages sent upstream by subscribers.
    pub subscription_messages: u64,
}

struct RunningBus {
    config: BusConfig,
    control: Mutex<zmq::Socket>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The running buses of one broker. Stops them on [`Buses::stop`] or drop.
///
/// The buses have a ZeroMQ context of their own: its I/O thread moves bus traffic only, so a busy
/// bus never slows MDP routing (and vice versa), and the broker's context can shut down without
/// waiting for bus sockets.
pub struct Buses {
    running: Vec<RunningBus>,
    // Declared last: dropped after the sockets above are closed.
    _context: zmq::Context,
}

impl Buses {
    /// Binds every active bus's sockets now (so a port clash fails the broker's start) and starts
    /// one proxy thread per bus. With buses disabled this binds nothing. A peer that sends a
    /// frame above `max_message_size` bytes is disconnected by libzmq (`0` or `-1`: unlimited;
    /// the broker's `max_message_size`).
    pub fn start(settings: &BusSettings, max_message_size: i64) -> Result<Buses, BusError> {
        Buses::start_in(zmq::Context::new(), settings, max_message_size, None)
    }

    /// Like [`start`](Self::start), in `context` (whose ZAP handler the broker runs), with CURVE
    /// and per-key policy when `security` is given.
    pub fn start_in(
        context: zmq::Context,
        settings: &BusSettings,
        max_message_size: i64,
        security: Option<&BusSecurity>,
    ) -> Result<Buses, BusError> {
        settings.validate()?;
        let mut buses = Buses {
            running: Vec::new(),
            _context: context.clone(),
        };
        for config in settings.active() {
            // On error, `buses` drops here and stops the ones already running.
            buses.running.push(start_one(
                &context,
                config,
                settings,
                max_message_size,
                security,
            )?);
        }
        Ok(buses)
    }

    /// Makes every subscriber of `bus` reconnect (CURVE only), so each subscription is checked
    /// against the current allow list again.
    pub fn rebind_backend(&self, bus: &str) {
        for running in self.running.iter().filter(|b| b.config.name == bus) {
            let control = running.control.lock().unwrap_or_else(|e| e.into_inner());
            let _ = control.send("REBIND", zmq::DONTWAIT);
        }
    }

    /// The `buses` entries of `mmi.broker`.
    pub fn summaries(&self) -> Vec<crate::mmi::BusSummary> {
        self.configs()
            .map(|c| crate::mmi::BusSummary {
                name: c.name.clone(),
                frontend: c.frontend.clone(),
                backend: c.backend.clone(),
                capture: c.capture.clone(),
            })
            .collect()
    }

    /// The configurations of the running buses, in order.
    pub fn configs(&self) -> impl Iterator<Item = &BusConfig> {
        self.running.iter().map(|b| &b.config)
    }

    /// Asks every proxy for its counters; a bus that does not answer in time is `None`.
    pub fn stats(&self) -> Vec<(String, Option<BusStats>)> {
        self.running
            .iter()
            .map(|bus| (bus.config.name.clone(), query_stats(&bus.control)))
            .collect()
    }

    /// Stops every proxy and waits for its thread, which closes (and unbinds) the bus sockets.
    /// Idempotent.
    pub fn stop(&self) {
        for bus in &self.running {
            let thread = bus.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(thread) = thread else { continue };
            let control = bus.control.lock().unwrap_or_else(|e| e.into_inner());
            // The proxy thread may already be gone (then nothing listens and the send fails).
            let _ = control.send("TERMINATE", zmq::DONTWAIT);
            drop(control);
            let _ = thread.join();
        }
    }
}

impl Drop for Buses {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_one(
    context: &zmq::Context,
    config: &BusConfig,
    settings: &BusSettings,
    max_message_size: i64,
    security: Option<&BusSecurity>,
) -> Result<RunningBus, BusError> {
    let high_water_mark = settings.high_water_mark;
    let max_message_size = crate::config::zmq_max_message_size(max_message_size);
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let err = |what: &'static str, endpoint: &str| {
        let bus = config.name.clone();
        let endpoint = endpoint.to_owned();
        move |source| BusError::Socket {
            bus,
            what,
            endpoint,
            source,
        }
    };

    // CURVE server settings (before binding), for each socket's ZAP domain.
    let secure = |socket: &mut zmq::Socket, which: &str| match security {
        Some(s) => s.server.apply(socket, &zap_domain(&config.name, which)),
        None => Ok(()),
    };
    let mut frontend = context
        .socket(zmq::XSUB)
        .map_err(err("create frontend", &config.frontend))?;
    secure(&mut frontend, "frontend").map_err(err("configure frontend", &config.frontend))?;
    frontend
        .set_rcvhwm(high_water_mark)
        .and_then(|_| frontend.set_maxmsgsize(max_message_size))
        .and_then(|_| frontend.set_linger(0))
        .map_err(err("configure frontend", &config.frontend))?;
    frontend
        .bind(&config.frontend)
        .map_err(err("bind frontend", &config.frontend))?;

    let mut backend = context
        .socket(zmq::XPUB)
        .map_err(err("create backend", &config.backend))?;
    secure(&mut backend, "backend")
        .and_then(|_| match security {
            Some(_) => secure::configure_backend(&mut backend),
            None => Ok(()),
        })
        .map_err(err("configure backend", &config.backend))?;
    backend
        .set_sndhwm(high_water_mark)
        .and_then(|_| backend.set_maxmsgsize(max_message_size))
        .and_then(|_| backend.set_linger(0))
        .map_err(err("configure backend", &config.backend))?;
    backend
        .bind(&config.backend)
        .map_err(err("bind backend", &config.backend))?;
    // What a rebind must unbind: the endpoint as libzmq resolved it.
    let backend_endpoint = backend
        .get_last_endpoint()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| config.backend.clone());

    let capture = match &config.capture {
        None => None,
        Some(endpoint) => {
            let mut capture = context
                .socket(zmq::PUB)
                .map_err(err("create capture", endpoint))?;
            secure(&mut capture, "capture").map_err(err("configure capture", endpoint))?;
            capture
                .set_sndhwm(high_water_mark)
                .and_then(|_| capture.set_linger(0))
                .map_err(err("configure capture", endpoint))?;
            capture
                .bind(endpoint)
                .map_err(err("bind capture", endpoint))?;
            Some(capture)
        }
    };

    let control_endpoint = format!(
        "inproc://plantd-bus-control-{}-{}",
        config.name,
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let proxy_control = context
        .socket(zmq::PAIR)
        .map_err(err("create control", &control_endpoint))?;
    proxy_control
        .bind(&control_endpoint)
        .map_err(err("bind control", &control_endpoint))?;
    let control = context
        .socket(zmq::PAIR)
        .map_err(err("create control", &control_endpoint))?;
    control
        .set_linger(0)
        .and_then(|_| control.connect(&control_endpoint))
        .map_err(err("connect control", &control_endpoint))?;

    let name = config.name.clone();
    // With CURVE the audit bus also takes the broker's own audit events in, over inproc.
    let inject = match security {
        Some(_) if config.name == AUDIT_BUS => {
            let inject = context.socket(zmq::PULL).map_err(err(
                "create audit inlet",
                crate::security::audit::AUDIT_INJECT,
            ))?;
            inject
                .set_linger(0)
                .and_then(|_| inject.bind(crate::security::audit::AUDIT_INJECT))
                .map_err(err(
                    "bind audit inlet",
                    crate::security::audit::AUDIT_INJECT,
                ))?;
            Some(inject)
        }
        _ => None,
    };
    let guard = security.map(|s| secure::Guard {
        allow: s.allow.view(),
        audit: s.audit.clone(),
        inject,
    });
    let thread = std::thread::Builder::new()
        .name(format!("bus-{name}"))
        .spawn(move || {
            let sockets = ProxySockets {
                frontend,
                backend,
                capture,
                control: proxy_control,
            };
            match guard {
                Some(guard) => {
                    let result = secure::run(
                        &name,
                        sockets.frontend,
                        sockets.backend,
                        sockets.capture,
                        sockets.control,
                        backend_endpoint,
                        guard,
                    );
                    report_end(&name, result);
                }
                None => run_proxy(name, sockets),
            }
        })
        .map_err(|_| BusError::Socket {
            bus: config.name.clone(),
            what: "spawn proxy thread",
            endpoint: config.frontend.clone(),
            source: zmq::Error::ENOMEM,
        })?;
    tracing::info!(
        bus = %config.name,
        frontend = %config.frontend,
        backend = %config.backend,
        capture = config.capture.as_deref().unwrap_or("-"),
        "bus started"
    );
    Ok(RunningBus {
        config: config.clone(),
        control: Mutex::new(control),
        thread: Mutex::new(Some(thread)),
    })
}

/// The sockets of one bus proxy.
struct ProxySockets {
    frontend: zmq::Socket,
    backend: zmq::Socket,
    capture: Option<zmq::Socket>,
    control: zmq::Socket,
}

/// The proxy without CURVE: libzmq's own.
fn run_proxy(name: String, sockets: ProxySockets) {
    let ProxySockets {
        mut frontend,
        mut backend,
        capture,
        mut control,
    } = sockets;
    let result = match capture {
        Some(mut capture) => zmq::proxy_steerable_with_capture(
            &mut frontend,
            &mut backend,
            &mut capture,
            &mut control,
        ),
        None => zmq::proxy_steerable(&mut frontend, &mut backend, &mut control),
    };
    report_end(&name, result);
}

fn report_end(name: &str, result: zmq::Result<()>) {
    match result {
        Ok(()) => tracing::debug!(bus = %name, "bus stopped"),
        // ETERM: the context was torn down under us, which is also a way to stop.
        Err(zmq::Error::ETERM) => tracing::debug!(bus = %name, "bus stopped (context terminated)"),
        Err(e) => tracing::error!(bus = %name, error = %e, "bus proxy failed"),
    }
}

/// Sends `STATISTICS` and reads the 8 native-endian u64 frames libzmq answers with:
/// frontend (msgs in, bytes in, msgs out, bytes out), then the same for the backend.
fn query_stats(control: &Mutex<zmq::Socket>) -> Option<BusStats> {
    let control = control.lock().unwrap_or_else(|e| e.into_inner());
    // Drop a late answer to an earlier query that timed out, so frames never shift.
    while control.recv_bytes(zmq::DONTWAIT).is_ok() {}
    control.send("STATISTICS", zmq::DONTWAIT).ok()?;
    if control.poll(zmq::POLLIN, STATS_TIMEOUT_MS).ok()? == 0 {
        return None;
    }
    let frames = control.recv_multipart(zmq::DONTWAIT).ok()?;
    let values: Vec<u64> = frames
        .iter()
        .map(|f| f.as_slice().try_into().map(u64::from_ne_bytes))
        .collect::<Result<_, _>>()
        .ok()?;
    match values[..] {
        [front_in, front_bytes_in, _, _, back_in, _, back_out, back_bytes_out] => Some(BusStats {
            messages_in: front_in,
            bytes_in: front_bytes_in,
            messages_forwarded: back_out,
            bytes_forwarded: back_bytes_out,
            subscription_messages: back_in,
        }),
        _ => None,
    }
}

/// Renders bus counters for `/metrics` at scrape time (libzmq owns the numbers).
pub struct BusCollector {
    buses: Arc<Buses>,
    descs: Vec<Desc>,
}

impl BusCollector {
    /// A collector over `buses`; register it in the broker's registry.
    pub fn new(buses: Arc<Buses>) -> Self {
        let (messages, bytes) = counter_vecs();
        let descs = messages
            .desc()
            .into_iter()
            .chain(bytes.desc())
            .cloned()
            .collect();
        BusCollector { buses, descs }
    }
}

/// Fresh `plantd_bus_messages_total` and `plantd_bus_bytes_total` families (one per scrape, so
/// concurrent scrapes never see each other's half-filled values).
fn counter_vecs() -> (IntCounterVec, IntCounterVec) {
    let labels = &["bus", "direction"];
    // The names and labels are constants, so building these cannot fail.
    let messages = IntCounterVec::new(
        Opts::new(
            "plantd_bus_messages_total",
            "Bus messages by bus and direction: in (from publishers), forwarded (to subscribers), \
             subscriptions (subscribe/unsubscribe sent upstream)",
        ),
        labels,
    )
    .expect("valid metric");
    let bytes = IntCounterVec::new(
        Opts::new(
            "plantd_bus_bytes_total",
            "Bus message bytes by bus and direction (in, forwarded)",
        ),
        labels,
    )
    .expect("valid metric");
    (messages, bytes)
}

impl Collector for BusCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (messages, bytes) = counter_vecs();
        for (bus, stats) in self.buses.stats() {
            let Some(s) = stats else { continue };
            let add = |vec: &IntCounterVec, direction: &str, value: u64| {
                vec.with_label_values(&[&bus, direction]).inc_by(value);
            };
            add(&messages, "in", s.messages_in);
            add(&messages, "forwarded", s.messages_forwarded);
            add(&messages, "subscriptions", s.subscription_messages);
            add(&bytes, "in", s.bytes_in);
            add(&bytes, "forwarded", s.bytes_forwarded);
        }
        let mut families = messages.collect();
        families.extend(bytes.collect());
        families
    }
}
