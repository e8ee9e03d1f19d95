//! The MDP worker runtime: serve one service from one or more brokers.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use plantd_worker_sdk::{Worker, HandlerError, Frames, Shutdown};
//! # async fn example(shutdown: Shutdown) -> Result<(), Box<dyn std::error::Error>> {
//! let worker = Worker::builder("org.plantd.module.Echo")
//!     .endpoint("tcp://127.0.0.1:9797")
//!     .heartbeat(Duration::from_millis(2500))
//!     .liveness(3)
//!     .concurrency(4)
//!     .handler(|request: Frames| -> Result<Frames, HandlerError> { Ok(request) })
//!     .build()?;
//! worker.run(shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! Each endpoint gets `concurrency` sessions; each session is one DEALER socket on its own thread
//! (see [`session`]) and holds one request at a time, or up to `credit` with plantd's credit
//! extension. Handlers run off that thread (see
//! [`handler`]), so heartbeats keep flowing while they work. A handler error or panic becomes the
//! reply `["plantd.error", "500", message]` and the session carries on.

mod handler;
mod session;

use std::fmt;
use std::future::Future;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tracing::debug;

use crate::curve::ClientCurve;
use crate::health::Check;
use crate::protocol::Dialect;
use crate::wake::Doorbell;
use crate::Shutdown;

pub use handler::Responder;
use handler::{BoxFuture, Executor, Handler};
use session::{Registrations, Session, Unanswered};

/// Message bodies as the SDK hands them to handlers and callers: one `Vec<u8>` per frame.
pub type Frames = Vec<Vec<u8>>;

/// Default heartbeat interval (DESIGN.md §4).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(2500);
/// Default liveness: missed heartbeat intervals before the broker is considered lost.
pub const DEFAULT_LIVENESS: u32 = 3;
/// Default first reconnect delay after a broker loss.
pub const DEFAULT_RECONNECT_INITIAL: Duration = Duration::from_millis(250);
/// Default cap of the exponential reconnect delay.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(10);

/// A handler's failure; the client receives its message in a `plantd.error` 500 reply.
///
/// Any `std::error::Error` converts into it, so handlers can use `?`.
pub struct HandlerError {
    message: String,
}

impl HandlerError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
        }
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandlerError({:?})", self.message)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::new(error.to_string())
    }
}

/// Why a worker could not be built or started.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The service name is empty or reserved (`mmi.*`).
    #[error("invalid service name {0:?}: must be non-empty and not start with \"mmi.\"")]
    InvalidService(String),
    /// No broker endpoint was given.
    #[error("no broker endpoint configured")]
    NoEndpoint,
    /// No handler was given.
    #[error("no handler configured")]
    NoHandler,
    /// A setting is out of range.
    #[error("invalid worker setting: {0}")]
    InvalidSetting(&'static str),
    /// An endpoint could not be connected to (bad syntax or unsupported transport).
    #[error("invalid broker endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What libzmq said.
        source: zmq::Error,
    },
    /// A socket could not be created.
    #[error("zmq error: {0}")]
    Zmq(#[from] zmq::Error),
    /// A session thread could not be started.
    #[error("cannot start worker thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Settings shared by every session of one worker.
pub(crate) struct Settings {
    pub(crate) service: String,
    pub(crate) dialect: Dialect,
    pub(crate) heartbeat: Duration,
    pub(crate) liveness: u32,
    pub(crate) reconnect_initial: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) credit: u32,
    pub(crate) curve: Option<ClientCurve>,
}

/// Builds a [`Worker`]; start with [`Worker::builder`].
pub struct WorkerBuilder {
    service: String,
    endpoints: Vec<String>,
    heartbeat: Duration,
    liveness: u32,
    reconnect_initial: Duration,
    reconnect_max: Duration,
    concurrency: usize,
    credit: u32,
    dialect: Dialect,
    curve: Option<ClientCurve>,
    connection_check: Option<Check>,
    handler: Option<Handler>,
}

/// A configured worker for one service; [`Worker::run`] serves until shutdown.
pub struct Worker {
    settings: Arc<Settings>,
    endpoints: Vec<String>,
    concurrency: usize,
    connection_check: Option<Check>,
    handler: Handler,
}

