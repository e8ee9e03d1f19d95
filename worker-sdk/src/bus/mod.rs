//! Pub/sub on the broker's buses: [`Publisher`], [`Subscriber`] and the shared payload types.
//!
//! A bus is an XSUB frontend joined to an XPUB backend inside the broker (see `docs/buses.md`).
//! Publishers connect a PUB socket to the frontend; subscribers connect a SUB socket to the backend
//! and subscribe to topic prefixes. Messages are `[topic, payload...]` ([`crate::protocol::bus`]);
//! typed payloads are named MessagePack maps. Reconnection is ZeroMQ's own: a publisher or
//! subscriber may be created before the broker runs and keeps working across broker restarts
//! (messages published while disconnected are lost, as always with PUB/SUB).
//!
//! CURVE: `connect_with` on either takes the client's keys (`CurveConfig::client`). A broker
//! that refuses the key shows in the returned monitor (`ConnectionMonitor::handshake_failure`);
//! libzmq does not retry that connection, so the socket stays unconnected until it is made anew.
//!
//! High-water marks: libzmq's default of 1000 queued messages per pipe drops a good part of any
//! burst that outruns the proxy for a moment, even when the subscriber keeps up on average. Both
//! ends here default to [`DEFAULT_HIGH_WATER_MARK`] (2,000,000 messages), which absorbs a
//! million-message burst without loss; memory is only used while a backlog exists.

mod publisher;
mod subscriber;
mod types;

use std::sync::OnceLock;

use thiserror::Error;

pub use crate::monitor::ConnectionMonitor;
pub use crate::protocol::bus::{BusMessage, PayloadEncoding, PayloadError};
pub use publisher::Publisher;
pub use subscriber::{Subscriber, SubscriberStream};
pub use types::{
    metric_topic, topic_segment, Event, Metric, EVENT_TOPIC_PREFIX, METRIC_TOPIC_PREFIX,
};

/// Queue limit (messages) for bus sockets, on both the SDK and the broker side.
///
/// Twice the burst it is meant to absorb (a million messages), because a libzmq writer learns
/// what its reader consumed only every HWM/2 messages (the pipe's low-water mark): it may count up
/// to HWM/2 - 1 messages as still queued that were long read. So only a burst of at most HWM/2
/// messages is sure to fit, and a 1,000,000 HWM sometimes dropped the last few messages of a
/// million-message burst that followed a little earlier traffic (`plant bench bus` showed it).
pub const DEFAULT_HIGH_WATER_MARK: i32 = 2_000_000;

/// The default bus names and (frontend, backend) ports, DESIGN.md §3.
pub const DEFAULT_BUSES: [(&str, u16, u16); 3] = [
    ("state", 11000, 11001),
    ("event", 12000, 12001),
    ("metric", 13000, 13001),
];

/// Why a bus operation failed.
#[derive(Debug, Error)]
pub enum BusError {
    /// A ZeroMQ call failed (bad endpoint, context terminated, ...).
    #[error("bus {op} on {endpoint}: {source}")]
    Zmq {
        /// What we were doing (`connect`, `send`, `recv`, ...).
        op: &'static str,
        /// The endpoint involved.
        endpoint: String,
        /// The libzmq error.
        source: zmq::Error,
    },
    /// A payload could not be encoded or decoded.
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// The process-wide ZeroMQ context for bus sockets (one I/O thread serves them all).
pub(crate) fn context() -> zmq::Context {
    static CONTEXT: OnceLock<zmq::Context> = OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new).clone()
}

/// Turns an endpoint the broker *bound* (`tcp://*:13000`, `tcp://0.0.0.0:13000`) into one a client
/// can connect to, using the host of the broker endpoint the client already talks to. Endpoints
/// with a concrete host are returned unchanged.
pub fn connectable_endpoint(bound: &str, broker_endpoint: &str) -> String {
    let Some(rest) = bound.strip_prefix("tcp://") else {
        return bound.to_owned();
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return bound.to_owned();
    };
    if host != "*" && host != "0.0.0.0" && host != "[::]" && host != "::" {
        return bound.to_owned();
    }
    let broker_host = broker_endpoint
        .strip_prefix("tcp://")
        .and_then(|r| r.rsplit_once(':'))
        .map(|(h, _)| h)
        .filter(|h| *h != "*" && *h != "0.0.0.0")
        .unwrap_or("127.0.0.1");
    format!("tcp://{broker_host}:{port}")
}

/// A bus socket of `kind` (PUB or SUB) connected to `endpoint`, with its queue limit (send side for
/// PUB, receive side for SUB) and linger set, and, if `monitored`, a connection monitor attached
/// before connecting (so it sees the first connection too) plus the guard its owner keeps.
fn connect_socket(
    kind: zmq::SocketType,
    endpoint: &str,
    high_water_mark: i32,
    linger_ms: i32,
    monitored: bool,
    curve: Option<&crate::curve::ClientCurve>,
) -> Result<
    (
        zmq::Socket,
        Option<(ConnectionMonitor, crate::monitor::MonitorGuard)>,
    ),
    BusError,
> {
    let socket = context()
        .socket(kind)
        .map_err(zmq_error("socket", endpoint))?;
    if kind == zmq::PUB {
        socket.set_sndhwm(high_water_mark)
    } else {
        socket.set_rcvhwm(high_water_mark)
    }
    .map_err(zmq_error("set_hwm", endpoint))?;
    socket
        .set_linger(linger_ms)
        .map_err(zmq_error("set_linger", endpoint))?;
    crate::curve::apply_client(curve, &socket).map_err(zmq_error("set_curve", endpoint))?;
    let monitor = if monitored {
        Some(
            ConnectionMonitor::attach(&context(), &socket)
                .map_err(zmq_error("monitor", endpoint))?,
        )
    } else {
        None
    };
    socket
        .connect(endpoint)
        .map_err(zmq_error("connect", endpoint))?;
    Ok((socket, monitor))
}

fn zmq_error<'a>(op: &'static str, endpoint: &'a str) -> impl FnOnce(zmq::Error) -> BusError + 'a {
    move |source| BusError::Zmq {
        op,
        endpoint: endpoint.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::connectable_endpoint;

    #[test]
    fn wildcard_bind_addresses_take_the_broker_host() {
        assert_eq!(
            connectable_endpoint("tcp://*:13000", "tcp://10.0.0.5:9797"),
            "tcp://10.0.0.5:13000"
        );
        assert_eq!(
            connectable_endpoint("tcp://0.0.0.0:11001", "tcp://*:9797"),
            "tcp://127.0.0.1:11001"
        );
        assert_eq!(
            connectable_endpoint("tcp://192.168.1.2:12000", "tcp://10.0.0.5:9797"),
            "tcp://192.168.1.2:12000"
        );
        assert_eq!(
            connectable_endpoint("ipc:///tmp/bus", "tcp://h:1"),
            "ipc:///tmp/bus"
        );
    }
}
