//! The async client: one I/O thread per client owns one socket per broker and serves any number
//! of concurrent requests over it.
//!
//! Requests reach the thread over a channel plus a doorbell. Every attempt of a request gets a
//! fresh request tag (plantd's extension, `protocol::tag`) and goes out on the one connection to
//! its broker, so thousands of requests in flight cost one socket and one thread, and a late reply
//! to an abandoned attempt matches no tag and is dropped. Replies go back over a tokio channel per
//! request. Deadlines sit in a heap, so a wake-up costs the messages it reads, not the number of
//! requests in flight. A request whose caller went away is skipped when it comes up to be sent and
//! dropped when its deadline passes. With several brokers, a request moves to the next one when
//! its own fails it (`brokers.rs`).
//!
//! Tags need a plantd broker: brokers without the extension drop tagged requests. Against those,
//! use the blocking [`Client`](super::Client), which stays plain MDP.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState as FastHash;
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
use super::{check_service, classify, send_request, ClientError, Incoming, Options, Reply};
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
        // Every endpoint is checked now, so a typo in the third is not found only at failover;
        // the first broker's link is opened at once so it is up by the first request.
        let mut links = Vec::new();
        for index in 0..brokers.endpoints().len() {
            let link = Link::open(&context, &brokers, index, curve.as_ref())?;
            links.push((index == 0).then_some(link));
        }
        let (doorbell, waker) = Doorbell::new(&context)?;
        let (commands_tx, commands_rx) = mpsc::channel();
        let io = IoThread {
            context,
            brokers: Arc::clone(&brokers),
            curve,
            doorbell,
            commands: commands_rx,
            links,
            requests: HashMap::default(),
            next_tag: 0,
            deadlines: BinaryHeap::new(),
            requeued: false,
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

/// One request in flight on the I/O thread, under the tag of its current attempt.
struct Pending {
    /// Which broker the current attempt goes to (an index into the client's [`Brokers`]).
    broker: usize,
    service: String,
    /// Kept for resends while attempts remain.
    body: Frames,
    options: Options,
    attempts: Attempts,
    /// When the current attempt (or the wait for its next reply) times out.
    deadline: Instant,
    replies: UnboundedSender<Result<Reply, ClientError>>,
}

/// The connection to one broker and the requests that use it.
struct Link {
    connection: Connection,
    /// Tags of requests waiting for the connection to come up, oldest first.
    unsent: VecDeque<u32>,
    /// Tags sent on the connection and not yet answered: lost if it drops. A set, because
    /// replies to thousands in flight come back in any order and each must be found in O(1).
    sent: HashSet<u32, FastHash>,
    /// Since when requests have been waiting for the connection (`None` while it is up or
    /// nothing waits).
    waiting_since: Option<Instant>,
    /// Finding out why the connection does not come up (`probe.rs`).
    probing: Probing,
}

impl Link {
    fn open(
        context: &zmq::Context,
        brokers: &Brokers,
        broker: usize,
        curve: Option<&ClientCurve>,
    ) -> Result<Link, ClientError> {
        // Every request in flight shares this socket.
        let connection = Connection::open_with(context, brokers, broker, curve, true)?;
        Ok(Link {
            connection,
            unsent: VecDeque::new(),
            sent: HashSet::default(),
            waiting_since: None,
            probing: Probing::default(),
        })
    }
}

/// Why an attempt ended without its FINAL.
enum Failure {
    /// Its connection dropped after it was sent.
    Lost,
    /// No reply within its timeout.
    TimedOut,
}

struct IoThread {
    context: zmq::Context,
    brokers: Arc<Brokers>,
    curve: Option<ClientCurve>,
    doorbell: Doorbell,
    commands: mpsc::Receiver<Command>,
    /// One link per broker, opened when first used.
    links: Vec<Option<Link>>,
    /// Requests in flight by the tag of their current attempt.
    /// Keyed by tag; our own numbers, so hashed for speed rather than against chosen keys.
    requests: HashMap<u32, Pending, FastHash>,
    next_tag: u32,
    /// Every deadline set, earliest first; an entry whose request has since moved on (answered,
    /// re-tagged, or given a later deadline by a PARTIAL) is skipped when it comes up.
    deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Set when an attempt is queued on a link: the links must be looked at again.
    requeued: bool,
}

impl IoThread {
    fn run(mut self) {
        loop {
            let woken = match self.poll() {
                Ok(woken) => woken,
                Err(e) => {
                    warn!(error = %e, "client poll failed; stopping");
                    return;
                }
            };
            if woken {
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
            self.expire(Instant::now());
            // Every link is looked at after every wake-up: there are as many as brokers, and the
            // look re-arms its edge-triggered wake item (`connection.rs`). Again while attempts
            // were moved onto links already looked at: nothing else would wake them.
            loop {
                self.requeued = false;
                for broker in 0..self.links.len() {
                    self.serve(broker);
                    self.wait_for(broker);
                }
                if !self.requeued {
                    break;
                }
            }
        }
    }

    /// Polls the doorbell, every open link (and its probe) until something may have changed or
    /// the earliest deadline, probe or failover is due. Returns whether the doorbell rang.
    fn poll(&self) -> zmq::Result<bool> {
        let now = Instant::now();
        let mut wait = self
            .deadlines
            .peek()
            .map(|Reverse((deadline, _))| deadline.saturating_duration_since(now));
        let mut items = Vec::with_capacity(1 + 2 * self.links.len());
        items.push(self.doorbell.as_poll_item());
        for link in self.links.iter().flatten() {
            items.push(link.connection.wake_item());
            if let Some(probe) = link.probing.wake_item() {
                items.push(probe);
            }
            if let Some(since) = link.waiting_since {
                let waited = now.saturating_duration_since(since);
                let mut due = link.probing.due_in(waited);
                if self.brokers.several() {
                    let failover = FAILOVER_AFTER.saturating_sub(waited);
                    due = Some(due.map_or(failover, |d| d.min(failover)));
                }
                if let Some(due) = due {
                    wait = Some(wait.map_or(due, |w| w.min(due)));
                }
            }
        }
        zmq::poll(&mut items, wait.map_or(-1, millis_ceil))?;
        Ok(items[0].is_readable())
    }

    /// The link to broker number `broker`, opened if it is not yet.
    fn link(&mut self, broker: usize) -> Result<&mut Link, ClientError> {
        if self.links[broker].is_none() {
            let link = Link::open(&self.context, &self.brokers, broker, self.curve.as_ref())?;
            self.links[broker] = Some(link);
        }
        Ok(self.links[broker].as_mut().expect("opened above"))
    }

    /// A tag no request in flight uses.
    fn fresh_tag(&mut self) -> u32 {
        loop {
            self.next_tag = self.next_tag.wrapping_add(1);
            if !self.requests.contains_key(&self.next_tag) {
                return self.next_tag;
            }
        }
    }

    /// Takes on a new request for the current broker; it is sent when that link is next served.
    fn start(
        &mut self,
        service: String,
        body: Frames,
        options: Options,
        replies: UnboundedSender<Result<Reply, ClientError>>,
    ) {
        let pending = Pending {
            broker: self.brokers.current(),
            service,
            body,
            options,
            attempts: Attempts::new(&options.retry),
            deadline: Instant::now() + options.retry.attempt_timeout(),
            replies,
        };
        self.enqueue(pending);
    }

    /// Files `pending` under a fresh tag in its broker's queue of unsent requests.
    fn enqueue(&mut self, pending: Pending) {
        let tag = self.fresh_tag();
        let broker = pending.broker;
        let deadline = pending.deadline;
        match self.link(broker) {
            Ok(link) => link.unsent.push_back(tag),
            Err(e) => {
                let _ = pending.replies.send(Err(e));
                return;
            }
        }
        self.deadlines.push(Reverse((deadline, tag)));
        self.requests.insert(tag, pending);
        self.requeued = true;
    }

    /// Reads the link's replies, sends its waiting requests while the connection is up, and
    /// fails over the requests it lost if the connection dropped.
    fn serve(&mut self, broker: usize) {
        let Some(link) = self.links[broker].as_mut() else {
            return;
        };
        loop {
            // Re-read after every socket call: the wake item only reports changes made after the
            // last read (see `connection`).
            let state = match link.connection.state() {
                Ok(state) => state,
                Err(e) => {
                    warn!(error = %e, "client socket failed");
                    return;
                }
            };
            // Replies first: one that arrived before the connection dropped still answers.
            if state.readable {
                let Ok(frames) = protocol::recv_frames(link.connection.socket(), zmq::DONTWAIT)
                else {
                    continue;
                };
                let Some((tag, frames)) = protocol::tag::split_reply(frames) else {
                    continue;
                };
                let Some(pending) = self.requests.get_mut(&tag) else {
                    // A late reply to an attempt that timed out, or to an abandoned request.
                    continue;
                };
                match classify(frames, &pending.service) {
                    Incoming::Partial(body) => {
                        pending.attempts.replied();
                        pending.deadline = Instant::now() + pending.options.retry.attempt_timeout();
                        self.deadlines.push(Reverse((pending.deadline, tag)));
                        if pending.replies.send(Ok(Reply::Partial(body))).is_err() {
                            self.requests.remove(&tag);
                            link.sent.remove(&tag);
                        }
                    }
                    Incoming::Final(result) => {
                        let _ = pending.replies.send(result.map(Reply::Final));
                        self.requests.remove(&tag);
                        link.sent.remove(&tag);
                    }
                    Incoming::Stale => {}
                }
            } else if state.connected && !link.unsent.is_empty() {
                link.waiting_since = None;
                link.probing = Probing::default();
                let tag = link.unsent.pop_front().expect("not empty");
                let Some(pending) = self.requests.get_mut(&tag) else {
                    continue;
                };
                if pending.replies.is_closed() {
                    self.requests.remove(&tag);
                    continue;
                }
                let body = pending.attempts.body_to_send(&mut pending.body);
                match send_request(
                    link.connection.socket(),
                    Some(tag),
                    pending.options.dialect,
                    &pending.service,
                    body,
                ) {
                    // EAGAIN: the connection dropped just now and the attempt's body is gone with
                    // it; the next look finds the connection down and the attempt lost.
                    Ok(()) | Err(ClientError::Zmq(zmq::Error::EAGAIN)) => {
                        link.sent.insert(tag);
                    }
                    Err(e) => {
                        let _ = pending.replies.send(Err(e));
                        self.requests.remove(&tag);
                    }
                }
            } else if !state.connected && !link.sent.is_empty() {
                // Retried in the order they were sent (tags are handed out in increasing order).
                let mut lost: Vec<u32> = std::mem::take(&mut link.sent).into_iter().collect();
                lost.sort_unstable();
                for tag in lost {
                    self.fail_attempt(tag, Failure::Lost);
                }
                return;
            } else {
                if !state.connected && !link.unsent.is_empty() {
                    link.waiting_since.get_or_insert_with(Instant::now);
                }
                return;
            }
        }
    }

    /// For a link whose requests wait for its connection: probes why it does not come up, and
    /// with several brokers moves them on, unsent, after [`FAILOVER_AFTER`].
    fn wait_for(&mut self, broker: usize) {
        let Some(link) = self.links[broker].as_mut() else {
            return;
        };
        let Some(since) = link.waiting_since else {
            return;
        };
        let endpoint = self.brokers.endpoint(broker);
        let waited = since.elapsed();
        let refused =
            match link
                .probing
                .start_if_due(waited, &self.context, endpoint, self.curve.as_ref())
            {
                Err(e) => Some(e),
                Ok(()) => match link.probing.verdict(endpoint) {
                    Verdict::Refused(error) => Some(error),
                    Verdict::Wait => None,
                },
            };
        if let Some(error) = refused {
            // A broker refusing the handshake must not look like a timeout: every request
            // waiting on it gets the error (each its own copy).
            let waiting = std::mem::take(&mut link.unsent);
            link.waiting_since = None;
            for tag in waiting {
                if let Some(pending) = self.requests.remove(&tag) {
                    let _ = pending.replies.send(Err(same_error(&error)));
                }
            }
            return;
        }
        if self.brokers.several() && waited >= FAILOVER_AFTER {
            // Nothing sent yet and the broker does not connect: wait on the next one instead,
            // within the same deadlines (`brokers.rs`).
            let waiting = std::mem::take(&mut link.unsent);
            link.waiting_since = None;
            link.probing = Probing::default();
            let next = self.brokers.failed(broker);
            for tag in waiting {
                if let Some(mut pending) = self.requests.remove(&tag) {
                    pending.broker = next;
                    self.enqueue(pending);
                }
            }
        }
    }

    /// Fails or retries every request whose deadline has passed by `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, tag))) = self.deadlines.peek() {
            if deadline > now {
                return;
            }
            self.deadlines.pop();
            let current = self
                .requests
                .get(&tag)
                .is_some_and(|p| p.deadline == deadline);
            if current {
                if let Some(link) = self.links[self.requests[&tag].broker].as_mut() {
                    link.unsent.retain(|&t| t != tag);
                    link.sent.remove(&tag);
                }
                self.fail_attempt(tag, Failure::TimedOut);
            }
        }
    }

    /// Ends the current attempt of the request under `tag` (already out of its link's lists):
    /// starts the next one, to the next broker if there are several, while attempts remain, or
    /// fails the request.
    fn fail_attempt(&mut self, tag: u32, failure: Failure) {
        let Some(mut pending) = self.requests.remove(&tag) else {
            return;
        };
        if pending.replies.is_closed() {
            return;
        }
        let error = match failure {
            Failure::Lost => ClientError::BrokerDisconnected,
            Failure::TimedOut => ClientError::Timeout,
        };
        if let Err(error) = pending.attempts.retry_after(error) {
            let _ = pending.replies.send(Err(error));
            return;
        }
        pending.broker = self.brokers.failed(pending.broker);
        pending.deadline = Instant::now() + pending.options.retry.attempt_timeout();
        // A fresh tag: a late reply to the failed attempt must not answer this one.
        self.enqueue(pending);
    }
}

/// A copy of a refused handshake's error, for each request that waited on it.
fn same_error(error: &ClientError) -> ClientError {
    match error {
        ClientError::Authentication { endpoint, reason } => ClientError::Authentication {
            endpoint: endpoint.clone(),
            reason: *reason,
        },
        other => ClientError::Protocol(other.to_string()),
    }
}
