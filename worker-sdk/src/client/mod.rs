//! MDP clients: [`Client`] (blocking) and [`AsyncClient`], with MMI helpers.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use plantd_worker_sdk::client::Client;
//! # fn example() -> Result<(), plantd_worker_sdk::client::ClientError> {
//! let client = Client::connect("tcp://127.0.0.1:9797")?
//!     .with_timeout(Duration::from_secs(5))
//!     .with_retries(1);
//! let reply = client.request("org.plantd.module.Echo", vec![b"hello".to_vec()])?;
//! assert_eq!(reply, vec![b"hello".to_vec()]);
//! # Ok(()) }
//! ```
//!
//! **Sockets.** MDP carries no request ids. The blocking [`Client`] therefore gives every
//! in-flight request a DEALER socket to itself, taken from a pool and returned only after its
//! FINAL arrived; a socket whose request timed out, lost its connection or was abandoned is
//! closed, never reused, so a late reply cannot reach another request. The [`AsyncClient`] keeps
//! one socket per broker for all its requests and tags each attempt with a fresh request tag
//! (plantd's extension, [`protocol::tag`](crate::protocol::tag)), so a late reply to a failed
//! attempt matches nothing; it needs a plantd broker. A reply whose service frame is not the
//! requested service is dropped as stale.
//!
//! **Broker disconnects.** Each socket tells when its connection to the broker is up and when it
//! drops (`ZMQ_IMMEDIATE` and `ZMQ_EVENTS`, at no extra cost; see `connection.rs` for how and why
//! not libzmq's socket monitor). A request waits in the client until its connection is up, within
//! its timeout. When the connection drops while a request is in flight (the broker died or
//! restarted, or the link broke), the broker that held the request's routing is gone and no reply
//! can come: the request fails at once with [`ClientError::BrokerDisconnected`] instead of waiting
//! out its timeout, or is resent if its [`RetryPolicy`] has attempts left. Either way its outcome
//! is unknown: the worker may have carried it out.
//!
//! **Several brokers.** Given several endpoints separated by commas, a client fails over among
//! them (DESIGN.md §8, `brokers.rs`): a request whose broker does not connect within a second
//! moves to the next one unsent; one whose broker died or went silent after it was sent is resent
//! to the next one if its [`RetryPolicy`] has attempts left.
//!
//! **Timeouts and retries** ([`RetryPolicy`], the zguide's Lazy Pirate). The timeout bounds each
//! attempt: the wait for each reply message (for a plain request that is the whole attempt,
//! unless the worker streams PARTIALs). An attempt that times out or loses its connection before
//! any reply is abandoned (its socket closed, or its tag forgotten) and, while attempts remain, the
//! request is sent again on a brand-new socket (or under a new tag), as soon as the broker is
//! reachable; the last
//! attempt's failure is the error. So a plain request fails within `attempts × timeout` at worst
//! ([`RetryPolicy::worst_case`]). The default is one attempt, because a resend may run a
//! non-idempotent request twice; opt in with `with_retries` or `with_retry_policy` for
//! idempotent requests.
//!
//! **CURVE.** [`Client::connect_curve`] and [`AsyncClient::connect_curve`] make every socket a
//! CURVE client. A broker that refuses the handshake (a key not on its allow list, a wrong server
//! key, one side without CURVE) fails the request with [`ClientError::Authentication`], naming
//! the endpoint, instead of a timeout (see `probe.rs`).
//!
//! **Errors.** Broker and worker error replies (`["plantd.error", code, message]`) become typed
//! errors: `403` [`ClientError::Forbidden`], `404` [`ClientError::NotFound`], `429`
//! [`ClientError::RateLimited`], `503` [`ClientError::QueueFull`], `504`
//! [`ClientError::Expired`], `500` [`ClientError::Worker`], any other code
//! [`ClientError::Broker`].

mod async_client;
mod blocking;
mod brokers;
mod connection;
mod mmi;
mod probe;
mod retry;

use std::time::Duration;

use thiserror::Error;

use crate::protocol::{
    decode, encode, ClientCommand, Dialect, Direction, ErrorCode, ErrorReply, Frame, Message,
    ProtocolError,
};
use crate::Frames;

pub use async_client::{AsyncClient, AsyncReplyStream};
pub use blocking::{Client, ReplyStream};
pub use mmi::{BrokerInfo, BusInfo, ServiceInfo, WorkerInfo};
pub use retry::RetryPolicy;

/// Default timeout of each attempt of a request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of resends after a failed attempt (none: see the module docs).
pub const DEFAULT_RETRIES: u32 = 0;
/// Idle sockets a client keeps for reuse; more concurrent requests open (and later close) extra.
const MAX_IDLE_SOCKETS: usize = 64;

