//! The broker loop: one thread owns the ROUTER socket, routes requests to workers by service name,
//! relays replies, heartbeats workers, expires queued requests and answers MMI queries.
//!
//! Nothing else touches the socket. The HTTP side sees the loop only through [`Metrics`] and
//! [`LoopStatus`]. The loop sleeps in `zmq::poll` until a message arrives, the next timer is due
//! (heartbeat tick or the earliest queue deadline), or the doorbell rings for shutdown.
//!
//! Hot-path rules: frames are moved, not copied (retained request bodies share their buffers);
//! services and workers are found by `&[u8]` and then addressed by slot; the outgoing buffer is
//! reused; nothing is logged per message.
//!
//! Security (`crate::security::gate`): with CURVE, every request is checked against the policy
//! of the key it came with (the ZAP `User-Id` on its routing-id frame) and every READY too; each
//! worker record is bound to the key that registered it, and a message for that worker from any
//! other key removes the worker instead of being believed. The rate limit applies with or
//! without CURVE.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plantd_worker_sdk::protocol::{
    self, error_reply::ERROR_MARKER, tag, ClientCommand, Dialect, Direction, ErrorCode, Frame,
    Message, WorkerCommand,
};
use tracing::{debug, info};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::frame;
use crate::id_map::IdMap;
use crate::ledger::{ClientFull, ClientLedger};
use crate::metrics::{Metrics, WorkerRemoval};
use crate::mmi::{self, BrokerInfo, View, MMI_PREFIX};
use crate::request::{request_bytes, start_tagged, Request, ReturnAddress};
use crate::security::gate::{BoundKey, Gate};
use crate::service::{Full, ServiceQueue, MAX_SERVICE_NAME};
use crate::slots::Slots;
use crate::summary::DropSummary;
use crate::watchdog::LoopStatus;
use crate::wire::Wire;
use crate::worker::WorkerRecord;
use plantd_worker_sdk::wake::{millis_ceil, Doorbell};

/// Messages handled per wakeup before timers get a look-in.
const RECV_BATCH: usize = 1024;

/// The timing and limits the loop runs with (from [`BrokerConfig`]).
#[derive(Clone, Debug)]
struct Settings {
    heartbeat_interval: Duration,
    worker_expiry: Duration,
    queue_ttl: Duration,
    queue_limit: usize,
    queue_limit_bytes: u64,
    max_retries: u32,
    /// How long a service keeps its "had a worker" history after its last worker left, so that
    /// a request arriving meanwhile expires as `504` rather than `404`.
    service_linger: Duration,
}

impl Settings {
    /// Bodies of in-flight requests are kept only if they may be dispatched again.
    fn retain_bodies(&self) -> bool {
        self.max_retries > 0
    }
}

/// The broker's state, owned by the loop thread.
pub struct Broker {
    wire: Wire,
    doorbell: Doorbell,
    settings: Settings,
    services: Slots<ServiceQueue>,
    service_ids: IdMap<usize>,
    workers: Slots<WorkerRecord>,
    worker_ids: IdMap<usize>,
    /// Bytes each client has queued or in flight.
    clients: ClientLedger,
    metrics: Metrics,
    info: BrokerInfo,
    status: Arc<LoopStatus>,
    scratch: Vec<usize>,
    /// The message being received; reused so receiving allocates nothing per message.
    inbox: Vec<Frame>,
    next_heartbeat: Instant,
    next_expiry: Option<Instant>,
    /// Dropped input is counted per message and logged only as a periodic summary.
    drops: DropSummary,
    /// Per-message security checks.
    gate: Gate,
}