impl Worker {
    /// Starts building a worker for `service`.
    pub fn builder(service: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            service: service.into(),
            endpoints: Vec::new(),
            heartbeat: DEFAULT_HEARTBEAT,
            liveness: DEFAULT_LIVENESS,
            reconnect_initial: DEFAULT_RECONNECT_INITIAL,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            concurrency: 1,
            credit: 1,
            dialect: Dialect::V02,
            curve: None,
            connection_check: None,
            handler: None,
        }
    }

    /// The service this worker serves.
    pub fn service(&self) -> &str {
        &self.settings.service
    }

    /// Serves requests until `shutdown` is cancelled (or this future is dropped), then sends
    /// DISCONNECT on every session and returns.
    ///
    /// Fails at once if an endpoint is invalid; a broker that is down is not an error (sessions
    /// keep trying to register).
    pub async fn run(self, shutdown: Shutdown) -> Result<(), WorkerError> {
        let runtime = tokio::runtime::Handle::current();
        let context = zmq::Context::new();
        let registrations = Arc::new(Registrations::new(self.connection_check.clone()));
        // A child token cancelled by the guard stops the sessions if this future is dropped.
        let stop = shutdown.child_token();
        let _stop_on_drop = stop.clone().drop_guard();

        let mut sessions = Vec::new();
        let mut wakers = Vec::new();
        for endpoint in &self.endpoints {
            let unanswered = Arc::new(Unanswered::default());
            for index in 0..self.concurrency {
                let first_socket =
                    session::connect(&context, endpoint, self.settings.curve.as_ref()).map_err(
                        |source| WorkerError::InvalidEndpoint {
                            endpoint: endpoint.clone(),
                            source,
                        },
                    )?;
                let (doorbell, waker) = Doorbell::new(&context)?;
                let (outcomes_tx, outcomes_rx) = mpsc::channel();
                let executor = Executor::new(
                    self.handler.clone(),
                    self.settings.dialect,
                    outcomes_tx,
                    waker.clone(),
                    runtime.clone(),
                    format!("plantd-handler-{index}"),
                );
                wakers.push(waker);
                sessions.push(Session {
                    settings: self.settings.clone(),
                    endpoint: endpoint.clone(),
                    context: context.clone(),
                    first_socket: Some(first_socket),
                    doorbell,
                    outcomes: outcomes_rx,
                    executor,
                    registrations: registrations.clone(),
                    unanswered: unanswered.clone(),
                    stop: stop.clone(),
                    trust_connection: true,
                });
            }
        }

        // Each session thread holds a sender; `recv` returns `None` once all of them have ended.
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
        for (index, session) in sessions.into_iter().enumerate() {
            let done = done_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("plantd-worker-{index}"))
                .spawn(move || {
                    session.run();
                    drop(done);
                });
            if let Err(e) = spawned {
                stop.cancel();
                for waker in &wakers {
                    waker.wake();
                }
                return Err(WorkerError::Thread(e));
            }
        }
        drop(done_tx);
        debug!(service = %self.settings.service, "worker started");

        let watcher = {
            let stop = stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                for waker in &wakers {
                    waker.wake();
                }
            })
        };
        // Also wake the sessions if this future is dropped before shutdown: the guard cancels
        // `stop` and the watcher task (which outlives us) rings the bells.
        let _ = done_rx.recv().await;
        watcher.abort();
        debug!(service = %self.settings.service, "worker stopped");
        Ok(())
    }
}

