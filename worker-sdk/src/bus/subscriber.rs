//! [`Subscriber`]: a SUB socket connected to a bus backend, and [`SubscriberStream`], its async
//! form (a background thread feeding a tokio channel).

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::{
    connect_socket, zmq_error, BusError, BusMessage, ConnectionMonitor, DEFAULT_HIGH_WATER_MARK,
};
use crate::curve::ClientCurve;
use crate::monitor::MonitorGuard;
use crate::protocol::bus::decode;
use crate::protocol::recv_frames;

/// How often the stream thread checks whether its consumer has gone away.
const STREAM_POLL: Duration = Duration::from_millis(100);

/// Receives messages from one bus for the topic prefixes it subscribed to.
///
/// Like every zmq socket holder it is `Send` but not `Sync`. A new subscription takes effect once the
/// broker has seen it (PUB/SUB's "slow joiner"): messages published before that are not delivered.
pub struct Subscriber {
    socket: zmq::Socket,
    endpoint: String,
    /// Set when monitored: stops the monitor before the socket closes (see [`MonitorGuard`]).
    monitor: Option<MonitorGuard>,
}

impl Subscriber {
    /// Connects to a bus backend such as `tcp://127.0.0.1:13001`, with no subscription yet.
    pub fn connect(endpoint: &str) -> Result<Self, BusError> {
        Self::connect_with_hwm(endpoint, DEFAULT_HIGH_WATER_MARK)
    }

    /// Connects with an explicit receive queue limit, in messages (0 = unlimited).
    pub fn connect_with_hwm(endpoint: &str, high_water_mark: i32) -> Result<Self, BusError> {
        Ok(Self::open(endpoint, high_water_mark, false, None)?.0)
    }

    /// Connects like [`connect_with_hwm`](Self::connect_with_hwm) and also returns a
    /// [`ConnectionMonitor`] that says whether the backend is reachable. The monitor is attached
    /// before connecting, so it sees the first connection too.
    pub fn connect_monitored(
        endpoint: &str,
        high_water_mark: i32,
    ) -> Result<(Self, ConnectionMonitor), BusError> {
        let (subscriber, monitor) = Self::open(endpoint, high_water_mark, true, None)?;
        let monitor = monitor.ok_or_else(|| zmq_error("monitor", endpoint)(zmq::Error::EINVAL))?;
        Ok((subscriber, monitor))
    }

    /// Connects like [`connect_monitored`](Self::connect_monitored), as a CURVE client with
    /// `curve` when given (a plain socket with `None`). The monitor also tells a refused
    /// handshake ([`ConnectionMonitor::handshake_failure`]).
    pub fn connect_with(
        endpoint: &str,
        high_water_mark: i32,
        curve: Option<&ClientCurve>,
    ) -> Result<(Self, ConnectionMonitor), BusError> {
        let (subscriber, monitor) = Self::open(endpoint, high_water_mark, true, curve)?;
        let monitor = monitor.ok_or_else(|| zmq_error("monitor", endpoint)(zmq::Error::EINVAL))?;
        Ok((subscriber, monitor))
    }

    fn open(
        endpoint: &str,
        high_water_mark: i32,
        monitored: bool,
        curve: Option<&ClientCurve>,
    ) -> Result<(Self, Option<ConnectionMonitor>), BusError> {
        let (socket, monitor) =
            connect_socket(zmq::SUB, endpoint, high_water_mark, 0, monitored, curve)?;
        let (monitor, guard) = monitor.unzip();
        let subscriber = Subscriber {
            socket,
            endpoint: endpoint.to_owned(),
            monitor: guard,
        };
        Ok((subscriber, monitor))
    }

    /// The backend endpoint this subscriber connects to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Receives messages whose topic starts with `prefix` (`""` = everything).
    pub fn subscribe(&self, prefix: &str) -> Result<(), BusError> {
        self.socket
            .set_subscribe(prefix.as_bytes())
            .map_err(zmq_error("subscribe", &self.endpoint))
    }

    /// Drops one earlier subscription.
    pub fn unsubscribe(&self, prefix: &str) -> Result<(), BusError> {
        self.socket
            .set_unsubscribe(prefix.as_bytes())
            .map_err(zmq_error("unsubscribe", &self.endpoint))
    }

    /// Blocks until the next message arrives.
    pub fn recv(&self) -> Result<BusMessage, BusError> {
        loop {
            match recv_frames(&self.socket, 0) {
                Ok(frames) => return Ok(decode(frames)?),
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(zmq_error("recv", &self.endpoint)(e)),
            }
        }
    }

    /// Waits up to `timeout` for the next message; `Ok(None)` if none came.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<BusMessage>, BusError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(msg) = self.try_recv()? {
                return Ok(Some(msg));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self
                .socket
                .poll(zmq::POLLIN, left.as_millis().max(1) as i64)
            {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(zmq_error("poll", &self.endpoint)(e)),
            }
        }
    }

    /// Returns the next message if one is already queued, without waiting.
    pub fn try_recv(&self) -> Result<Option<BusMessage>, BusError> {
        match recv_frames(&self.socket, zmq::DONTWAIT) {
            Ok(frames) => Ok(Some(decode(frames)?)),
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => Ok(None),
            Err(e) => Err(zmq_error("recv", &self.endpoint)(e)),
        }
    }

    /// Receives the next message and decodes its body as `T` (MessagePack, or JSON).
    pub fn recv_typed<T: DeserializeOwned>(&self) -> Result<(String, T), BusError> {
        let msg = self.recv()?;
        let value = msg.decode_body()?;
        Ok((msg.topic, value))
    }

    /// Moves the socket to a background thread and returns an async stream of its messages.
    ///
    /// At most `capacity` messages wait in the channel; beyond that the thread stops reading and the
    /// socket's own queue takes over. Dropping the stream stops the thread within ~100 ms.
    pub fn into_stream(self, capacity: usize) -> SubscriberStream {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("plantd-bus-sub".into())
            .spawn(move || self.feed(tx))
            .ok();
        SubscriberStream {
            rx,
            _thread: thread,
        }
    }

    fn feed(self, tx: mpsc::Sender<Result<BusMessage, BusError>>) {
        while !tx.is_closed() {
            let item = match self.recv_timeout(STREAM_POLL) {
                Ok(Some(msg)) => Ok(msg),
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            let fatal = matches!(item, Err(BusError::Zmq { .. }));
            if tx.blocking_send(item).is_err() || fatal {
                return;
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(guard) = self.monitor.take() {
            guard.stop(&mut self.socket);
        }
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Async iteration over a [`Subscriber`]'s messages (see [`Subscriber::into_stream`]).
pub struct SubscriberStream {
    rx: mpsc::Receiver<Result<BusMessage, BusError>>,
    _thread: Option<JoinHandle<()>>,
}

impl SubscriberStream {
    /// The next message; `None` once the socket failed for good (after yielding that error).
    pub async fn next(&mut self) -> Option<Result<BusMessage, BusError>> {
        self.rx.recv().await
    }
}