/// Why a request failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The broker refused the connection's security handshake (its CURVE key is not on the
    /// broker's allow list, the server key is wrong, or one side has no CURVE). Not retried.
    #[error("authentication failed at {endpoint}: {reason}")]
    Authentication {
        /// The broker endpoint.
        endpoint: String,
        /// What the handshake said.
        reason: crate::monitor::HandshakeFailure,
    },
    /// `403`: the broker's policy for this client's CURVE key does not allow calling the service.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// `429`: the broker's rate limit for this client (its key, or its connection without CURVE).
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// `404`: no worker has ever served the service (the broker let the request expire).
    #[error("service not found (no worker registered for it)")]
    NotFound,
    /// `503`: the service's queue in the broker is full.
    #[error("service queue is full in the broker")]
    QueueFull,
    /// `504`: the request expired in the broker's queue before a worker was free.
    #[error("request expired in the broker queue before a worker took it")]
    Expired,
    /// `500`: the worker's handler failed (or the broker gave up re-dispatching); the message is
    /// the worker's or the broker's.
    #[error("worker error: {0}")]
    Worker(String),
    /// Another error reply code.
    #[error("broker error {code}: {message}")]
    Broker {
        /// The code as sent.
        code: String,
        /// The message as sent.
        message: String,
    },
    /// No reply within the timeout, after all retries.
    #[error("timed out waiting for a reply")]
    Timeout,
    /// The connection to the broker dropped while the request was in flight (the broker died or
    /// restarted), after all retries: no reply can come. The request may or may not have been
    /// carried out.
    #[error("broker disconnected while the request was in flight")]
    BrokerDisconnected,
    /// The reply was not what the protocol (or an MMI query) promises.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request cannot be sent as given (empty service name, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The endpoint cannot be connected to (bad syntax or unsupported transport).
    #[error("invalid endpoint {0}")]
    InvalidEndpoint(String),
    /// The client's I/O thread has stopped.
    #[error("client is closed")]
    Closed,
    /// A ZeroMQ call failed.
    #[error("zmq error: {0}")]
    Zmq(#[from] zmq::Error),
}

/// One reply message of a streamed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// An intermediate reply (18/MDP workers only).
    Partial(Frames),
    /// The last reply.
    Final(Frames),
}

/// Retry policy (timeouts included) and dialect of one client handle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub(crate) retry: RetryPolicy,
    pub(crate) dialect: Dialect,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retry: RetryPolicy::default(),
            dialect: Dialect::V02,
        }
    }
}

/// Connects a request socket (a new DEALER) to `endpoint`, as a CURVE client with `curve`.
pub(crate) fn connect_socket(
    socket: &zmq::Socket,
    endpoint: &str,
    curve: Option<&crate::curve::ClientCurve>,
) -> Result<(), ClientError> {
    socket.set_linger(0)?;
    crate::curve::apply_client(curve, socket)?;
    socket.connect(endpoint).map_err(|e| match e {
        zmq::Error::EINVAL | zmq::Error::EPROTONOSUPPORT | zmq::Error::ENOCOMPATPROTO => {
            ClientError::InvalidEndpoint(format!("{endpoint:?}: {e}"))
        }
        other => ClientError::Zmq(other),
    })
}

/// Checks a service name before it goes on the wire.
pub(crate) fn check_service(service: &str) -> Result<(), ClientError> {
    if service.is_empty() {
        return Err(ClientError::InvalidRequest(
            "service name is empty".to_owned(),
        ));
    }
    Ok(())
}

/// Sends a REQUEST for `service` on `socket`, without blocking, tagged with `tag` if given
/// (`protocol::tag`).
pub(crate) fn send_request(
    socket: &zmq::Socket,
    tag: Option<u32>,
    dialect: Dialect,
    service: &str,
    body: Frames,
) -> Result<(), ClientError> {
    let mut frames = Vec::with_capacity(body.len() + 6);
    if let Some(tag) = tag {
        crate::protocol::tag::push_tag(&mut frames, tag);
    }
    let command = ClientCommand::Request {
        service: Frame::from(service.as_bytes()),
        body: body.into_iter().map(Frame::from).collect(),
    };
    encode(
        dialect,
        Direction::ToBroker,
        Message::Client(command),
        &mut frames,
    )
    .map_err(|e: ProtocolError| ClientError::InvalidRequest(e.to_string()))?;
    crate::protocol::send_frames(socket, frames, zmq::DONTWAIT)?;
    Ok(())
}

/// What a received message means for the request for `service`.
pub(crate) enum Incoming {
    /// A PARTIAL for this request.
    Partial(Frames),
    /// The FINAL for this request, already turned into a result.
    Final(Result<Frames, ClientError>),
    /// Malformed, not a client reply, or for another service: dropped.
    Stale,
}

/// Classifies a message received on a request's socket.
pub(crate) fn classify(frames: Vec<Frame>, service: &str) -> Incoming {
    match decode(Direction::FromBroker, frames) {
        Ok((_, Message::Client(ClientCommand::Partial { service: s, body })))
            if &*s == service.as_bytes() =>
        {
            Incoming::Partial(crate::protocol::to_vecs(&body))
        }
        Ok((_, Message::Client(ClientCommand::Final { service: s, body })))
            if &*s == service.as_bytes() =>
        {
            Incoming::Final(final_result(&body))
        }
        _ => Incoming::Stale,
    }
}

/// A FINAL body as a result: error replies become typed errors.
fn final_result(body: &[Frame]) -> Result<Frames, ClientError> {
    match ErrorReply::parse(body) {
        None => Ok(crate::protocol::to_vecs(body)),
        Some(reply) => Err(match ErrorCode::parse(reply.code.as_bytes()) {
            Some(ErrorCode::NotFound) => ClientError::NotFound,
            Some(ErrorCode::Forbidden) => ClientError::Forbidden(reply.message),
            Some(ErrorCode::RateLimited) => ClientError::RateLimited(reply.message),
            Some(ErrorCode::QueueFull) => ClientError::QueueFull,
            Some(ErrorCode::Expired) => ClientError::Expired,
            Some(ErrorCode::Internal) => ClientError::Worker(reply.message),
            _ => ClientError::Broker {
                code: reply.code,
                message: reply.message,
            },
        }),
    }
}

#[cfg(test)]
mod tests;
