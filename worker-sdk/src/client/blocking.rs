//! The blocking client: each request runs on the caller's thread with a pooled socket of its own,
//! watching for its reply and for its connection dropping, and moving to the next broker when its
//! own fails it (`brokers.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::{self, Dialect};
use crate::wake::millis_ceil;
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

/// A blocking MDP client. `Send + Sync` and cheap to clone (clones share the socket pool), so
/// many threads can make requests through one client at once.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    options: Options,
}

struct Shared {
    context: zmq::Context,
    brokers: Brokers,
    curve: Option<ClientCurve>,
    idle: Mutex<Vec<Connection>>,
}

impl Client {
    /// A client of the broker at `endpoint`, or of several brokers separated by commas
    /// (`tcp://b0:9797,tcp://b1:9797`) among which it fails over (see the module docs). Fails
    /// only on an invalid endpoint; the broker need not be up yet.
    pub fn connect(endpoint: &str) -> Result<Client, ClientError> {
        Client::connect_with(endpoint, None)
    }

    /// A client of the broker(s) at `endpoint` whose sockets are CURVE clients with `curve`
    /// (plain ones with `None`, like [`connect`](Self::connect)). With several brokers, `curve`
    /// holds for each: they share one server key.
    pub fn connect_with(endpoint: &str, curve: Option<ClientCurve>) -> Result<Client, ClientError> {
        let brokers = Brokers::parse(endpoint)?;
        let context = zmq::Context::new();
        // Every endpoint is checked now, so a typo in the third is not found only at failover.
        let mut first = None;
        for index in 0..brokers.endpoints().len() {
            let connection = Connection::open(&context, &brokers, index, curve.as_ref())?;
            first.get_or_insert(connection);
        }
        Ok(Client {
            shared: Arc::new(Shared {
                context,
                brokers,
                curve,
                idle: Mutex::new(first.into_iter().collect()),
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
    pub fn request(&self, service: &str, body: Frames) -> Result<Frames, ClientError> {
        let mut stream = self.request_stream(service, body)?;
        loop {
            match stream.next() {
                Some(Ok(Reply::Final(frames))) => return Ok(frames),
                Some(Ok(Reply::Partial(_))) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// Sends `body` to `service` and returns an iterator over its replies: any PARTIALs, then the
    /// FINAL (or an error), then `None`. Dropping the iterator early abandons the request.
    pub fn request_stream(&self, service: &str, body: Frames) -> Result<ReplyStream, ClientError> {
        check_service(service)?;
        let mut stream = ReplyStream {
            client: self.clone(),
            service: service.to_owned(),
            body,
            attempts: Attempts::new(&self.options.retry),
            connection: None,
            sent: false,
            started: Instant::now(),
            deadline: Instant::now(),
            probing: Probing::default(),
            done: false,
        };
        stream.attempt_on(self.checkout()?);
        // Out now if the connection is up (else as soon as it is, while replies are awaited).
        stream.send_if_connected()?;
        Ok(stream)
    }

    /// `mmi.service`: whether `service` has at least one registered worker.
    pub fn service_available(&self, service: &str) -> Result<bool, ClientError> {
        mmi::parse_service(&self.request(mmi::SERVICE, vec![service.as_bytes().to_vec()])?)
    }

    /// `mmi.services`: every service the broker knows, with worker and queue counts.
    pub fn services(&self) -> Result<Vec<ServiceInfo>, ClientError> {
        mmi::parse_json(&self.request(mmi::SERVICES, Vec::new())?)
    }

    /// `mmi.workers`: the workers of `service` ([`ClientError::NotFound`] if it is unknown).
    pub fn workers(&self, service: &str) -> Result<Vec<WorkerInfo>, ClientError> {
        mmi::parse_json(&self.request(mmi::WORKERS, vec![service.as_bytes().to_vec()])?)
    }

    /// `mmi.broker`: the broker's version, uptime, counters and buses.
    pub fn broker_info(&self) -> Result<BrokerInfo, ClientError> {
        mmi::parse_json(&self.request(mmi::BROKER, Vec::new())?)
    }

    /// A pooled connection to the current broker (ZeroMQ reconnects it by itself if it dropped
    /// while idle) or a new one. Pooled connections to other brokers are closed.
    fn checkout(&self) -> Result<Connection, ClientError> {
        let current = self.shared.brokers.current();
        let pooled = {
            let mut idle = self.shared.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|c| c.broker == current);
            idle.pop()
        };
        match pooled {
            Some(connection) => Ok(connection),
            None => self.open(current),
        }
    }

    /// A new connection to broker number `broker`.
    fn open(&self, broker: usize) -> Result<Connection, ClientError> {
        let shared = &self.shared;
        Connection::open(
            &shared.context,
            &shared.brokers,
            broker,
            shared.curve.as_ref(),
        )
    }

    fn checkin(&self, connection: Connection) {
        let mut idle = self.shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_SOCKETS {
            idle.push(connection);
        }
    }
}

/// The replies of one request, in order; see [`Client::request_stream`].
pub struct ReplyStream {
    client: Client,
    service: String,
    /// Kept for resends while attempts remain; taken by the last one.
    body: Frames,
    attempts: Attempts,
    /// The current attempt's connection; `None` once the request is over.
    connection: Option<Connection>,
    /// Whether the current attempt went out (else it waits for its connection to come up).
    sent: bool,
    /// When the current attempt started.
    started: Instant,
    /// When the current wait (for the connection and the first reply, or for the next reply)
    /// times out.
    deadline: Instant,
    /// Finding out why the current attempt's connection does not come up (`probe.rs`).
    probing: Probing,
    done: bool,
}

impl ReplyStream {
    /// Starts an attempt on `connection`; the request goes out once it is connected.
    fn attempt_on(&mut self, connection: Connection) {
        self.wait_on(connection);
        self.deadline = self.started + self.client.options.retry.attempt_timeout();
    }

    /// Waits for `connection` to come up to send the current attempt on it.
    fn wait_on(&mut self, connection: Connection) {
        self.connection = Some(connection);
        self.sent = false;
        self.started = Instant::now();
        self.probing = Probing::default();
    }

    /// The current attempt has not gone out and its broker's connection is not up after
    /// [`FAILOVER_AFTER`]: it waits on a connection to the next broker instead, within the same
    /// deadline (nothing was sent, so no attempt is used).
    fn fail_over(&mut self, broker: usize) -> Result<(), ClientError> {
        let next = self.client.shared.brokers.failed(broker);
        let fresh = self.client.open(next)?;
        self.wait_on(fresh);
        Ok(())
    }

    /// Sends the current attempt if it has not gone out yet and its connection is up.
    fn send_if_connected(&mut self) -> Result<(), ClientError> {
        let Some(connection) = self.connection.as_ref() else {
            return Err(ClientError::Closed);
        };
        if self.sent || !connection.state()?.connected {
            return Ok(());
        }
        let body = self.attempts.body_to_send(&mut self.body);
        let dialect = self.client.options.dialect;
        match send_request(connection.socket(), None, dialect, &self.service, body) {
            Ok(()) => {
                self.sent = true;
                Ok(())
            }
            // The connection dropped just now: the last attempt's body is gone with it.
            Err(ClientError::Zmq(zmq::Error::EAGAIN)) => {
                self.retry_after(ClientError::BrokerDisconnected)
            }
            Err(e) => Err(e),
        }
    }

    /// Ends the current attempt, which failed with `error`: its socket is closed (a late reply
    /// can reach nobody) and the next attempt starts on a brand-new connection, to the next
    /// broker if the client has several, if attempts remain; else `error`. Never a pooled
    /// connection: one that has not yet noticed the same broker's death would lose the resend at
    /// once.
    fn retry_after(&mut self, error: ClientError) -> Result<(), ClientError> {
        let broker = self.connection.take().map_or(0, |c| c.broker);
        self.attempts.retry_after(error)?;
        let next = self.client.shared.brokers.failed(broker);
        let fresh = self.client.open(next)?;
        self.attempt_on(fresh);
        Ok(())
    }

    fn next_reply(&mut self) -> Result<Reply, ClientError> {
        self.deadline = Instant::now() + self.client.options.retry.attempt_timeout();
        loop {
            let Some(connection) = self.connection.as_ref() else {
                return Err(ClientError::Closed);
            };
            // Re-read after every wake-up and socket call: the wake item only reports changes
            // made after the last read (see `connection`).
            let state = connection.state()?;
            // Replies first: one that arrived before the connection dropped still answers.
            if state.readable {
                let frames = match protocol::recv_frames(connection.socket(), zmq::DONTWAIT) {
                    Ok(frames) => frames,
                    Err(zmq::Error::EAGAIN) => continue,
                    Err(e) => return Err(e.into()),
                };
                match classify(frames, &self.service) {
                    Incoming::Partial(body) => {
                        self.attempts.replied();
                        return Ok(Reply::Partial(body));
                    }
                    Incoming::Final(result) => {
                        if let Some(connection) = self.connection.take() {
                            self.client.checkin(connection);
                        }
                        return result.map(Reply::Final);
                    }
                    Incoming::Stale => continue,
                }
            }
            if !self.sent && state.connected {
                self.send_if_connected()?;
                continue;
            }
            if self.sent && !state.connected {
                self.retry_after(ClientError::BrokerDisconnected)?;
                continue;
            }
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                self.retry_after(ClientError::Timeout)?;
                continue;
            }
            let mut wait = remaining;
            if !self.sent {
                // Still no connection: a broker refusing the handshake must not look like a
                // timeout.
                let shared = &self.client.shared;
                let broker = connection.broker;
                let endpoint = shared.brokers.endpoint(broker);
                let waited = self.started.elapsed();
                self.probing.start_if_due(
                    waited,
                    &shared.context,
                    endpoint,
                    shared.curve.as_ref(),
                )?;
                if let Verdict::Refused(error) = self.probing.verdict(endpoint) {
                    self.connection = None;
                    return Err(error);
                }
                if let Some(due) = self.probing.due_in(waited) {
                    wait = wait.min(due);
                }
                if shared.brokers.several() {
                    if waited >= FAILOVER_AFTER {
                        self.fail_over(broker)?;
                        continue;
                    }
                    wait = wait.min(FAILOVER_AFTER - waited);
                }
            }
            let Some(connection) = self.connection.as_ref() else {
                return Err(ClientError::Closed);
            };
            let mut items = vec![connection.wake_item()];
            items.extend(self.probing.wake_item());
            zmq::poll(&mut items, millis_ceil(wait))?;
        }
    }
}

impl Iterator for ReplyStream {
    type Item = Result<Reply, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let reply = self.next_reply();
        if !matches!(reply, Ok(Reply::Partial(_))) {
            self.done = true;
        }
        Some(reply)
    }
}
