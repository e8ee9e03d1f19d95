//! The async client: one I/O thread per client owns every socket and serves any number of
//! concurrent requests.
//!
//! Requests reach the thread over a channel plus a doorbell; each in-flight request gets a socket
//! of its own and the thread polls them all at once (for replies and for dropped connections),
//! so hundreds of concurrent requests cost one thread (libzmq's 1023 sockets per context stop one
//! client at roughly 800 in flight; past the pool's 64 idle sockets each request opens its own). Replies go back over a tokio channel per
//! request. A request whose caller went away is dropped together with its socket. With several
//! brokers, a request moves to the next one when its own fails it (`brokers.rs`).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::warn;

use crate::protocol::{self, Dialect};
use crate::wake::{millis_ceil, Doorbell, Waker};
use crate::Frames;

use super::brokers::{Brokers, FAILOVER_AFTER};
use super::connection::Connection;
use super::mmi::{self, BrokerInfo, ServiceInfo, WorkerInfo};
use super::probe::{Probing, Verdict};
use super::retry::{Attempts, RetryPolicy};
use super::{
    check_service, classify, send_request, ClientError, Incoming, Options, Reply, MAX_IDLE_SOCKETS,
};
use crate::curve::ClientCurve;

/// An async MDP client. Cheap to clone (clones share the I/O thread); the thread stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct AsyncClient {
    shared: Arc<Shared>,
    options: Options,
}

struct Shared {
    brokers: Arc<Brokers>,
    commands: mpsc::Sender<Command>,
    waker: Waker,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        self.waker.wake();
    }
}

enum Command {
    Request {
        service: String,
        body: Frames,
        options: Options,
        replies: UnboundedSender<Result<Reply, ClientError>>,
    },
    Stop,
}

impl AsyncClient {
    /// A client of the broker at `endpoint`, or of several brokers separated by commas among
    /// which it fails over (see the module docs), with its I/O thread started. Fails only on an
    /// invalid endpoint; the broker need not be up yet. No runtime is needed to create it.
    pub fn connect(endpoint: &str) -> Result<AsyncClient, ClientError> {
        AsyncClient::connect_with(endpoint, None)
    }

    /// A client of the broker(s) at `endpoint` whose sockets are CURVE clients with `curve`
    /// (plain ones with `None`, like [`connect`](Self::connect)). With several brokers, `curve`
    /// holds for each: they share one server key.
    pub fn connect_with(
        endpoint: &str,
        curve: Option<ClientCurve>,
    ) -> Result<AsyncClient, ClientError> {
        let brokers = Arc::new(Brokers::parse(endpoint)?);
        let context = zmq::Context::new();
        // Every endpoint is checked now, so a typo in the third is not found only at failover.
        let mut idle = Vec::new();
        for index in 0..brokers.endpoints().len() {
            let connection = Connection::open(&context, &brokers, index, curve.as_ref())?;
            if idle.is_empty() {
                idle.push(connection);
            }
        }
        let (doorbell, waker) = Doorbell::new(&context)?;
        let (commands_tx, commands_rx) = mpsc::channel();
        let io = IoThread {
            context,
            brokers: Arc::clone(&brokers),
            curve,
            doorbell,
            commands: commands_rx,
            idle,
            pending: Vec::new(),
        };
        std::thread::Builder::new()
            .name("plantd-client-io".to_owned())
            .spawn(move || io.run())
            .map_err(|e| ClientError::Protocol(format!("cannot start client thread: {e}")))?;
        Ok(AsyncClient {
            shared: Arc::new(Shared {
                brokers,
                commands: commands_tx,
                waker,
            }),
            options: Options::default(),
        })
    }

