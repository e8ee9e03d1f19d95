//! One worker session: a DEALER socket registered with one broker for one service.
//!
//! The session's thread owns the socket and is the only one that touches it. It sleeps in
//! `zmq::poll` on the socket, on the socket's connection monitor and on a doorbell rung by
//! handlers and by shutdown, so heartbeats go out on schedule however long a handler runs.
//!
//! READY goes out once the socket is connected, and the session counts as registered from then
//! on (brokers answer READY with nothing, so waiting for a first heartbeat would leave the health
//! check DOWN for up to a heartbeat interval while the broker already routes to us). After a
//! session lost a broker that went silent, a mere connection proves nothing (a hung broker still
//! completes handshakes), so the next session counts only once the broker has sent something.
//!
//! Broker loss (nothing heard for liveness × interval, or the connection closed) or a DISCONNECT
//! from the broker closes the socket and registers again on a new one, with exponential backoff
//! after a loss. A socket that has not connected yet is kept, however long the broker stays away:
//! libzmq keeps retrying it, so a broker that comes back has the worker's READY within about
//! 100 ms.
//!
//! A broker that never answers READY (one that speaks another MDP version drops it unread, and so
//! does a peer that is no broker) would leave the worker reconnecting silently forever, so the
//! first such loss is logged at `warn` with the likely cause: once per endpoint, not per session
//! or per retry, until the broker is heard from again.
//!
//! A broker that refuses the security handshake (a CURVE key not on its allow list, a wrong
//! server key, CURVE on one side only) is seen in the socket monitor. libzmq never retries such a
//! connection, so the session logs it at `error` (once per endpoint until a handshake succeeds),
//! shows it in the connection check, and retries on a new socket after the backoff, in case the
//! allow list is fixed meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::curve::ClientCurve;
use crate::health::Check;
use crate::monitor::{ConnectionMonitor, HandshakeFailure, MonitorGuard};
use crate::protocol::{
    self, decode, encode, Direction, ErrorCode, ErrorReply, Frame, Message, WorkerCommand,
};
use crate::wake::{millis_ceil, Doorbell};
use crate::Shutdown;

use super::handler::{Executor, Outcome};
use super::Settings;

/// How many sessions of one worker are registered, driving the optional health check.
pub(crate) struct Registrations {
    count: Mutex<usize>,
    check: Option<Check>,
}

impl Registrations {
    pub(crate) fn new(check: Option<Check>) -> Self {
        if let Some(check) = &check {
            check.down("not registered with a broker yet");
        }
        Registrations {
            count: Mutex::new(0),
            check,
        }
    }

    fn registered(&self) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *count += 1;
        if *count == 1 {
            if let Some(check) = &self.check {
                check.up();
            }
        }
    }

    /// A handshake was refused: while no session is registered, the check says why.
    fn refused(&self, reason: &str) {
        let count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        if *count == 0 {
            if let Some(check) = &self.check {
                check.down(format!("authentication failed at {reason}"));
            }
        }
    }

    fn unregistered(&self, reason: &str) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_sub(1);
        if *count == 0 {
            if let Some(check) = &self.check {
                check.down(reason);
            }
        }
    }
}

/// Whether the broker at one endpoint has been reported as not answering (or as refusing the
/// handshake); shared by the endpoint's sessions, so each report is made once, and cleared when
/// any of them hears from it (or completes a handshake).
#[derive(Default)]
pub(crate) struct Unanswered {
    silent: AtomicBool,
    refused: AtomicBool,
}

/// Why a connection ended.
enum End {
    /// Shutdown requested: DISCONNECT sent, stop.
    Shutdown,
    /// The broker said DISCONNECT: register again at once.
    Disconnected,
    /// Nothing heard from the broker for too long: back off, then register again.
    Lost,
    /// The connection to the broker closed: back off, then register again.
    Closed,
    /// The broker refused the security handshake: back off, then try a new socket.
    Refused,
}

