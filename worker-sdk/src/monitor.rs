//! [`ConnectionMonitor`]: whether a socket (a bus socket, a worker session's DEALER) is connected,
//! and why its handshake failed if it did ([`HandshakeFailure`]: a CURVE key the broker refused,
//! a wrong server key, one side without CURVE), from libzmq's socket events; and
//! [`MonitorGuard`], which keeps that monitor safe for the other sockets of its context.
//!
//! libzmq does not retry a handshake that failed on a protocol error (a refused key, mismatched
//! mechanisms): that connection stays down for good, so owners report the failure rather than
//! wait for a connection that cannot come.
//!
//! libzmq delivers socket events from its I/O thread through an internal PAIR socket, with a
//! *blocking* send (`socket_base_t::monitor_event` in 4.3.x). If nothing is connected to read
//! them (our reading PAIR was closed) or the reader's queue is full, the next event (a
//! `DISCONNECTED` when the broker goes away, say) blocks that I/O thread for good, and with it
//! every socket of the context: for the bus context, all bus sockets of the process (libzmq issue
//! #3575). So:
//! - the reading PAIR has no queue limit (events are a few bytes per connection change), so the
//!   send never waits for a slow or absent reader of a live PAIR;
//! - the reading PAIR is shared between the [`ConnectionMonitor`] and the monitored socket's owner
//!   ([`MonitorGuard`]), so it stays open while libzmq may still write to it, whichever is dropped
//!   first;
//! - the owner turns monitoring off (`zmq_socket_monitor(socket, NULL, 0)`) before it closes the
//!   monitored socket, because a closed socket lingers in libzmq's reaper and can still emit
//!   events after `zmq_close` returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The event id of one socket-monitor message, `[u16 event id + u32 value, endpoint]`, as read
/// from a monitor's PAIR socket; `None` if it is not one.
pub fn event_id(frames: &[Vec<u8>]) -> Option<u16> {
    frames
        .first()
        .and_then(|f| f.get(..2))
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
}

/// The event value of one socket-monitor message (the ZAP status code of an authentication
/// failure, the ZMTP error of a protocol failure, ...).
fn event_value(frames: &[Vec<u8>]) -> u32 {
    frames
        .first()
        .and_then(|f| f.get(2..6))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// libzmq's `ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH`: one side uses CURVE, the other not.
const MECHANISM_MISMATCH: u32 = 0x1100_0002;
/// libzmq's `ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC`: a CURVE box did not open.
const CRYPTOGRAPHIC: u32 = 0x1100_0001;

/// Why a connection's security handshake failed, as the socket monitor tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The server's authentication (ZAP) refused this key; `status` is the ZAP status code
    /// (`400`: not on the allow list).
    Refused {
        /// The ZAP status code.
        status: u32,
    },
    /// One side uses CURVE and the other does not.
    MechanismMismatch,
    /// A CURVE message could not be decrypted: the keys do not belong together.
    Cryptographic,
    /// Another ZMTP protocol error (libzmq's `ZMQ_PROTOCOL_ERROR_*` code).
    Protocol {
        /// The code.
        code: u32,
    },
    /// The peer closed the connection during the handshake: with CURVE, usually because the
    /// client's `server_key` is not the server's public key (or the server has no ZAP handler).
    Closed,
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::Refused { status } => write!(
                f,
                "the broker refused this CURVE key (ZAP status {status}): it is not on the \
                 broker's allow list (curve.authorized_keys)"
            ),
            HandshakeFailure::MechanismMismatch => f.write_str(
                "security mismatch: one side uses CURVE and the other does not (set or unset \
                 the server key)",
            ),
            HandshakeFailure::Cryptographic => f.write_str(
                "CURVE handshake failed: the keys do not match (check the broker's public key)",
            ),
            HandshakeFailure::Protocol { code } => {
                write!(f, "handshake failed: ZMTP protocol error 0x{code:08x}")
            }
            HandshakeFailure::Closed => f.write_str(
                "the broker closed the connection during the CURVE handshake (is the server key \
                 the broker's public key?)",
            ),
        }
    }
}

impl HandshakeFailure {
    /// Whether libzmq gives up on the connection (a refused key, a security mismatch, another
    /// protocol error), as opposed to [`Closed`](Self::Closed), after which it reconnects by
    /// itself.
    pub fn is_final(&self) -> bool {
        !matches!(self, HandshakeFailure::Closed)
    }
}