impl Broker {
    /// A broker on a bound ROUTER `socket`, stopped by waking `doorbell`.
    pub fn new(
        socket: zmq::Socket,
        doorbell: Doorbell,
        config: &BrokerConfig,
        metrics: Metrics,
        info: BrokerInfo,
        status: Arc<LoopStatus>,
        gate: Gate,
    ) -> Self {
        let settings = Settings {
            heartbeat_interval: config.heartbeat_interval(),
            worker_expiry: config.worker_expiry(),
            queue_ttl: config.queue_ttl(),
            queue_limit: config.queue_limit,
            queue_limit_bytes: config.queue_limit_bytes,
            max_retries: config.max_retries,
            service_linger: config.service_linger(),
        };
        Broker {
            wire: Wire::new(socket, metrics.clone()),
            doorbell,
            next_heartbeat: Instant::now() + settings.heartbeat_interval,
            settings,
            services: Slots::default(),
            service_ids: IdMap::default(),
            workers: Slots::default(),
            worker_ids: IdMap::default(),
            clients: ClientLedger::new(config.client_queue_limit_bytes, config.client_queue_limit),
            metrics,
            info,
            status,
            scratch: Vec::new(),
            inbox: Vec::with_capacity(16),
            next_expiry: None,
            drops: DropSummary::new(Instant::now()),
            gate,
        }
    }

    /// Runs until the doorbell rings, then says goodbye to every peer.
    pub fn run(mut self) -> Result<(), BrokerError> {
        self.status.set_running(true);
        let result = self.serve();
        self.shut_down();
        self.status.set_running(false);
        result
    }

    fn serve(&mut self) -> Result<(), BrokerError> {
        loop {
            let now = Instant::now();
            self.status.beat(now);
            if now >= self.next_timer() {
                self.on_timers(now);
            }
            let wait = self.next_timer().saturating_duration_since(Instant::now());
            let (readable, stop) = {
                let mut items = [
                    self.wire.socket().as_poll_item(zmq::POLLIN),
                    self.doorbell.as_poll_item(),
                ];
                match zmq::poll(&mut items, millis_ceil(wait)) {
                    Ok(_) => (items[0].is_readable(), items[1].is_readable()),
                    Err(zmq::Error::EINTR) => (false, false),
                    Err(e) => return Err(BrokerError::Loop(format!("poll failed: {e}"))),
                }
            };
            if stop {
                return Ok(());
            }
            if readable {
                self.drain_socket();
            }
        }
    }

