//! The async client: one I/O thread per client owns every socket and serves any number of
//! concurrent requests.
//!
//! Requests reach the thread over a channel plus a doorbell; each in-flight request gets a socket
//! of its own and the thread polls them all at once, so thousands of concurrent requests cost one
//! thread. Replies go back over a tokio channel per request. A request whose caller went away is
//! dropped together with its socket.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::warn;

use crate::protocol::{self, Dialect};
use crate::wake::{millis_ceil, Doorbell, Waker};
use crate::Frames;

use super::mmi::{self, BrokerInfo, ServiceInfo, WorkerInfo};
use super::{
    check_service, classify, connect_socket, send_request, ClientError, Incoming, Options, Reply,
    MAX_IDLE_SOCKETS,
};

/// An async MDP client. Cheap to clone (clones share the I/O thread); the thread stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct AsyncClient {
    shared: Arc<Shared>,
    options: Options,
}

struct Shared {
    endpoint: String,
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
    /// A client of the broker at `endpoint`, with its I/O thread started. Fails only on an
    /// invalid endpoint; the broker need not be up yet. No runtime is needed to create it.
    pub fn connect(endpoint: &str) -> Result<AsyncClient, ClientError> {
        let context = zmq::Context::new();
        let first = connect_socket(&context, endpoint)?;
        let (doorbell, waker) = Doorbell::new(&context)?;
        let (commands_tx, commands_rx) = mpsc::channel();
        let io = IoThread {
            context,
            endpoint: endpoint.to_owned(),
            doorbell,
            commands: commands_rx,
            idle: vec![first],
            pending: Vec::new(),
        };
        std::thread::Builder::new()
            .name("plantd-client-io".to_owned())
            .spawn(move || io.run())
            .map_err(|e| ClientError::Protocol(format!("cannot start client thread: {e}")))?;
        Ok(AsyncClient {
            shared: Arc::new(Shared {
                endpoint: endpoint.to_owned(),
                commands: commands_tx,
                waker,
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
    socket: zmq::Socket,
    service: String,
    /// Kept for resends while retries remain.
    body: Frames,
    options: Options,
    tries_left: u32,
    deadline: Instant,
    received_any: bool,
    replies: UnboundedSender<Result<Reply, ClientError>>,
}

/// What to do with a pending request after looking at it.
enum Step {
    Keep,
    /// Finished: put its socket back in the pool.
    Recycle,
    /// Finished or abandoned: close its socket.
    Discard,
}

struct IoThread {
    context: zmq::Context,
    endpoint: String,
    doorbell: Doorbell,
    commands: mpsc::Receiver<Command>,
    idle: Vec<zmq::Socket>,
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
            // Walk backwards so swap_remove never moves an unvisited request; new requests were
            // pushed after `readable` was computed and are skipped by the bound.
            let polled = readable.len() - 1;
            for index in (0..self.pending.len()).rev() {
                let socket_ready = index < polled && readable[index + 1];
                let step = self.step(index, socket_ready);
                match step {
                    Step::Keep => {}
                    Step::Recycle => {
                        let done = self.pending.swap_remove(index);
                        if self.idle.len() < MAX_IDLE_SOCKETS {
                            self.idle.push(done.socket);
                        }
                    }
                    Step::Discard => {
                        self.pending.swap_remove(index);
                    }
                }
            }
        }
    }

    /// Polls the doorbell and every pending socket until something is readable or the earliest
    /// deadline passes. Returns readability, doorbell first.
    fn poll(&self) -> zmq::Result<Vec<bool>> {
        let now = Instant::now();
        let timeout = self
            .pending
            .iter()
            .map(|p| p.deadline.saturating_duration_since(now))
            .min()
            .map_or(-1, millis_ceil);
        let mut items = Vec::with_capacity(self.pending.len() + 1);
        items.push(self.doorbell.as_poll_item());
        items.extend(
            self.pending
                .iter()
                .map(|p| p.socket.as_poll_item(zmq::POLLIN)),
        );
        zmq::poll(&mut items, timeout)?;
        Ok(items.iter().map(|i| i.is_readable()).collect())
    }

    fn checkout(&mut self) -> Result<zmq::Socket, ClientError> {
        match self.idle.pop() {
            Some(socket) => Ok(socket),
            None => connect_socket(&self.context, &self.endpoint),
        }
    }

    fn start(
        &mut self,
        service: String,
        body: Frames,
        options: Options,
        replies: UnboundedSender<Result<Reply, ClientError>>,
    ) {
        let mut pending_body = body;
        let sent = self.checkout().and_then(|socket| {
            let body = if options.retries > 0 {
                pending_body.clone()
            } else {
                std::mem::take(&mut pending_body)
            };
            send_request(&socket, options.dialect, &service, body).map(|()| socket)
        });
        match sent {
            Ok(socket) => self.pending.push(Pending {
                socket,
                service,
                body: pending_body,
                options,
                tries_left: options.retries,
                deadline: Instant::now() + options.timeout,
                received_any: false,
                replies,
            }),
            Err(e) => {
                let _ = replies.send(Err(e));
            }
        }
    }

    /// Advances one pending request: reads its replies, handles its timeout.
    fn step(&mut self, index: usize, socket_ready: bool) -> Step {
        let pending = &mut self.pending[index];
        if pending.replies.is_closed() {
            return Step::Discard;
        }
        if socket_ready {
            loop {
                let frames = match protocol::recv_frames(&pending.socket, zmq::DONTWAIT) {
                    Ok(frames) => frames,
                    Err(_) => break,
                };
                match classify(frames, &pending.service) {
                    Incoming::Partial(body) => {
                        pending.received_any = true;
                        pending.deadline = Instant::now() + pending.options.timeout;
                        if pending.replies.send(Ok(Reply::Partial(body))).is_err() {
                            return Step::Discard;
                        }
                    }
                    Incoming::Final(result) => {
                        let _ = pending.replies.send(result.map(Reply::Final));
                        return Step::Recycle;
                    }
                    Incoming::Stale => {}
                }
            }
        }
        if Instant::now() < pending.deadline {
            return Step::Keep;
        }
        if pending.received_any || pending.tries_left == 0 {
            let _ = pending.replies.send(Err(ClientError::Timeout));
            return Step::Discard;
        }
        // Resend on a new socket; the old one (and any late reply on it) is closed.
        pending.tries_left -= 1;
        let body = if pending.tries_left > 0 {
            pending.body.clone()
        } else {
            std::mem::take(&mut pending.body)
        };
        let (service, dialect, timeout) = (
            pending.service.clone(),
            pending.options.dialect,
            pending.options.timeout,
        );
        let resent = connect_socket(&self.context, &self.endpoint)
            .and_then(|socket| send_request(&socket, dialect, &service, body).map(|()| socket));
        let pending = &mut self.pending[index];
        match resent {
            Ok(socket) => {
                pending.socket = socket;
                pending.deadline = Instant::now() + timeout;
                Step::Keep
            }
            Err(e) => {
                let _ = pending.replies.send(Err(e));
                Step::Discard
            }
        }
    }
}