/// The handshake outcome an event reports, if it reports one.
fn handshake_outcome(frames: &[Vec<u8>]) -> Option<Result<(), HandshakeFailure>> {
    let id = event_id(frames)?;
    let value = event_value(frames);
    let failure = if id == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
        return Some(Ok(()));
    } else if id == zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw() {
        HandshakeFailure::Refused { status: value }
    } else if id == zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw() {
        match value {
            MECHANISM_MISMATCH => HandshakeFailure::MechanismMismatch,
            CRYPTOGRAPHIC => HandshakeFailure::Cryptographic,
            code => HandshakeFailure::Protocol { code },
        }
    } else if id == zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw() {
        HandshakeFailure::Closed
    } else {
        return None;
    };
    Some(Err(failure))
}

/// The reading end of a socket monitor (a PAIR), shared by [`ConnectionMonitor`] and
/// [`MonitorGuard`].
type Reader = Arc<Mutex<zmq::Socket>>;

/// Tells whether a socket, such as a [`Subscriber`](crate::bus::Subscriber) or
/// [`Publisher`](crate::bus::Publisher), is connected to its endpoint, from libzmq's socket events.
///
/// A subscriber that is not connected is not an error for ZeroMQ, which keeps retrying; this is
/// how a health check sees it. Call [`is_connected`](Self::is_connected) regularly: libzmq queues
/// the events for it. Dropping the monitor before or after its socket is fine either way.
pub struct ConnectionMonitor {
    reader: Reader,
    connections: usize,
    /// The last handshake outcome: `Some(Err(_))` after a failure, until a handshake succeeds.
    handshake: Option<Result<(), HandshakeFailure>>,
}

/// Held by the owner of a monitored socket: keeps the event reader open and stops the monitor
/// before the socket closes (see the module docs for why both matter).
pub(crate) struct MonitorGuard {
    _reader: Reader,
}

impl MonitorGuard {
    /// Turns libzmq's monitor of `socket` off; call it from the socket's owner right before the
    /// socket is closed. After this returns libzmq sends no more events, so the reader may close.
    pub(crate) fn stop(self, socket: &mut zmq::Socket) {
        // SAFETY: `socket` is a live socket owned by the caller (it is closed only after this
        // call), used from the owner's thread; a NULL endpoint is libzmq's documented way to stop
        // monitoring, and it cannot fail on a live socket except with ETERM, which also means no
        // further events.
        unsafe {
            zmq_sys::zmq_socket_monitor(socket.as_mut_ptr(), std::ptr::null(), 0);
        }
        drop(self);
    }
}

impl ConnectionMonitor {
    /// Starts monitoring `socket`, a socket of `context` (before it connects, so the first
    /// connection is seen too), and returns the monitor and the guard its owner keeps.
    pub(crate) fn attach(
        context: &zmq::Context,
        socket: &zmq::Socket,
    ) -> zmq::Result<(Self, MonitorGuard)> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let address = format!(
            "inproc://plantd-monitor-{}",
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw()
            | zmq::SocketEvent::DISCONNECTED.to_raw()
            | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw()
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw()
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw();
        socket.monitor(&address, i32::from(events))?;
        let reader = context.socket(zmq::PAIR)?;
        // No queue limit: with one, an unread backlog would block libzmq's I/O thread (module docs).
        // Must be set before connecting, when libzmq sizes the inproc pipe.
        reader.set_rcvhwm(0)?;
        reader.set_linger(0)?;
        reader.connect(&address)?;
        let reader = Arc::new(Mutex::new(reader));
        let monitor = ConnectionMonitor {
            reader: Arc::clone(&reader),
            connections: 0,
            handshake: None,
        };
        Ok((monitor, MonitorGuard { _reader: reader }))
    }

    /// Runs `f` with a poll item for `zmq::poll` that is readable while events wait for
    /// [`is_connected`](Self::is_connected), so a poll loop wakes when the connection changes.
    pub(crate) fn with_poll_item<T>(&self, f: impl FnOnce(zmq::PollItem<'_>) -> T) -> T {
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        f(reader.as_poll_item(zmq::POLLIN))
    }

    /// The poll item of [`with_poll_item`](Self::with_poll_item) as the reader's notification
    /// fd, for poll sets that outlive a borrow. Edge-triggered: call
    /// [`is_connected`](Self::is_connected) or [`handshake`](Self::handshake) after every wake-up.
    pub(crate) fn wake_item(&self) -> zmq::Result<zmq::PollItem<'static>> {
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        Ok(zmq::PollItem::from_fd(reader.get_fd()?, zmq::POLLIN))
    }

