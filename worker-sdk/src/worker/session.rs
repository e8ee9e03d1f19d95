//! One worker session: a DEALER socket registered with one broker for one service.
//!
//! The session's thread owns the socket and is the only one that touches it. It sleeps in
//! `zmq::poll` on the socket and on a doorbell rung by handlers and by shutdown, so heartbeats go
//! out on schedule however long a handler runs. Broker loss (nothing heard for liveness ×
//! interval) or a DISCONNECT from the broker closes the socket and registers again on a new one,
//! with exponential backoff after a loss.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::health::Check;
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

/// Why a connection ended.
enum End {
    /// Shutdown requested: DISCONNECT sent, stop.
    Shutdown,
    /// The broker said DISCONNECT: register again at once.
    Disconnected,
    /// Nothing heard from the broker for too long: back off, then register again.
    Lost,
}

/// A request being handled.
struct InFlight {
    request: u64,
    client: Frame,
}

/// Everything one session thread owns.
pub(crate) struct Session {
    pub(crate) settings: Arc<Settings>,
    pub(crate) endpoint: String,
    pub(crate) context: zmq::Context,
    /// The first socket, created (and its endpoint validated) by `Worker::run` on the caller's
    /// thread; later sockets are made here.
    pub(crate) first_socket: Option<zmq::Socket>,
    pub(crate) doorbell: Doorbell,
    pub(crate) outcomes: mpsc::Receiver<Outcome>,
    pub(crate) executor: Executor,
    pub(crate) registrations: Arc<Registrations>,
    pub(crate) stop: Shutdown,
}

/// A new DEALER connected to `endpoint` (linger 0: nothing of a dead session should linger).
pub(crate) fn connect(context: &zmq::Context, endpoint: &str) -> zmq::Result<zmq::Socket> {
    let socket = context.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.connect(endpoint)?;
    Ok(socket)
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
                None => connect(&self.context, &self.endpoint),
            };
            let end = match socket {
                Ok(socket) => self.serve(&socket, &mut backoff, &mut next_request),
                Err(e) => {
                    warn!(endpoint = %self.endpoint, error = %e, "cannot create worker socket");
                    End::Lost
                }
            };
            match end {
                End::Shutdown => return,
                End::Disconnected => {}
                End::Lost => {
                    debug!(endpoint = %self.endpoint, ?backoff, "broker lost; reconnecting");
                    self.doorbell.wait(backoff);
                    backoff = (backoff * 2).min(self.settings.reconnect_max);
                }
            }
        }
    }

    /// Registers on `socket` and serves requests until the connection ends.
    fn serve(
        &mut self,
        socket: &zmq::Socket,
        backoff: &mut Duration,
        next_request: &mut u64,
    ) -> End {
        let settings = self.settings.clone();
        let patience = settings.heartbeat * settings.liveness;
        self.send(
            socket,
            WorkerCommand::Ready {
                service: Frame::from(settings.service.as_bytes()),
                credit: settings.credit,
            },
        );
        let mut registered = false;
        // Requests being handled, at most `credit` (plantd's credit extension; 1 is plain MDP).
        let mut in_flight: Vec<InFlight> = Vec::with_capacity(settings.credit as usize);
        let mut heartbeat_at = Instant::now() + settings.heartbeat;
        let mut broker_expiry = Instant::now() + patience;

        let end = 'session: loop {
            let now = Instant::now();
            let timeout = heartbeat_at
                .min(broker_expiry)
                .saturating_duration_since(now);
            let (socket_ready, bell_rang) = {
                let mut items = [
                    socket.as_poll_item(zmq::POLLIN),
                    self.doorbell.as_poll_item(),
                ];
                if let Err(e) = zmq::poll(&mut items, millis_ceil(timeout)) {
                    warn!(error = %e, "worker poll failed");
                    break 'session End::Lost;
                }
                (items[0].is_readable(), items[1].is_readable())
            };
            if bell_rang {
                self.doorbell.drain();
            }
            if self.stop.is_cancelled() {
                self.send(socket, WorkerCommand::Disconnect);
                // Give the DISCONNECT a moment to leave before the socket closes.
                let _ = socket.set_linger(100);
                break 'session End::Shutdown;
            }
            if socket_ready {
                while let Ok(frames) = protocol::recv_frames(socket, zmq::DONTWAIT) {
                    broker_expiry = Instant::now() + patience;
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
                            in_flight.push(InFlight {
                                request: *next_request,
                                client,
                            });
                            self.executor.start(*next_request, protocol::to_vecs(&body));
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
                let Some(index) = in_flight.iter().position(|f| f.request == request) else {
                    continue;
                };
                let body = body.into_iter().map(Frame::from).collect();
                let command = if last {
                    let client = in_flight.swap_remove(index).client;
                    WorkerCommand::Final { client, body }
                } else {
                    let client = Frame::from(&in_flight[index].client[..]);
                    WorkerCommand::Partial { client, body }
                };
                self.send(socket, command);
            }
            let now = Instant::now();
            if now >= heartbeat_at {
                self.send(socket, WorkerCommand::Heartbeat);
                heartbeat_at = now + settings.heartbeat;
            }
            if now >= broker_expiry {
                break 'session End::Lost;
            }
        };
        if registered {
            let reason = match end {
                End::Shutdown => "worker stopped",
                End::Disconnected => "broker sent DISCONNECT",
                End::Lost => "broker not heard from within liveness",
            };
            self.registrations.unregistered(reason);
        }
        if !in_flight.is_empty() {
            self.executor.abandon();
        }
        end
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
