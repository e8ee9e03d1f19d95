//! [`Publisher`]: a PUB socket connected to a bus frontend.

use serde::Serialize;

use super::{
    connect_socket, zmq_error, BusError, ConnectionMonitor, Metric, DEFAULT_HIGH_WATER_MARK,
};
use crate::curve::ClientCurve;
use crate::monitor::MonitorGuard;
use crate::protocol::bus::encode_msgpack;

/// Publishes `[topic, payload...]` messages on one bus.
///
/// A `Publisher` owns one zmq socket, so it is `Send` but not `Sync`: give each thread its own.
/// Publishing never blocks; if the queue towards the broker is full (high-water mark) the message
/// is dropped, which is PUB/SUB's contract.
pub struct Publisher {
    socket: zmq::Socket,
    endpoint: String,
    /// Set when monitored: stops the monitor before the socket closes (see [`MonitorGuard`]).
    monitor: Option<MonitorGuard>,
}

impl Publisher {
    /// Connects to a bus frontend such as `tcp://127.0.0.1:13000` with the default high-water mark.
    pub fn connect(endpoint: &str) -> Result<Self, BusError> {
        Self::connect_with_hwm(endpoint, DEFAULT_HIGH_WATER_MARK)
    }

    /// Connects with an explicit send queue limit, in messages (0 = unlimited).
    pub fn connect_with_hwm(endpoint: &str, high_water_mark: i32) -> Result<Self, BusError> {
        Ok(Self::open(endpoint, high_water_mark, false, None)?.0)
    }

    /// Connects and also returns a [`ConnectionMonitor`] that says whether the bus frontend is
    /// reachable (attached before connecting, so it sees the first connection too).
    pub fn connect_monitored(
        endpoint: &str,
        high_water_mark: i32,
    ) -> Result<(Self, ConnectionMonitor), BusError> {
        let (publisher, monitor) = Self::open(endpoint, high_water_mark, true, None)?;
        let monitor = monitor.ok_or_else(|| zmq_error("monitor", endpoint)(zmq::Error::EINVAL))?;
        Ok((publisher, monitor))
    }

    /// Connects like [`connect_monitored`](Self::connect_monitored), as a CURVE client with
    /// `curve` when given (a plain socket with `None`). The monitor also tells a refused
    /// handshake ([`ConnectionMonitor::handshake_failure`]).
    pub fn connect_with(
        endpoint: &str,
        high_water_mark: i32,
        curve: Option<&ClientCurve>,
    ) -> Result<(Self, ConnectionMonitor), BusError> {
        let (publisher, monitor) = Self::open(endpoint, high_water_mark, true, curve)?;
        let monitor = monitor.ok_or_else(|| zmq_error("monitor", endpoint)(zmq::Error::EINVAL))?;
        Ok((publisher, monitor))
    }

    fn open(
        endpoint: &str,
        high_water_mark: i32,
        monitored: bool,
        curve: Option<&ClientCurve>,
    ) -> Result<(Self, Option<ConnectionMonitor>), BusError> {
        // Give queued messages a moment to leave on drop, but never hang a process on exit.
        let (socket, monitor) =
            connect_socket(zmq::PUB, endpoint, high_water_mark, 1000, monitored, curve)?;
        let (monitor, guard) = monitor.unzip();
        let publisher = Publisher {
            socket,
            endpoint: endpoint.to_owned(),
            monitor: guard,
        };
        Ok((publisher, monitor))
    }

    /// The frontend endpoint this publisher connects to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Publishes one payload frame under `topic`.
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), BusError> {
        self.publish_frames(topic, &[payload])
    }

    /// Publishes a multi-frame payload under `topic` (`[topic, frame1, frame2, ...]`).
    pub fn publish_frames<T: AsRef<[u8]>>(
        &self,
        topic: &str,
        frames: &[T],
    ) -> Result<(), BusError> {
        let send = zmq_error("send", &self.endpoint);
        let last = frames.len();
        let more = |i: usize| if i < last { zmq::SNDMORE } else { 0 };
        self.socket.send(topic.as_bytes(), more(0)).map_err(send)?;
        for (i, frame) in frames.iter().enumerate() {
            self.socket
                .send(frame.as_ref(), more(i + 1))
                .map_err(zmq_error("send", &self.endpoint))?;
        }
        Ok(())
    }

    /// Publishes a typed value as a named MessagePack map.
    pub fn publish_msgpack<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<(), BusError> {
        let payload = encode_msgpack(value)?;
        self.publish(topic, &payload)
    }

    /// Publishes a [`Metric`] on its canonical topic ([`Metric::topic`]).
    pub fn publish_metric(&self, metric: &Metric) -> Result<(), BusError> {
        self.publish_msgpack(&metric.topic(), metric)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(guard) = self.monitor.take() {
            guard.stop(&mut self.socket);
        }
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}