impl WorkerBuilder {
    /// Adds a broker endpoint (e.g. `tcp://127.0.0.1:9797`); repeat for several brokers.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// Adds several broker endpoints.
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints.extend(endpoints.into_iter().map(Into::into));
        self
    }

    /// Heartbeat interval (default 2500 ms); should match the broker's.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Heartbeat intervals without any message before the broker is considered lost (default 3).
    pub fn liveness(mut self, liveness: u32) -> Self {
        self.liveness = liveness;
        self
    }

    /// Reconnect delay after a broker loss: starts at `initial`, doubles up to `max`.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial = initial;
        self.reconnect_max = max;
        self
    }

    /// Sessions per broker endpoint, i.e. requests handled in parallel per broker (default 1).
    pub fn concurrency(mut self, sessions: usize) -> Self {
        self.concurrency = sessions;
        self
    }

    /// Requests each session may hold at once (default 1, plain MDP).
    ///
    /// Above 1 the worker registers with plantd's credit extension (`docs/protocol.md`): a plantd
    /// broker then sends the session up to `credit` requests without waiting for replies, which
    /// lets pipelined traffic travel in batches. Async handlers run them concurrently; sync and
    /// streaming handlers take them in turn on the session's handler thread (a prefetch). Brokers
    /// without the extension ignore it and send one request at a time.
    pub fn credit(mut self, credit: u32) -> Self {
        self.credit = credit;
        self
    }

    /// The MDP dialect to speak (default [`Dialect::V02`]).
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Connects as a CURVE client with these keys (`None`: plain, the default), as
    /// `config.curve.client()?` gives them. A broker that refuses the key is logged at `error`
    /// naming the endpoint and shown in the connection check; the session retries with backoff.
    pub fn curve(mut self, curve: impl Into<Option<ClientCurve>>) -> Self {
        self.curve = curve.into();
        self
    }

    /// A health check kept UP while at least one session is registered with a broker.
    ///
    /// A session counts as registered from the moment its socket is connected and READY goes out
    /// (after a broker went silent, only once that broker sends something), and stops counting
    /// when the connection closes, the broker goes silent for liveness × heartbeat, the broker
    /// sends DISCONNECT, or the worker stops.
    pub fn connection_check(mut self, check: Check) -> Self {
        self.connection_check = Some(check);
        self
    }

    /// A synchronous handler; it runs on a thread of its own per session, so it may block.
    pub fn handler<F>(mut self, handler: F) -> Self
    where
        F: Fn(Frames) -> Result<Frames, HandlerError> + Send + Sync + 'static,
    {
        self.handler = Some(Handler::Sync(Arc::new(handler)));
        self
    }

    /// A synchronous handler that runs on the session's own thread, for handlers that return at
    /// once (an echo, a lookup in memory, a computation of microseconds).
    ///
    /// It saves the hand-off to the handler thread and back, two thread wake-ups per request
    /// (`docs/benchmarks.md`, "Against NATS"). The price: while it runs, its session neither
    /// receives nor heartbeats, so a handler that blocks for longer than heartbeat × liveness
    /// loses the broker, and requests held under `credit` wait behind it. Anything that may
    /// block (I/O, locks held elsewhere, sleeping) belongs in [`handler`](Self::handler) or
    /// [`async_handler`](Self::async_handler).
    pub fn inline_handler<F>(mut self, handler: F) -> Self
    where
        F: Fn(Frames) -> Result<Frames, HandlerError> + Send + Sync + 'static,
    {
        self.handler = Some(Handler::Inline(Arc::new(handler)));
        self
    }

    /// An async handler; each request's future is spawned on the runtime `run` is called from.
    pub fn async_handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Frames) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Frames, HandlerError>> + Send + 'static,
    {
        let boxed = move |request: Frames| -> BoxFuture { Box::pin(handler(request)) };
        self.handler = Some(Handler::Async(Arc::new(boxed)));
        self
    }

    /// A synchronous handler that is also given the requesting client's address: the routing
    /// envelope the broker hands the worker with each request (opaque bytes, stable for one
    /// client connection). Services use it to tell callers apart, e.g. for per-source rate
    /// limits. Runs like [`handler`](Self::handler) on a thread of its own per session.
    pub fn handler_with_client<F>(mut self, handler: F) -> Self
    where
        F: Fn(&[u8], Frames) -> Result<Frames, HandlerError> + Send + Sync + 'static,
    {
        self.handler = Some(Handler::WithClient(Arc::new(handler)));
        self
    }

    /// A streaming handler: send PARTIAL replies with [`Responder::partial`], return the FINAL.
    /// Runs like [`handler`](Self::handler) on a thread of its own per session.
    pub fn streaming_handler<F>(mut self, handler: F) -> Self
    where
        F: Fn(Frames, &Responder) -> Result<Frames, HandlerError> + Send + Sync + 'static,
    {
        self.handler = Some(Handler::Streaming(Arc::new(handler)));
        self
    }

    /// Checks the settings and builds the worker.
    pub fn build(self) -> Result<Worker, WorkerError> {
        if self.service.is_empty() || self.service.starts_with("mmi.") {
            return Err(WorkerError::InvalidService(self.service));
        }
        if self.endpoints.is_empty() {
            return Err(WorkerError::NoEndpoint);
        }
        let handler = self.handler.ok_or(WorkerError::NoHandler)?;
        if self.concurrency == 0 {
            return Err(WorkerError::InvalidSetting(
                "concurrency must be at least 1",
            ));
        }
        if !(1..=crate::protocol::credit::MAX_CREDIT).contains(&self.credit) {
            return Err(WorkerError::InvalidSetting(
                "credit must be between 1 and protocol::credit::MAX_CREDIT",
            ));
        }
        if self.liveness == 0 {
            return Err(WorkerError::InvalidSetting("liveness must be at least 1"));
        }
        if self.heartbeat.is_zero() {
            return Err(WorkerError::InvalidSetting("heartbeat must be positive"));
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            return Err(WorkerError::InvalidSetting(
                "reconnect backoff must be positive, with max at least initial",
            ));
        }
        Ok(Worker {
            settings: Arc::new(Settings {
                service: self.service,
                dialect: self.dialect,
                heartbeat: self.heartbeat,
                liveness: self.liveness,
                reconnect_initial: self.reconnect_initial,
                reconnect_max: self.reconnect_max,
                credit: self.credit,
                curve: self.curve,
            }),
            endpoints: self.endpoints,
            concurrency: self.concurrency,
            connection_check: self.connection_check,
            handler,
        })
    }
}

#[cfg(test)]
mod tests;
