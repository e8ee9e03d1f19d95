//! Request handlers and how they run off the session's I/O thread.
//!
//! A session hands each request to its [`Executor`]: sync, client-aware and streaming handlers run
//! on a handler thread of their own, async handlers are spawned on the tokio runtime. Either way the result comes
//! back as an [`Outcome`] over a channel and the doorbell is rung, so the I/O thread keeps polling
//! (and heartbeating) while a handler runs. Inline handlers are the exception: they run on the
//! session's thread at once, for handlers too cheap to be worth two thread wake-ups per request,
//! and their outcome waits in the channel for the session to send it after the messages it is
//! reading. Panics are caught and become error replies.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::protocol::Dialect;
use crate::wake::Waker;

use super::{Frames, HandlerError};

/// A boxed handler future.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Result<Frames, HandlerError>> + Send>>;

/// A plain handler function.
type SyncFn = dyn Fn(Frames) -> Result<Frames, HandlerError> + Send + Sync;
/// An async handler function, its future boxed.
type AsyncFn = dyn Fn(Frames) -> BoxFuture + Send + Sync;
/// A streaming handler function.
type StreamingFn = dyn Fn(Frames, &Responder) -> Result<Frames, HandlerError> + Send + Sync;
/// A plain handler function that is also told the requesting client's address.
type ClientFn = dyn Fn(&[u8], Frames) -> Result<Frames, HandlerError> + Send + Sync;

/// The kinds of handler a worker can have.
#[derive(Clone)]
pub(crate) enum Handler {
    /// Plain function; runs on the session's handler thread.
    Sync(Arc<SyncFn>),
    /// Async function; spawned on the tokio runtime `Worker::run` was called from.
    Async(Arc<AsyncFn>),
    /// Function that may send PARTIAL replies through a [`Responder`] before returning the FINAL.
    Streaming(Arc<StreamingFn>),
    /// Plain function given the client address too; runs on the session's handler thread.
    WithClient(Arc<ClientFn>),
    /// Plain function that runs on the session's own thread (no hand-off).
    Inline(Arc<SyncFn>),
}

/// What a handler produced for the request numbered `request`.
pub(crate) enum Outcome {
    /// An intermediate reply.
    Partial { request: u64, body: Frames },
    /// The last reply; an `Err` becomes a `plantd.error` 500 reply.
    Final {
        request: u64,
        result: Result<Frames, HandlerError>,
    },
}

/// Lets a streaming handler send PARTIAL replies before its FINAL.
pub struct Responder {
    request: u64,
    dialect: Dialect,
    outcomes: mpsc::Sender<Outcome>,
    waker: Waker,
}

impl Responder {
    /// Sends one PARTIAL reply to the client now.
    ///
    /// Fails if the worker speaks MDP/0.1 (which has no PARTIAL) or the session has ended.
    pub fn partial(&self, body: Frames) -> Result<(), HandlerError> {
        if self.dialect == Dialect::V01 {
            return Err(HandlerError::new(
                "PARTIAL replies cannot be sent in MDP/0.1",
            ));
        }
        self.outcomes
            .send(Outcome::Partial {
                request: self.request,
                body,
            })
            .map_err(|_| HandlerError::new("worker session has ended"))?;
        self.waker.wake();
        Ok(())
    }
}

/// One request for the handler thread.
struct Job {
    request: u64,
    /// The client address the broker sent with the request (its routing envelope).
    client: Vec<u8>,
    body: Frames,
}

/// Runs a session's handler off the I/O thread and reports outcomes back to it.
pub(crate) struct Executor {
    handler: Handler,
    dialect: Dialect,
    outcomes: mpsc::Sender<Outcome>,
    waker: Waker,
    runtime: tokio::runtime::Handle,
    thread_name: String,
    /// Feeds the handler thread (sync and streaming handlers); started on first use.
    jobs: Option<mpsc::Sender<Job>>,
}