    fn drain_socket(&mut self) {
        let mut inbox = std::mem::take(&mut self.inbox);
        for _ in 0..RECV_BATCH {
            match protocol::recv_frames_into(self.wire.socket(), zmq::DONTWAIT, &mut inbox) {
                Ok(()) => self.handle(&mut inbox),
                Err(zmq::Error::EAGAIN) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    debug!(error = %e, "receive failed");
                    break;
                }
            }
        }
        self.inbox = inbox;
    }

    /// Handles one message as the ROUTER received it, `[routing_id, ...]`, emptying `inbox`.
    fn handle(&mut self, inbox: &mut Vec<Frame>) {
        self.metrics.messages_received.inc();
        let mut frames = inbox.drain(..);
        let Some(id) = frames.next() else {
            self.metrics.malformed.inc();
            return;
        };
        let tag = match tag::tagging(frames.as_slice()) {
            tag::Tagging::Untagged => None,
            tag::Tagging::Tagged => {
                let tag = frames.next();
                frames.next(); // the delimiter; the request may carry its own leading empty frame
                tag
            }
            tag::Tagging::TooLong => {
                self.metrics.malformed.inc();
                return;
            }
        };
        let envelope = frames.as_slice().first().is_some_and(|f| f.is_empty());
        let now = Instant::now();
        match protocol::decode(Direction::ToBroker, frames) {
            Ok((dialect, Message::Client(command))) => {
                let client = ReturnAddress {
                    id,
                    dialect,
                    envelope,
                    tag,
                };
                self.on_client(client, command, now);
            }
            Ok((dialect, Message::Worker(command))) if tag.is_none() => {
                let peer = ReturnAddress {
                    id,
                    dialect,
                    envelope,
                    tag: None,
                };
                self.on_worker(peer, command, now);
            }
            // Tags are for client requests only (`protocol::tag`): a tagged worker message is
            // malformed like any other.
            Ok((_, Message::Worker(_))) | Err(_) => {
                self.metrics.malformed.inc();
                // A registered worker that sends garbage is in an unknown state: let it go.
                if let Some(&slot) = self.worker_ids.get(&id[..]) {
                    self.remove_worker(slot, WorkerRemoval::ProtocolViolation, true, now);
                }
            }
        }
    }

    // ---- clients ------------------------------------------------------------------------------

    fn on_client(&mut self, client: ReturnAddress, command: ClientCommand, now: Instant) {
        match command {
            ClientCommand::Request { service, body } => {
                // Looked at once: every look into a frame is two calls into libzmq.
                let name: &[u8] = &service;
                // Every known service costs its name several times over (index, metric labels):
                // a megabyte "name" is garbage, not a service.
                if name.len() > MAX_SERVICE_NAME {
                    self.metrics.malformed.inc();
                    return;
                }
                let mmi = name.starts_with(MMI_PREFIX);
                if let Err(denied) = self.gate.check_call(&client.id, name) {
                    self.wire
                        .reply_error(client, service, denied.code, &denied.message);
                    return;
                }
                if mmi {
                    self.on_mmi(client, service, body, now);
                } else {
                    self.on_request(client, service, body, now);
                }
            }
            // A client sending a reply command has most likely misnumbered REQUEST (the
            // `majortomo` client sends 0x02): not relayed, but answered, so it learns why.
            ClientCommand::Partial { service, .. } => {
                self.bad_client_command(client, service, "PARTIAL", 0x02)
            }
            ClientCommand::Final { service, .. } => {
                self.bad_client_command(client, service, "FINAL", 0x03)
            }
        }
    }

    /// Counts a PARTIAL or FINAL sent by a client and answers it with `400` in its dialect (only
    /// MDP/0.2 and Go clients can send one: 7/MDP client messages carry no command).
    fn bad_client_command(&mut self, client: ReturnAddress, service: Frame, name: &str, byte: u8) {
        self.metrics.client_replies_dropped.inc();
        let message = match client.dialect {
            Dialect::Go => format!("bad request: client sent {name}; a client sends REQUEST"),
            _ => format!(
                "bad request: client sent {name} (0x{byte:02x}); REQUEST is 0x01 in MDP/0.2"
            ),
        };
        self.wire
            .reply_error(client, service, ErrorCode::BadRequest, &message);
    }

    fn on_request(
        &mut self,
        client: ReturnAddress,
        service: Frame,
        body: Vec<Frame>,
        now: Instant,
    ) {
        self.metrics.requests.inc();
        let name: &[u8] = &service;
        let charge = match self.clients.charge(&client.id, request_bytes(name, &body)) {
            Ok(charge) => charge,
            Err(full) => {
                let message = match full {
                    ClientFull::Bytes(held) => format!(
                        "client has {held} bytes of requests queued or in flight \
                         (client_queue_limit_bytes {})",
                        self.clients.limit()
                    ),
                    ClientFull::Requests(held) => format!(
                        "client has {held} requests queued or in flight (client_queue_limit {})",
                        self.clients.request_limit()
                    ),
                };
                // Counted for the service if the broker knows it (an error path: the lookup
                // costs the hot path nothing).
                if let Some(svc) = self.service_ids.get(&service[..]).copied() {
                    if let Some(svc) = self.services.get(svc) {
                        svc.metrics().requests.inc();
                        svc.metrics().errors.inc();
                    }
                }
                self.wire
                    .reply_error(client, service, ErrorCode::QueueFull, &message);
                return;
            }
        };
        let slot = self.service_slot(name, now);
        let request = Request {
            client,
            service,
            body,
            deadline: now + self.settings.queue_ttl,
            dispatches: 0,
            charge,
        };
        let Some(svc) = self.services.get_mut(slot) else {
            return;
        };
        svc.metrics().requests.inc();
        // Fast path: nothing waiting and a worker free.
        if !svc.has_requests() {
            if let Some(worker) = self.take_idle(slot) {
                if let Err(request) = self.try_dispatch(worker, request, now) {
                    self.requeue_or_fail(slot, request, now);
                    self.dispatch_pending(slot, now);
                }
                return;
            }
        }
        let Some(svc) = self.services.get_mut(slot) else {
            return;
        };
        let deadline = request.deadline;
        match svc.push(request) {
            Ok(()) => self.note_deadline(deadline),
            Err((request, full)) => {
                svc.metrics().errors.inc();
                let message = match full {
                    Full::Requests => format!(
                        "queue for service {} is full ({} requests waiting)",
                        svc.display_name(),
                        svc.queued()
                    ),
                    Full::Bytes => format!(
                        "queue for service {} is full ({} bytes waiting, queue_limit_bytes {})",
                        svc.display_name(),
                        svc.queued_bytes(),
                        svc.byte_limit()
                    ),
                };
                self.wire.reply_error(
                    request.client,
                    request.service,
                    ErrorCode::QueueFull,
                    &message,
                );
            }
        }
    }

    fn on_mmi(&mut self, client: ReturnAddress, service: Frame, body: Vec<Frame>, now: Instant) {
        self.metrics.mmi_requests.inc();
        let view = View {
            services: &self.services,
            service_ids: &self.service_ids,
            workers: &self.workers,
            info: &self.info,
            metrics: &self.metrics,
            now,
        };
        let reply = mmi::answer(&service, &body, &view);
        self.wire.reply(client, service, reply);
    }

    // ---- workers ------------------------------------------------------------------------------

    fn on_worker(&mut self, peer: ReturnAddress, command: WorkerCommand, now: Instant) {
        let Some(&slot) = self.worker_ids.get(&peer.id[..]) else {
            match command {
                WorkerCommand::Ready { service, credit } => {
                    self.register(peer, service, credit, now)
                }
                WorkerCommand::Disconnect => {}
                // RFC 7/18: anything but READY from an unknown worker gets DISCONNECT. This is
                // also how a worker learns that the broker restarted.
                _ => {
                    self.metrics.unknown_worker_messages.inc();
                    self.wire.disconnect(peer);
                }
            }
            return;
        };
        if let Some(worker) = self.workers.get(slot) {
            let service = self
                .services
                .get(worker.service)
                .map_or(&[][..], |s| s.name());
            if !self.gate.same_worker_key(&peer.id, &worker.key, service) {
                // Another key holds this routing id now: the worker's route is not its own any
                // more. Forget it (its requests go to other workers) and tell the new holder.
                self.remove_worker(slot, WorkerRemoval::ProtocolViolation, false, now);
                if !matches!(command, WorkerCommand::Disconnect) {
                    self.wire.disconnect(peer);
                }
                return;
            }
        }
        if let Some(worker) = self.workers.get_mut(slot) {
            worker.last_seen = now;
            worker.expires_at = now + self.settings.worker_expiry;
        }
        match command {
            WorkerCommand::Heartbeat => {}
            WorkerCommand::Final { client, body } => self.on_final(slot, client, body, now),
            WorkerCommand::Partial { client, body } => self.on_partial(slot, client, body, now),
            WorkerCommand::Disconnect => {
                self.remove_worker(slot, WorkerRemoval::Disconnected, false, now)
            }
            WorkerCommand::Ready { .. } | WorkerCommand::Request { .. } => {
                self.remove_worker(slot, WorkerRemoval::ProtocolViolation, true, now)
            }
        }
    }

    fn register(&mut self, peer: ReturnAddress, service: Frame, credit: u32, now: Instant) {
        if service.starts_with(MMI_PREFIX) {
            self.metrics.reserved_name_refused.inc();
            self.wire.disconnect(peer);
            return;
        }
        if service.len() > MAX_SERVICE_NAME {
            self.metrics.malformed.inc();
            self.wire.disconnect(peer);
            return;
        }
        // Nothing is registered for a key that may not: no service, no metrics, DISCONNECT.
        let key: BoundKey = match self.gate.check_register(&peer.id, &service) {
            Ok(key) => key,
            Err(crate::security::gate::Refused) => {
                self.wire.disconnect(peer);
                return;
            }
        };
        let service_slot = self.service_slot(&service, now);
        let id: Box<[u8]> = peer.id[..].into();
        let mut record = WorkerRecord::new(
            id.clone(),
            service_slot,
            peer.dialect,
            peer.envelope,
            credit,
            now + self.settings.worker_expiry,
            now,
        );
        record.key = key;
        let slot = self.workers.insert(record);
        self.worker_ids.insert(id, slot);
        if let Some(svc) = self.services.get_mut(service_slot) {
            svc.add_worker();
        }
        self.metrics.workers_registered.inc();
        debug!(service = %String::from_utf8_lossy(&service), dialect = peer.dialect.name(), credit, "worker registered");
        self.worker_has_room(slot, service_slot, now);
    }

    fn on_final(&mut self, slot: usize, client: Frame, body: Vec<Frame>, now: Instant) {
        let Some(worker) = self.workers.get_mut(slot) else {
            return;
        };
        // Only the worker holding that request may answer it; its other requests stay put so
        // that removing the worker re-queues them.
        let Some(job) = worker.finish(&client) else {
            self.remove_worker(slot, WorkerRemoval::ProtocolViolation, true, now);
            return;
        };
        let service_slot = worker.service;
        if let Some(svc) = self.services.get(service_slot) {
            let took = now.saturating_duration_since(job.dispatched_at);
            svc.metrics().latency.observe(took.as_secs_f64());
            // A worker's error reply counts as an error of its service (one frame compared).
            if body.first().is_some_and(|f| f[..] == *ERROR_MARKER) {
                svc.metrics().errors.inc();
            }
        }
        self.metrics.replies.inc();
        let request = job.request;
        self.wire.reply(request.client, request.service, body);
        self.worker_has_room(slot, service_slot, now);
    }

    fn on_partial(&mut self, slot: usize, client: Frame, body: Vec<Frame>, now: Instant) {
        let job = self.workers.get(slot).and_then(|w| w.job(&client));
        let Some(job) = job else {
            self.remove_worker(slot, WorkerRemoval::ProtocolViolation, true, now);
            return;
        };
        let to = &job.request.client;
        if to.dialect == Dialect::V01 {
            // 7/MDP has no PARTIAL: a 0.1 client gets only the FINAL.
            self.metrics.partials_dropped.inc();
            return;
        }
        self.metrics.partials.inc();
        start_tagged(
            &mut self.wire.out,
            Frame::from(&to.id[..]),
            to.tag.as_ref().map(|tag| Frame::from(&tag[..])),
            to.dialect,
            to.envelope,
        );
        let partial = Message::Client(ClientCommand::Partial {
            service: Frame::from(&job.request.service[..]),
            body,
        });
        let sent = protocol::encode(
            to.dialect,
            Direction::FromBroker,
            partial,
            &mut self.wire.out,
        )
        .is_ok()
            && self.wire.send().is_ok();
        if !sent {
            self.wire.out.clear();
            self.metrics.unroutable.inc();
        }
    }

    /// Worker `slot` registered or finished a request: give it waiting requests, or list it idle.
    fn worker_has_room(&mut self, slot: usize, service_slot: usize, now: Instant) {
        // Invariant: a service never has both idle workers and waiting requests, so the worker
        // just listed is the one `dispatch_pending` takes if anything waits.
        self.list_idle(slot);
        self.dispatch_pending(service_slot, now);
    }

    /// Puts worker `slot` at the back of its service's idle list if it has room for a request and
    /// is not listed yet. A worker is listed once however much credit it has left, so requests
    /// go round the workers with room rather than filling one worker's credit first.
    fn list_idle(&mut self, slot: usize) {
        let Some(worker) = self.workers.get_mut(slot) else {
            return;
        };
        if worker.listed_idle || !worker.has_credit() {
            return;
        }
        if let Some(svc) = self.services.get_mut(worker.service) {
            svc.push_idle(slot);
            worker.listed_idle = true;
        }
    }

    /// Takes the least recently used idle worker of a service off its idle list.
    fn take_idle(&mut self, service_slot: usize) -> Option<usize> {
        let slot = self.services.get_mut(service_slot)?.pop_idle()?;
        if let Some(worker) = self.workers.get_mut(slot) {
            worker.listed_idle = false;
        }
        Some(slot)
    }

    // ---- dispatch -----------------------------------------------------------------------------

    /// Pairs idle workers of a service with its waiting requests until one side runs out.
    fn dispatch_pending(&mut self, service_slot: usize, now: Instant) {
        loop {
            let Some(svc) = self.services.get_mut(service_slot) else {
                return;
            };
            if !svc.has_requests() || svc.idle() == 0 {
                return;
            }
            let Some(worker) = self.take_idle(service_slot) else {
                return;
            };
            let request = self
                .services
                .get_mut(service_slot)
                .and_then(|svc| svc.next_request());
            let Some(request) = request else {
                self.list_idle(worker);
                return;
            };
            if let Err(request) = self.try_dispatch(worker, request, now) {
                self.requeue_or_fail(service_slot, request, now);
            }
        }
    }

    /// Sends `request` to worker `slot` (already taken off the idle list). If the worker cannot be
    /// reached it is removed and the request handed back, not counted as an attempt.
    // Handing the request back by value is the point; boxing it would allocate per message.
    #[allow(clippy::result_large_err)]
    fn try_dispatch(
        &mut self,
        slot: usize,
        mut request: Request,
        now: Instant,
    ) -> Result<(), Request> {
        let retain = self.settings.retain_bodies();
        let Some(worker) = self.workers.get_mut(slot) else {
            return Err(request);
        };
        debug_assert!(worker.has_credit(), "dispatch beyond a worker's credit");
        worker.begin(&mut self.wire.out);
        let body = if retain {
            frame::share_all(&mut request.body)
        } else {
            std::mem::take(&mut request.body)
        };
        let (client, tag) = worker.address_for(&request);
        let command = WorkerCommand::Request { client, body };
        match self.wire.send_worker_command(worker.dialect, command) {
            Ok(()) => {
                request.dispatches += 1;
                worker.hold(request, tag, now);
                // Room for more (a credit worker): back in line behind the other idle workers.
                self.list_idle(slot);
                Ok(())
            }
            Err(_) => {
                if !retain {
                    // The body went with the failed send; the request cannot be sent again.
                    request.dispatches += 1;
                }
                // A credit worker may hold other requests: they go back in line too, ahead of
                // this one (they are older). Callers dispatch pending requests afterwards.
                let mut lost = Vec::new();
                self.detach_with_job(slot, WorkerRemoval::Unreachable, false, now, &mut lost);
                for (service_slot, held) in lost {
                    self.requeue_or_fail(service_slot, held, now);
                }
                Err(request)
            }
        }
    }

    /// A request lost its worker: queue it ahead of new requests, or answer `500` if it has used up
    /// its attempts (or bodies are not retained because retries are off).
    fn requeue_or_fail(&mut self, service_slot: usize, mut request: Request, now: Instant) {
        let exhausted = request.dispatches > self.settings.max_retries
            || (request.dispatches > 0 && !self.settings.retain_bodies());
        let svc = self.services.get_mut(service_slot);
        match svc {
            Some(svc) if !exhausted => {
                request.deadline = now + self.settings.queue_ttl;
                let deadline = request.deadline;
                svc.requeue(request);
                self.metrics.redispatches.inc();
                self.note_deadline(deadline);
            }
            _ => {
                if let Some(svc) = self.services.get(service_slot) {
                    svc.metrics().errors.inc();
                }
                let message = format!(
                    "request failed after {} attempts: worker lost",
                    request.dispatches
                );
                self.wire.reply_error(
                    request.client,
                    request.service,
                    ErrorCode::Internal,
                    &message,
                );
            }
        }
    }

    // ---- worker removal -----------------------------------------------------------------------

    /// Removes worker `slot` from every index. Its in-flight requests stay in the record.
    fn detach_worker(
        &mut self,
        slot: usize,
        reason: WorkerRemoval,
        now: Instant,
    ) -> Option<WorkerRecord> {
        let record = self.workers.remove(slot)?;
        self.worker_ids.remove(&record.id[..]);
        if let Some(svc) = self.services.get_mut(record.service) {
            svc.remove_worker(slot, now);
        }
        self.metrics.removed(reason).inc();
        Some(record)
    }

    /// Removes worker `slot`, optionally telling it DISCONNECT, and re-queues its requests.
    fn remove_worker(&mut self, slot: usize, reason: WorkerRemoval, notify: bool, now: Instant) {
        let mut lost = Vec::new();
        self.detach_with_job(slot, reason, notify, now, &mut lost);
        self.requeue_lost(lost, now);
    }

    fn detach_with_job(
        &mut self,
        slot: usize,
        reason: WorkerRemoval,
        notify: bool,
        now: Instant,
        lost: &mut Vec<(usize, Request)>,
    ) {
        let Some(mut record) = self.detach_worker(slot, reason, now) else {
            return;
        };
        debug!(id = %record.hex_id(), ?reason, "worker removed");
        if notify {
            record.begin(&mut self.wire.out);
            let _ = self
                .wire
                .send_worker_command(record.dialect, WorkerCommand::Disconnect);
        }
        lost.extend(
            record
                .jobs
                .drain(..)
                .map(|job| (record.service, job.request)),
        );
    }

    /// Puts requests of removed workers back (or fails them), then dispatches what it can. Done
    /// after all removals of a batch so a request never goes to a worker about to be removed.
    fn requeue_lost(&mut self, lost: Vec<(usize, Request)>, now: Instant) {
        if lost.is_empty() {
            return;
        }
        let mut touched = Vec::with_capacity(lost.len());
        for (service_slot, request) in lost {
            self.requeue_or_fail(service_slot, request, now);
            touched.push(service_slot);
        }
        touched.sort_unstable();
        touched.dedup();
        for service_slot in touched {
            self.dispatch_pending(service_slot, now);
        }
    }

    // ---- timers -------------------------------------------------------------------------------

    fn next_timer(&self) -> Instant {
        match self.next_expiry {
            Some(t) => t.min(self.next_heartbeat),
            None => self.next_heartbeat,
        }
    }

    fn note_deadline(&mut self, deadline: Instant) {
        self.next_expiry = Some(match self.next_expiry {
            Some(t) => t.min(deadline),
            None => deadline,
        });
    }

    fn on_timers(&mut self, now: Instant) {
        if now >= self.next_heartbeat {
            self.purge_and_heartbeat(now);
            self.forget_vacant_services(now);
            self.drops.maybe_log(&self.metrics, now);
            self.clients.prune();
            self.gate.prune();
            self.next_heartbeat = now + self.settings.heartbeat_interval;
        }
        if self.next_expiry.is_some_and(|t| now >= t) {
            self.expire_requests(now);
        }
    }

    /// Removes every expired worker (not just the first), then heartbeats every remaining worker,
    /// idle or busy; a worker ZeroMQ can no longer route to is removed too.
    fn purge_and_heartbeat(&mut self, now: Instant) {
        let mut slots = std::mem::take(&mut self.scratch);
        let mut lost = Vec::new();

        slots.clear();
        slots.extend(
            self.workers
                .iter()
                .filter(|(_, w)| w.expires_at <= now)
                .map(|(slot, _)| slot),
        );
        for &slot in &slots {
            self.detach_with_job(slot, WorkerRemoval::Expired, true, now, &mut lost);
        }

        slots.clear();
        for (slot, worker) in self.workers.iter() {
            worker.begin(&mut self.wire.out);
            if let Err(zmq::Error::EHOSTUNREACH) = self
                .wire
                .send_worker_command(worker.dialect, WorkerCommand::Heartbeat)
            {
                slots.push(slot);
            }
        }
        for &slot in &slots {
            self.detach_with_job(slot, WorkerRemoval::Unreachable, false, now, &mut lost);
        }

        self.scratch = slots;
        self.requeue_lost(lost, now);
    }

    /// Answers every request that waited past its deadline: `404` if its service never had a
    /// worker, else `504`.
    fn expire_requests(&mut self, now: Instant) {
        let ttl_ms = self.settings.queue_ttl.as_millis();
        let mut next: Option<Instant> = None;
        for (_, svc) in self.services.iter_mut() {
            while let Some(request) = svc.pop_expired(now) {
                svc.metrics().errors.inc();
                let (code, message) = if svc.had_worker() {
                    (
                        ErrorCode::Expired,
                        format!(
                            "request expired after {ttl_ms} ms waiting for a worker of {}",
                            svc.display_name()
                        ),
                    )
                } else {
                    (
                        ErrorCode::NotFound,
                        format!("no worker for service {}", svc.display_name()),
                    )
                };
                self.wire
                    .reply_error(request.client, request.service, code, &message);
            }
            if let Some(d) = svc.next_deadline() {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        self.next_expiry = next;
    }

    /// Drops services nobody refers to (typos, long-gone workers) with their metric series.
    fn forget_vacant_services(&mut self, now: Instant) {
        let mut slots = std::mem::take(&mut self.scratch);
        slots.clear();
        slots.extend(
            self.services
                .iter()
                .filter(|(_, s)| s.is_vacant(now, self.settings.service_linger))
                .map(|(slot, _)| slot),
        );
        for &slot in &slots {
            if let Some(svc) = self.services.remove(slot) {
                self.service_ids.remove(svc.name());
                self.metrics.forget_service(svc.metrics());
            }
        }
        self.scratch = slots;
    }

    // ---- lookups and shutdown -----------------------------------------------------------------

    /// The slot of service `name`, created on first use.
    fn service_slot(&mut self, name: &[u8], now: Instant) -> usize {
        if let Some(&slot) = self.service_ids.get(name) {
            return slot;
        }
        let svc = ServiceQueue::new(
            name,
            self.settings.queue_limit,
            self.settings.queue_limit_bytes,
            self.metrics.service(name),
            now,
        );
        let slot = self.services.insert(svc);
        self.service_ids.insert(name.into(), slot);
        slot
    }

    /// Answers every waiting and in-flight request with `500` (so clients can retry elsewhere
    /// at once) and sends DISCONNECT to every worker.
    fn shut_down(&mut self) {
        const GOODBYE: &str = "broker shutting down";
        let mut orphans: Vec<Request> = Vec::new();
        for (_, svc) in self.services.iter_mut() {
            orphans.extend(svc.drain());
        }
        let slots: Vec<usize> = self.workers.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            let now = Instant::now();
            if let Some(mut record) = self.detach_worker(slot, WorkerRemoval::Disconnected, now) {
                record.begin(&mut self.wire.out);
                let _ = self
                    .wire
                    .send_worker_command(record.dialect, WorkerCommand::Disconnect);
                orphans.extend(record.jobs.drain(..).map(|job| job.request));
            }
        }
        for request in orphans {
            self.wire.reply_error(
                request.client,
                request.service,
                ErrorCode::Internal,
                GOODBYE,
            );
        }
        info!("broker stopped");
    }
}