/// Everything one session thread owns.
pub(crate) struct Session {
    pub(crate) settings: Arc<Settings>,
    pub(crate) endpoint: String,
    pub(crate) context: zmq::Context,
    /// The first socket, created (and its endpoint validated) by `Worker::run` on the caller's
    /// thread; later sockets are made here.
    pub(crate) first_socket: Option<BrokerSocket>,
    pub(crate) doorbell: Doorbell,
    pub(crate) outcomes: mpsc::Receiver<Outcome>,
    pub(crate) executor: Executor,
    pub(crate) registrations: Arc<Registrations>,
    /// Shared with the other sessions of this endpoint.
    pub(crate) unanswered: Arc<Unanswered>,
    pub(crate) stop: Shutdown,
    /// Whether a connection alone counts as registered: false after the last session ended with
    /// a silent broker, true again once a broker has sent anything.
    pub(crate) trust_connection: bool,
}

/// A DEALER to one broker and the monitor that tells when it is connected. Dropping it stops the
/// monitor before the socket closes (see `crate::monitor` for why that matters).
pub(crate) struct BrokerSocket {
    socket: zmq::Socket,
    monitor: ConnectionMonitor,
    guard: Option<MonitorGuard>,
}

impl Drop for BrokerSocket {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.stop(&mut self.socket);
        }
    }
}

/// A new DEALER of `context` connected to `endpoint` (linger 0: nothing of a dead session should
/// linger), a CURVE client with `curve`, monitored from before it connects.
pub(crate) fn connect(
    context: &zmq::Context,
    endpoint: &str,
    curve: Option<&ClientCurve>,
) -> zmq::Result<BrokerSocket> {
    let socket = context.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    crate::curve::apply_client(curve, &socket)?;
    let (monitor, guard) = ConnectionMonitor::attach(context, &socket)?;
    let broker = BrokerSocket {
        socket,
        monitor,
        guard: Some(guard),
    };
    broker.socket.connect(endpoint)?;
    Ok(broker)
}

