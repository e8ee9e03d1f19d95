//! [`ConnectionMonitor`]: whether a socket (a bus socket, a worker session's DEALER) is connected,
//! from libzmq's socket events, and [`MonitorGuard`], which keeps that monitor safe for the other
//! sockets of its context.
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
            | zmq::SocketEvent::DISCONNECTED.to_raw();
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
        };
        Ok((monitor, MonitorGuard { _reader: reader }))
    }

    /// Runs `f` with a poll item for `zmq::poll` that is readable while events wait for
    /// [`is_connected`](Self::is_connected), so a poll loop wakes when the connection changes.
    pub(crate) fn with_poll_item<T>(&self, f: impl FnOnce(zmq::PollItem<'_>) -> T) -> T {
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        f(reader.as_poll_item(zmq::POLLIN))
    }

    /// Reads the events that arrived since the last call and reports whether at least one
    /// connection to the endpoint is up (handshake done, not yet disconnected).
    pub fn is_connected(&mut self) -> bool {
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(frames) = reader.recv_multipart(zmq::DONTWAIT) {
            let Some(id) = event_id(&frames) else {
                continue;
            };
            if id == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
                self.connections += 1;
            } else if id == zmq::SocketEvent::DISCONNECTED.to_raw() {
                self.connections = self.connections.saturating_sub(1);
            }
        }
        self.connections > 0
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
