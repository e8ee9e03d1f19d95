//! The blocking client: each request runs on the caller's thread with a pooled socket of its own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::{self, Dialect};
use crate::wake::millis_ceil;
use crate::Frames;

use super::mmi::{self, BrokerInfo, ServiceInfo, WorkerInfo};
use super::{
    check_service, classify, connect_socket, send_request, ClientError, Incoming, Options, Reply,
    MAX_IDLE_SOCKETS,
};

/// A blocking MDP client. `Send + Sync` and cheap to clone (clones share the socket pool), so
/// many threads can make requests through one client at once.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    options: Options,
}

struct Shared {
    context: zmq::Context,
    endpoint: String,
    idle: Mutex<Vec<zmq::Socket>>,
}

impl Client {
    /// A client of the broker at `endpoint`. Fails only on an invalid endpoint; the broker need
    /// not be up yet.
    pub fn connect(endpoint: &str) -> Result<Client, ClientError> {
        let context = zmq::Context::new();
        let first = connect_socket(&context, endpoint)?;
        Ok(Client {
            shared: Arc::new(Shared {
                context,
                endpoint: endpoint.to_owned(),
                idle: Mutex::new(vec![first]),
            }),
            options: Options::default(),
        })
    }

    /// This client with a different per-request timeout (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// This client with `retries` resends after a timeout (default 0).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.options.retries = retries;
        self
    }

    /// This client speaking another MDP dialect (default [`Dialect::V02`]).
    pub fn with_dialect(mut self, dialect: Dialect) -> Self {
        self.options.dialect = dialect;
        self
    }

    /// The broker endpoint.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.options.timeout
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
            tries_left: self.options.retries,
            socket: None,
            received_any: false,
            done: false,
        };
        stream.send()?;
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

    fn checkout(&self) -> Result<zmq::Socket, ClientError> {
        let pooled = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        match pooled {
            Some(socket) => Ok(socket),
            None => connect_socket(&self.shared.context, &self.shared.endpoint),
        }
    }

    fn checkin(&self, socket: zmq::Socket) {
        let mut idle = self.shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_SOCKETS {
            idle.push(socket);
        }
    }
}

/// The replies of one request, in order; see [`Client::request_stream`].
pub struct ReplyStream {
    client: Client,
    service: String,
    /// Kept for resends while retries remain; taken by the last try.
    body: Frames,
    tries_left: u32,
    socket: Option<zmq::Socket>,
    received_any: bool,
    done: bool,
}

impl ReplyStream {
    /// Sends (or resends) the request on a socket of its own.
    fn send(&mut self) -> Result<(), ClientError> {
        let socket = self.client.checkout()?;
        let body = if self.tries_left > 0 {
            self.body.clone()
        } else {
            std::mem::take(&mut self.body)
        };
        send_request(&socket, self.client.options.dialect, &self.service, body)?;
        self.socket = Some(socket);
        Ok(())
    }

    fn next_reply(&mut self) -> Result<Reply, ClientError> {
        let timeout = self.client.options.timeout;
        let mut deadline = Instant::now() + timeout;
        loop {
            let Some(socket) = self.socket.as_ref() else {
                return Err(ClientError::Closed);
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                // The socket may still get the late reply: close it so nobody else can.
                self.socket = None;
                if self.received_any || self.tries_left == 0 {
                    return Err(ClientError::Timeout);
                }
                self.tries_left -= 1;
                self.send()?;
                deadline = Instant::now() + timeout;
                continue;
            }
            let mut items = [socket.as_poll_item(zmq::POLLIN)];
            zmq::poll(&mut items, millis_ceil(remaining))?;
            if !items[0].is_readable() {
                continue;
            }
            let frames = match protocol::recv_frames(socket, zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => continue,
                Err(e) => return Err(e.into()),
            };
            match classify(frames, &self.service) {
                Incoming::Partial(body) => {
                    self.received_any = true;
                    return Ok(Reply::Partial(body));
                }
                Incoming::Final(result) => {
                    if let Some(socket) = self.socket.take() {
                        self.client.checkin(socket);
                    }
                    return result.map(Reply::Final);
                }
                Incoming::Stale => {}
            }
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