impl Executor {
    pub(crate) fn new(
        handler: Handler,
        dialect: Dialect,
        outcomes: mpsc::Sender<Outcome>,
        waker: Waker,
        runtime: tokio::runtime::Handle,
        thread_name: String,
    ) -> Self {
        Executor {
            handler,
            dialect,
            outcomes,
            waker,
            runtime,
            thread_name,
            jobs: None,
        }
    }

    /// Starts handling `body`, from client address `client`, as request number `request`.
    pub(crate) fn start(&mut self, request: u64, client: &[u8], body: Frames) {
        if let Handler::Inline(handler) = &self.handler {
            let result =
                catch_unwind(AssertUnwindSafe(|| handler(body))).unwrap_or_else(panic_error);
            // No doorbell: the session drains outcomes right after the messages it is reading.
            let _ = self.outcomes.send(Outcome::Final { request, result });
            return;
        }
        if let Handler::Async(handler) = &self.handler {
            let outcomes = self.outcomes.clone();
            let waker = self.waker.clone();
            let handler = handler.clone();
            self.runtime.spawn(async move {
                // Building the future can panic too, so that happens inside the guard.
                let result = match catch_unwind(AssertUnwindSafe(|| handler(body))) {
                    Ok(future) => CatchUnwind(future).await.unwrap_or_else(panic_error),
                    Err(panic) => panic_error(panic),
                };
                let _ = outcomes.send(Outcome::Final { request, result });
                waker.wake();
            });
            return;
        }
        let job = Job {
            request,
            client: client.to_vec(),
            body,
        };
        let job = match &self.jobs {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        match self.spawn_thread() {
            Ok(jobs) => {
                let _ = jobs.send(job);
                self.jobs = Some(jobs);
            }
            Err(e) => {
                let _ = self.outcomes.send(Outcome::Final {
                    request: job.request,
                    result: Err(HandlerError::new(format!(
                        "cannot start handler thread: {e}"
                    ))),
                });
                self.waker.wake();
            }
        }
    }

    /// Abandons the handler thread (its current job may still be running, for a session that has
    /// lost its broker); the next request starts a fresh one so it does not queue behind.
    pub(crate) fn abandon(&mut self) {
        self.jobs = None;
    }

    fn spawn_thread(&self) -> std::io::Result<mpsc::Sender<Job>> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let handler = self.handler.clone();
        let outcomes = self.outcomes.clone();
        let waker = self.waker.clone();
        let dialect = self.dialect;
        std::thread::Builder::new()
            .name(self.thread_name.clone())
            .spawn(move || {
                for Job {
                    request,
                    client,
                    body,
                } in jobs_rx
                {
                    let result = match &handler {
                        Handler::Sync(f) => catch_unwind(AssertUnwindSafe(|| f(body))),
                        Handler::WithClient(f) => {
                            catch_unwind(AssertUnwindSafe(|| f(&client, body)))
                        }
                        Handler::Streaming(f) => {
                            let responder = Responder {
                                request,
                                dialect,
                                outcomes: outcomes.clone(),
                                waker: waker.clone(),
                            };
                            catch_unwind(AssertUnwindSafe(|| f(body, &responder)))
                        }
                        Handler::Async(_) | Handler::Inline(_) => {
                            Ok(Err(HandlerError::new("handler kind not run on a thread")))
                        }
                    }
                    .unwrap_or_else(panic_error);
                    if outcomes.send(Outcome::Final { request, result }).is_err() {
                        return;
                    }
                    waker.wake();
                }
            })?;
        Ok(jobs_tx)
    }
}

/// Polls a future, turning a panic inside `poll` into an `Err` carrying the panic payload.
struct CatchUnwind(BoxFuture);

impl Future for CatchUnwind {
    type Output = Result<Result<Frames, HandlerError>, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// The handler error reported for a panic, with the panic message when it is a string.
fn panic_error(panic: Box<dyn Any + Send>) -> Result<Frames, HandlerError> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    Err(HandlerError::new(format!("handler panicked: {message}")))
}