    /// This client with a different timeout for each attempt of a request (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.retry = self.options.retry.with_attempt_timeout(timeout);
        self
    }

    /// This client with `retries` resends after a failed attempt (default 0); the same as a
    /// [`RetryPolicy`] of `retries + 1` attempts of the current timeout. Only for idempotent
    /// requests: a resend may run a request twice.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.options.retry = self.options.retry.with_retries(retries);
        self
    }

    /// This client with `policy`'s attempts and per-attempt timeout.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.options.retry = policy;
        self
    }

    /// This client speaking another MDP dialect (default [`Dialect::V02`]).
    pub fn with_dialect(mut self, dialect: Dialect) -> Self {
        self.options.dialect = dialect;
        self
    }

    /// The endpoint of the broker requests go to now (with several, the one failover is at).
    pub fn endpoint(&self) -> &str {
        let brokers = &self.shared.brokers;
        brokers.endpoint(brokers.current())
    }

    /// Every broker endpoint of this client, in failover order.
    pub fn endpoints(&self) -> &[String] {
        self.shared.brokers.endpoints()
    }

    /// The timeout of each attempt of a request.
    pub fn timeout(&self) -> Duration {
        self.options.retry.attempt_timeout()
    }

    /// The attempts and per-attempt timeout of each request.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.options.retry
    }

    /// Sends `body` to `service` and returns the FINAL reply's frames (PARTIALs are skipped).
    pub async fn request(&self, service: &str, body: Frames) -> Result<Frames, ClientError> {
        let mut stream = self.request_stream(service, body)?;
        loop {
            match stream.next().await {
                Some(Ok(Reply::Final(frames))) => return Ok(frames),
                Some(Ok(Reply::Partial(_))) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// Sends `body` to `service` now; read its PARTIALs and FINAL with
    /// [`AsyncReplyStream::next`]. Dropping the stream abandons the request.
    pub fn request_stream(
        &self,
        service: &str,
        body: Frames,
    ) -> Result<AsyncReplyStream, ClientError> {
        check_service(service)?;
        let (replies, rx) = unbounded_channel();
        self.shared
            .commands
            .send(Command::Request {
                service: service.to_owned(),
                body,
                options: self.options,
                replies,
            })
            .map_err(|_| ClientError::Closed)?;
        self.shared.waker.wake();
        Ok(AsyncReplyStream { rx, done: false })
    }

    /// `mmi.service`: whether `service` has at least one registered worker.
    pub async fn service_available(&self, service: &str) -> Result<bool, ClientError> {
        let body = self
            .request(mmi::SERVICE, vec![service.as_bytes().to_vec()])
            .await?;
        mmi::parse_service(&body)
    }

    /// `mmi.services`: every service the broker knows, with worker and queue counts.
    pub async fn services(&self) -> Result<Vec<ServiceInfo>, ClientError> {
        mmi::parse_json(&self.request(mmi::SERVICES, Vec::new()).await?)
    }

    /// `mmi.workers`: the workers of `service` ([`ClientError::NotFound`] if it is unknown).
    pub async fn workers(&self, service: &str) -> Result<Vec<WorkerInfo>, ClientError> {
        let body = self
            .request(mmi::WORKERS, vec![service.as_bytes().to_vec()])
            .await?;
        mmi::parse_json(&body)
    }

    /// `mmi.broker`: the broker's version, uptime, counters and buses.
    pub async fn broker_info(&self) -> Result<BrokerInfo, ClientError> {
        mmi::parse_json(&self.request(mmi::BROKER, Vec::new()).await?)
    }
}

/// The replies of one request, in order: any PARTIALs, then the FINAL or an error, then `None`.
pub struct AsyncReplyStream {
    rx: UnboundedReceiver<Result<Reply, ClientError>>,
    done: bool,
}

impl AsyncReplyStream {
    /// The next reply, or `None` after the FINAL (or an error).
    pub async fn next(&mut self) -> Option<Result<Reply, ClientError>> {
        if self.done {
            return None;
        }
        let reply = self.rx.recv().await.unwrap_or(Err(ClientError::Closed));
        if !matches!(reply, Ok(Reply::Partial(_))) {
            self.done = true;
        }
        Some(reply)
    }
}

/// One request in flight on the I/O thread.
struct Pending {
    /// The current attempt's connection.
    connection: Connection,
    /// Whether the current attempt went out (else it waits for its connection to come up).
    sent: bool,
    service: String,
    /// Kept for resends while attempts remain.
    body: Frames,
    options: Options,
    attempts: Attempts,
    /// When the current attempt started.
    started: Instant,
    deadline: Instant,
    /// Finding out why the current attempt's connection does not come up (`probe.rs`).
    probing: Probing,
    replies: UnboundedSender<Result<Reply, ClientError>>,
}

/// What [`Pending::look`] found.
enum Looked {
    /// Nothing to do until the next wake-up or the deadline.
    Waiting,
    /// The connection dropped with the request sent: it is lost.
    Lost,
    /// Finished (answered, failed or abandoned).
    Done(Step),
}

impl Pending {
    /// Reads the request's replies, sends it if it waits for its connection and that is up, and
    /// tells a dropped connection.
    fn look(&mut self) -> Looked {
        loop {
            // Re-read after every socket call: the wake item only reports changes made after the
            // last read (see `connection`).
            let state = match self.connection.state() {
                Ok(state) => state,
                Err(e) => {
                    let _ = self.replies.send(Err(e));
                    return Looked::Done(Step::Discard);
                }
            };
            // Replies first: one that arrived before the connection dropped still answers.
            if state.readable {
                let Ok(frames) = protocol::recv_frames(self.connection.socket(), zmq::DONTWAIT)
                else {
                    continue;
                };
                match classify(frames, &self.service) {
                    Incoming::Partial(body) => {
                        self.attempts.replied();
                        self.deadline = Instant::now() + self.options.retry.attempt_timeout();
                        if self.replies.send(Ok(Reply::Partial(body))).is_err() {
                            return Looked::Done(Step::Discard);
                        }
                    }
                    Incoming::Final(result) => {
                        let _ = self.replies.send(result.map(Reply::Final));
                        return Looked::Done(Step::Recycle);
                    }
                    Incoming::Stale => {}
                }
            } else if !self.sent && state.connected {
                let body = self.attempts.body_to_send(&mut self.body);
                match send_request(
                    self.connection.socket(),
                    self.options.dialect,
                    &self.service,
                    body,
                ) {
                    Ok(()) => self.sent = true,
                    // The connection dropped just now: the last attempt's body is gone with it.
                    Err(ClientError::Zmq(zmq::Error::EAGAIN)) => return Looked::Lost,
                    Err(e) => {
                        let _ = self.replies.send(Err(e));
                        return Looked::Done(Step::Discard);
                    }
                }
            } else if self.sent && !state.connected {
                return Looked::Lost;
            } else {
                return Looked::Waiting;
            }
        }
    }
}

/// What to do with a pending request after looking at it.
enum Step {
    Keep,
    /// Started another attempt on a new connection: look at it again at once, which sends it if
    /// the connection is up and arms its wake item.
    Retry,
    /// Finished: put its connection back in the pool.
    Recycle,
    /// Finished or abandoned: close its connection.
    Discard,
}

struct IoThread {
    context: zmq::Context,
    brokers: Arc<Brokers>,
    curve: Option<ClientCurve>,
    doorbell: Doorbell,
    commands: mpsc::Receiver<Command>,
    idle: Vec<Connection>,
    pending: Vec<Pending>,
}

impl IoThread {
    fn run(mut self) {
        loop {
            let readable = match self.poll() {
                Ok(readable) => readable,
                Err(e) => {
                    warn!(error = %e, "client poll failed; stopping");
                    return;
                }
            };
            if readable.first() == Some(&true) {
                self.doorbell.drain();
            }
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Request {
                        service,
                        body,
                        options,
                        replies,
                    }) => self.start(service, body, options, replies),
                    Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            // Walk backwards so swap_remove never moves an unvisited request. New requests were
            // pushed after `readable` was computed: they are looked at now (and sent if their
            // connection is up), which also arms their wake items for the next poll.
            let polled = readable.len() - 1;
            for index in (0..self.pending.len()).rev() {
                let woken = index >= polled || readable[index + 1];
                let mut step = self.step(index, woken);
                while let Step::Retry = step {
                    step = self.step(index, true);
                }
                match step {
                    Step::Keep | Step::Retry => {}
                    Step::Recycle => {
                        let done = self.pending.swap_remove(index);
                        if self.idle.len() < MAX_IDLE_SOCKETS {
                            self.idle.push(done.connection);
                        }
                    }
                    Step::Discard => {
                        self.pending.swap_remove(index);
                    }
                }
            }
        }
    }

    /// Polls the doorbell and every pending request's connection (and probe) until something
    /// may have changed or the earliest deadline (or probe start) passes. Returns readability,
    /// doorbell first, then one entry per pending request.
    fn poll(&self) -> zmq::Result<Vec<bool>> {
        let now = Instant::now();
        let timeout = self
            .pending
            .iter()
            .map(|p| {
                let until_deadline = p.deadline.saturating_duration_since(now);
                if p.sent {
                    return until_deadline;
                }
                let waited = now.saturating_duration_since(p.started);
                let mut wait = p
                    .probing
                    .due_in(waited)
                    .map_or(until_deadline, |due| due.min(until_deadline));
                if self.brokers.several() {
                    wait = wait.min(FAILOVER_AFTER.saturating_sub(waited));
                }
                wait
            })
            .min()
            .map_or(-1, millis_ceil);
        let mut items = Vec::with_capacity(self.pending.len() + 1);
        // Which pending request each poll item belongs to (the doorbell to none).
        let mut owners = Vec::with_capacity(self.pending.len() + 1);
        items.push(self.doorbell.as_poll_item());
        owners.push(None);
        for (index, pending) in self.pending.iter().enumerate() {
            items.push(pending.connection.wake_item());
            owners.push(Some(index));
            if let Some(probe) = pending.probing.wake_item() {
                items.push(probe);
                owners.push(Some(index));
            }
        }
        zmq::poll(&mut items, timeout)?;
        let mut readable = vec![false; self.pending.len() + 1];
        readable[0] = items[0].is_readable();
        for (item, owner) in items.iter().zip(&owners).skip(1) {
            if let Some(index) = owner {
                readable[index + 1] |= item.is_readable();
            }
        }
        Ok(readable)
    }

    /// A pooled connection to the current broker (ZeroMQ reconnects it by itself if it dropped
    /// while idle) or a new one. Pooled connections to other brokers are closed.
    fn checkout(&mut self) -> Result<Connection, ClientError> {
        let current = self.brokers.current();
        self.idle.retain(|c| c.broker == current);
        match self.idle.pop() {
            Some(connection) => Ok(connection),
            None => self.open(current),
        }
    }

    /// A new connection to broker number `broker`.
    fn open(&self, broker: usize) -> Result<Connection, ClientError> {
        Connection::open(&self.context, &self.brokers, broker, self.curve.as_ref())
    }

    /// Takes on a new request; it is sent by its first [`step`](Self::step), once its
    /// connection is up.
    fn start(
        &mut self,
        service: String,
        body: Frames,
        options: Options,
        replies: UnboundedSender<Result<Reply, ClientError>>,
    ) {
        match self.checkout() {
            Ok(connection) => self.pending.push(Pending {
                connection,
                sent: false,
                service,
                body,
                options,
                attempts: Attempts::new(&options.retry),
                started: Instant::now(),
                deadline: Instant::now() + options.retry.attempt_timeout(),
                probing: Probing::default(),
                replies,
            }),
            Err(e) => {
                let _ = replies.send(Err(e));
            }
        }
    }

    /// Advances one pending request: when `woken` (its connection may have changed), looks at
    /// it; then starts its next attempt after a dropped connection or a timeout, or fails it.
    fn step(&mut self, index: usize, woken: bool) -> Step {
        let fresh = |broker: usize| {
            Connection::open(&self.context, &self.brokers, broker, self.curve.as_ref())
        };
        let pending = &mut self.pending[index];
        if pending.replies.is_closed() {
            return Step::Discard;
        }
        let looked = if woken {
            pending.look()
        } else {
            Looked::Waiting
        };
        if matches!(looked, Looked::Waiting) && !pending.sent {
            // Still no connection: a broker refusing the handshake must not look like a timeout.
            let broker = pending.connection.broker;
            let endpoint = self.brokers.endpoint(broker);
            let waited = pending.started.elapsed();
            if let Err(e) =
                pending
                    .probing
                    .start_if_due(waited, &self.context, endpoint, self.curve.as_ref())
            {
                let _ = pending.replies.send(Err(e));
                return Step::Discard;
            }
            if let Verdict::Refused(error) = pending.probing.verdict(endpoint) {
                let _ = pending.replies.send(Err(error));
                return Step::Discard;
            }
            // Nothing sent yet and the broker does not connect: wait on the next one instead,
            // within the same deadline (`brokers.rs`).
            if self.brokers.several() && waited >= FAILOVER_AFTER {
                let next = self.brokers.failed(broker);
                return match fresh(next) {
                    Ok(connection) => {
                        pending.connection = connection;
                        pending.started = Instant::now();
                        pending.probing = Probing::default();
                        Step::Retry
                    }
                    Err(e) => {
                        let _ = pending.replies.send(Err(e));
                        Step::Discard
                    }
                };
            }
        }
        let failure = match looked {
            Looked::Done(step) => return step,
            Looked::Lost => ClientError::BrokerDisconnected,
            Looked::Waiting if Instant::now() >= pending.deadline => ClientError::Timeout,
            Looked::Waiting => return Step::Keep,
        };
        if let Err(error) = pending.attempts.retry_after(failure) {
            let _ = pending.replies.send(Err(error));
            return Step::Discard;
        }
        // The next attempt on a brand-new connection, to the next broker if there are several (a
        // pooled one that has not yet noticed the same broker's death would lose it at once);
        // the old one, and any late reply on it, is closed.
        let next = self.brokers.failed(pending.connection.broker);
        match fresh(next) {
            Ok(connection) => {
                pending.connection = connection;
                pending.sent = false;
                pending.started = Instant::now();
                pending.deadline = pending.started + pending.options.retry.attempt_timeout();
                pending.probing = Probing::default();
                Step::Retry
            }
            Err(e) => {
                let _ = pending.replies.send(Err(e));
                Step::Discard
            }
        }
    }
}