    /// Reads the events that arrived since the last call and reports whether at least one
    /// connection to the endpoint is up (handshake done, not yet disconnected).
    pub fn is_connected(&mut self) -> bool {
        self.read_events();
        self.connections > 0
    }

    /// Reads the events that arrived since the last call and returns the outcome of the last
    /// handshake: `None` before any, `Some(Err(_))` after one failed (until one succeeds).
    pub fn handshake(&mut self) -> Option<Result<(), HandshakeFailure>> {
        self.read_events();
        self.handshake
    }

    /// The failure of the last handshake, if it failed (see [`handshake`](Self::handshake)).
    pub fn handshake_failure(&mut self) -> Option<HandshakeFailure> {
        self.handshake().and_then(Result::err)
    }

    fn read_events(&mut self) {
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(frames) = reader.recv_multipart(zmq::DONTWAIT) {
            if let Some(outcome) = handshake_outcome(&frames) {
                self.handshake = Some(outcome);
            }
            let Some(id) = event_id(&frames) else {
                continue;
            };
            if id == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
                self.connections += 1;
            } else if id == zmq::SocketEvent::DISCONNECTED.to_raw() {
                self.connections = self.connections.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::bus::{Publisher, Subscriber};
    use crate::testing::{free_endpoint, wait_until};

    /// A bus peer in a context of its own (like the broker's), bound on a free port.
    fn peer(kind: zmq::SocketType) -> (zmq::Context, zmq::Socket, String) {
        let context = zmq::Context::new();
        let socket = context.socket(kind).unwrap();
        socket.set_linger(0).unwrap();
        let endpoint = free_endpoint();
        socket.bind(&endpoint).unwrap();
        (context, socket, endpoint)
    }

    /// Whether a fresh publisher of this process still gets a message through, i.e. the SDK's
    /// shared I/O thread still works.
    fn bus_sockets_still_work() {
        let (_context, sink, endpoint) = peer(zmq::SUB);
        sink.set_subscribe(b"").unwrap();
        let publisher = Publisher::connect(&endpoint).unwrap();
        // PUB drops what it sends before the subscription arrives, so keep sending.
        wait_until("a message gets through", || {
            publisher.publish("probe", b"x").unwrap();
            sink.poll(zmq::POLLIN, 20).unwrap() > 0
        });
    }

    /// Regression (libzmq issue #3575): libzmq sends events with a blocking send, so a monitor
    /// dropped before its socket left the next DISCONNECTED without a reader, which blocked the
    /// I/O thread that every bus socket of the process shares.
    #[test]
    fn dropping_the_monitor_first_does_not_stall_the_process() {
        let (context, backend, endpoint) = peer(zmq::XPUB);
        let (subscriber, mut monitor) = Subscriber::connect_monitored(&endpoint, 1000).unwrap();
        wait_until("the subscriber is connected", || monitor.is_connected());
        drop(monitor);
        // The bus goes away: libzmq emits DISCONNECTED for `subscriber`. Terminating the context
        // returns once the peer's connections are closed, so the disconnect reaches the SDK's
        // I/O thread before the new connection below can finish its handshake.
        drop(backend);
        drop(context);
        bus_sockets_still_work();
        drop(subscriber);
    }

    /// A monitored publisher closed with unsent messages lingers in libzmq (up to its linger
    /// time) and still reports its peer vanishing: once its monitor is stopped that stalls
    /// nothing, even with the monitor's reader gone too.
    #[test]
    fn a_closed_socket_sends_no_more_events() {
        let (context, frontend, endpoint) = peer(zmq::XSUB);
        // The peer wants everything but reads nothing, so big messages back up in the publisher.
        frontend.set_rcvhwm(1).unwrap();
        frontend.send(&b"\x01"[..], 0).unwrap();
        let (publisher, monitor) = Publisher::connect_monitored(&endpoint, 1000).unwrap();
        wait_until("the publisher has the subscription", || {
            publisher.publish("probe", b"x").unwrap();
            frontend.poll(zmq::POLLIN, 20).unwrap() > 0
        });
        let big = vec![0u8; 1 << 20];
        for _ in 0..32 {
            publisher.publish("big", &big).unwrap();
        }
        drop(publisher);
        drop(monitor);
        drop(frontend);
        drop(context);
        bus_sockets_still_work();
    }
}
