//! [`ConnectionMonitor`]: whether a bus socket is connected, from libzmq's socket events.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{context, zmq_error, BusError};

/// Tells whether a [`Subscriber`](super::Subscriber) or [`Publisher`](super::Publisher) is connected to its bus endpoint, from libzmq's socket events.
///
/// A subscriber that is not connected is not an error for ZeroMQ, which keeps retrying; this is
/// how a health check sees it. Call [`is_connected`](Self::is_connected) regularly: libzmq queues
/// the events for it.
pub struct ConnectionMonitor {
    socket: zmq::Socket,
    connections: usize,
}

impl ConnectionMonitor {
    pub(crate) fn attach(socket: &zmq::Socket, endpoint: &str) -> Result<Self, BusError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let address = format!(
            "inproc://plantd-bus-monitor-{}",
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw()
            | zmq::SocketEvent::DISCONNECTED.to_raw();
        socket
            .monitor(&address, i32::from(events))
            .map_err(zmq_error("monitor", endpoint))?;
        let monitor = context()
            .socket(zmq::PAIR)
            .map_err(zmq_error("socket", &address))?;
        monitor
            .set_linger(0)
            .and_then(|_| monitor.connect(&address))
            .map_err(zmq_error("connect", &address))?;
        Ok(ConnectionMonitor {
            socket: monitor,
            connections: 0,
        })
    }

    /// Reads the events that arrived since the last call and reports whether at least one
    /// connection to the backend is up (handshake done, not yet disconnected).
    pub fn is_connected(&mut self) -> bool {
        // Each event is two frames: [u16 event id + u32 value, endpoint].
        while let Ok(frames) = self.socket.recv_multipart(zmq::DONTWAIT) {
            let Some(id) = frames
                .first()
                .and_then(|f| f.get(..2))
                .and_then(|b| b.try_into().ok())
                .map(u16::from_ne_bytes)
            else {
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