impl Session {
    /// Runs until `stop` is cancelled.
    pub(crate) fn run(mut self) {
        let mut backoff = self.settings.reconnect_initial;
        let mut next_request: u64 = 0;
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let socket = match self.first_socket.take() {
                Some(socket) => Ok(socket),
                None => connect(&self.context, &self.endpoint, self.settings.curve.as_ref()),
            };
            let end = match socket {
                Ok(mut socket) => self.serve(&mut socket, &mut backoff, &mut next_request),
                Err(e) => {
                    warn!(endpoint = %self.endpoint, error = %e, "cannot create worker socket");
                    End::Lost
                }
            };
            match end {
                End::Shutdown => return,
                End::Disconnected => {}
                End::Lost | End::Closed | End::Refused => {
                    debug!(endpoint = %self.endpoint, ?backoff, "broker lost; reconnecting");
                    self.doorbell.wait(backoff);
                    backoff = (backoff * 2).min(self.settings.reconnect_max);
                }
            }
        }
    }

    /// Registers on `broker` once it is connected and serves requests until the connection ends.
    fn serve(
        &mut self,
        broker: &mut BrokerSocket,
        backoff: &mut Duration,
        next_request: &mut u64,
    ) -> End {
        let settings = self.settings.clone();
        let patience = settings.heartbeat * settings.liveness;
        // READY waits for the connection, so nothing (heartbeats included) precedes it and the
        // check can go UP before the broker knows this worker.
        let mut ready_sent = false;
        let mut registered = false;
        // Whether the broker has sent anything on this connection.
        let mut heard = false;
        // The client address of each request being handled, by request number: at most `credit`
        // (plantd's credit extension; 1 is plain MDP), so hundreds with a pipelining broker.
        // Keyed by our own sequence numbers: hashed for speed (foldhash), not against chosen keys.
        let mut in_flight: HashMap<u64, Frame, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(settings.credit as usize, Default::default());
        let mut heartbeat_at = Instant::now() + settings.heartbeat;
        let mut broker_expiry = Instant::now() + patience;

        let end = 'session: loop {
            let now = Instant::now();
            let wake_at = if ready_sent {
                heartbeat_at.min(broker_expiry)
            } else {
                broker_expiry
            };
            let timeout = wake_at.saturating_duration_since(now);
            let polled = broker.monitor.with_poll_item(|monitor| {
                let mut items = [
                    broker.socket.as_poll_item(zmq::POLLIN),
                    self.doorbell.as_poll_item(),
                    monitor,
                ];
                zmq::poll(&mut items, millis_ceil(timeout)).map(|_| {
                    (
                        items[0].is_readable(),
                        items[1].is_readable(),
                        items[2].is_readable(),
                    )
                })
            });
            let (socket_ready, bell_rang, monitor_ready) = match polled {
                Ok(ready) => ready,
                Err(e) => {
                    warn!(error = %e, "worker poll failed");
                    break 'session End::Lost;
                }
            };
            if bell_rang {
                self.doorbell.drain();
            }
            if self.stop.is_cancelled() {
                if ready_sent {
                    self.send(&broker.socket, WorkerCommand::Disconnect);
                    // Give the DISCONNECT a moment to leave before the socket closes.
                    let _ = broker.socket.set_linger(100);
                }
                break 'session End::Shutdown;
            }
            if monitor_ready {
                match broker.monitor.handshake() {
                    Some(Ok(())) => self.admitted(),
                    // libzmq will not retry this connection: a new socket, after the backoff.
                    Some(Err(failure)) if failure.is_final() => {
                        self.refused(failure);
                        break 'session End::Refused;
                    }
                    // Closed mid-handshake: libzmq reconnects by itself.
                    _ => {}
                }
                let connected = broker.monitor.is_connected();
                if connected && !ready_sent {
                    ready_sent = true;
                    if self.trust_connection {
                        // UP before READY leaves: whoever learns of this worker from the broker
                        // finds the check UP already.
                        registered = true;
                        self.registrations.registered();
                        *backoff = settings.reconnect_initial;
                    }
                    self.send(
                        &broker.socket,
                        WorkerCommand::Ready {
                            service: Frame::from(settings.service.as_bytes()),
                            credit: settings.credit,
                        },
                    );
                    let now = Instant::now();
                    heartbeat_at = now + settings.heartbeat;
                    broker_expiry = now + patience;
                } else if !connected && ready_sent {
                    debug!(endpoint = %self.endpoint, "connection to the broker closed");
                    break 'session End::Closed;
                }
            }
            if socket_ready {
                while let Ok(frames) = protocol::recv_frames(&broker.socket, zmq::DONTWAIT) {
                    broker_expiry = Instant::now() + patience;
                    self.trust_connection = true;
                    if !heard {
                        heard = true;
                        self.answered();
                    }
                    if !registered {
                        registered = true;
                        self.registrations.registered();
                        *backoff = settings.reconnect_initial;
                    }
                    match decode(Direction::FromBroker, frames) {
                        Ok((_, Message::Worker(WorkerCommand::Request { client, body }))) => {
                            if in_flight.len() >= settings.credit as usize {
                                warn!("request received beyond this session's credit; ignored");
                                continue;
                            }
                            *next_request += 1;
                            self.executor.start(
                                *next_request,
                                &client[..],
                                protocol::to_vecs(&body),
                            );
                            in_flight.insert(*next_request, client);
                        }
                        Ok((_, Message::Worker(WorkerCommand::Heartbeat))) => {}
                        Ok((_, Message::Worker(WorkerCommand::Disconnect))) => {
                            debug!(endpoint = %self.endpoint, "broker sent DISCONNECT");
                            break 'session End::Disconnected;
                        }
                        Ok((_, other)) => debug!(?other, "unexpected message from broker dropped"),
                        Err(e) => debug!(error = %e, "malformed message from broker dropped"),
                    }
                }
            }
            for outcome in self.outcomes.try_iter() {
                let (request, body, last) = match outcome {
                    Outcome::Partial { request, body } => (request, body, false),
                    Outcome::Final { request, result } => {
                        let body = result.unwrap_or_else(|e| {
                            debug!(error = %e, "handler failed");
                            protocol::to_vecs(&ErrorReply::body(ErrorCode::Internal, e.message()))
                        });
                        (request, body, true)
                    }
                };
                // Outcomes of requests from an earlier connection are stale: the broker has
                // re-dispatched those requests already.
                let body = body.into_iter().map(Frame::from).collect();
                let command = if last {
                    let Some(client) = in_flight.remove(&request) else {
                        continue;
                    };
                    WorkerCommand::Final { client, body }
                } else {
                    let Some(client) = in_flight.get(&request) else {
                        continue;
                    };
                    let client = Frame::from(&client[..]);
                    WorkerCommand::Partial { client, body }
                };
                self.send(&broker.socket, command);
            }
            let now = Instant::now();
            if ready_sent && now >= heartbeat_at {
                self.send(&broker.socket, WorkerCommand::Heartbeat);
                heartbeat_at = now + settings.heartbeat;
            }
            if now >= broker_expiry {
                if ready_sent {
                    break 'session End::Lost;
                }
                // Never connected: libzmq retries this socket's connection every 100 ms by
                // itself, so keep it. A new socket after a backoff would only reach a broker that
                // comes back (a restart, a failover) later, up to the backoff's maximum.
                self.unanswered(false, patience);
                broker_expiry = now + patience;
            }
        };
        if ready_sent && matches!(end, End::Lost) {
            // Connected, yet silent: the broker may be hung, so a connection alone proves nothing.
            self.trust_connection = false;
        }
        if !heard && matches!(end, End::Lost) {
            self.unanswered(ready_sent, patience);
        }
        if registered {
            let reason = match end {
                End::Shutdown => "worker stopped",
                End::Disconnected => "broker sent DISCONNECT",
                End::Lost => "broker not heard from within liveness",
                End::Closed => "connection to the broker closed",
                End::Refused => "the broker refused the security handshake",
            };
            self.registrations.unregistered(reason);
        }
        if !in_flight.is_empty() {
            self.executor.abandon();
        }
        end
    }

    /// Reports, once per endpoint until a handshake succeeds, that the broker refused this
    /// worker's handshake, and shows why in the connection check.
    fn refused(&self, failure: HandshakeFailure) {
        let reason = format!("{}: {failure}", self.endpoint);
        self.registrations.refused(&reason);
        if self.unanswered.refused.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::error!(
            endpoint = %self.endpoint,
            service = %self.settings.service,
            "authentication failed at {reason}; retrying with backoff"
        );
    }

    /// Clears the report of [`Session::refused`] once a handshake succeeds.
    fn admitted(&self) {
        if self.unanswered.refused.swap(false, Ordering::Relaxed) {
            info!(endpoint = %self.endpoint, service = %self.settings.service, "the broker accepted the handshake");
        }
    }

    /// Reports, once per endpoint until the broker is heard from, a connection that ended without
    /// a word from the broker.
    fn unanswered(&self, connected: bool, patience: Duration) {
        if self.unanswered.silent.swap(true, Ordering::Relaxed) {
            return;
        }
        let (service, protocol) = (&self.settings.service, self.settings.dialect.name());
        let waited_ms = patience.as_millis();
        if connected {
            warn!(
                endpoint = %self.endpoint,
                service = %service,
                protocol,
                "the broker never answered READY (MDP/{protocol}) within {waited_ms} ms; \
                 reconnecting until it does. Likely cause: it does not speak MDP/{protocol} \
                 (zguide brokers speak only 0.1: set this service's `protocol`), or the endpoint \
                 is not an MDP broker"
            );
        } else {
            warn!(
                endpoint = %self.endpoint,
                service = %service,
                protocol,
                "no connection to the broker within {waited_ms} ms; still trying. Likely cause: \
                 no broker listens at the endpoint (not started yet, or a wrong host or port)"
            );
        }
    }

    /// Clears the report of [`Session::unanswered`] when a broker reported silent speaks.
    fn answered(&self) {
        if self.unanswered.silent.swap(false, Ordering::Relaxed) {
            info!(endpoint = %self.endpoint, service = %self.settings.service, "the broker answered");
        }
    }

    /// Sends one command without blocking; a full or dead pipe drops it (liveness handles the rest).
    fn send(&self, socket: &zmq::Socket, command: WorkerCommand) {
        let mut frames = Vec::with_capacity(8);
        if let Err(e) = encode(
            self.settings.dialect,
            Direction::ToBroker,
            Message::Worker(command),
            &mut frames,
        ) {
            warn!(error = %e, "cannot encode worker message");
            return;
        }
        if let Err(e) = protocol::send_frames(socket, frames, zmq::DONTWAIT) {
            debug!(error = %e, "worker message not sent");
        }
    }
}
