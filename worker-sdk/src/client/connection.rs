//! [`Connection`]: one request socket (a DEALER connected to the broker) that tells when its
//! connection to the broker is up, and when it drops.
//!
//! MDP routes a reply by the connection its request came in on, so a dropped connection (the
//! broker died or restarted, or the TCP link broke) means the request on it can never be
//! answered. A client that sees the drop can fail or resend at once instead of waiting out its
//! timeout.
//!
//! How the drop is seen, without a socket monitor: the DEALER has `ZMQ_IMMEDIATE` set, so libzmq
//! attaches its outgoing pipe only to a completed connection and tears it down when the
//! connection ends. `ZMQ_EVENTS` then has `POLLOUT` exactly while the connection is up (one
//! request never reaches the send high-water mark), and the socket's notification fd (`ZMQ_FD`)
//! becomes readable whenever that may have changed or a reply arrived. The fd is edge-triggered:
//! it only reports what happened after the last look at `ZMQ_EVENTS`, so owners call
//! [`state`](Connection::state) after every wake-up and after every send or receive, before
//! polling [`wake_item`](Connection::wake_item) again.
//!
//! Why not libzmq's socket monitor (`ZMQ_EVENT_DISCONNECTED`): it costs two more libzmq sockets
//! per connection (libzmq's monitor PAIR and a reader), which with libzmq's 1023 sockets per
//! context capped an async client at about 300 requests in flight (from about 1000), doubled the
//! file descriptors, and made opening a connection four times slower (200 µs instead of 50 µs).
//! This costs nothing: polling the fd is cheaper than polling the socket (0.8 µs vs 1.6 µs).
//!
//! The one thing it can miss: a drop *and* the reconnection both happening before the owner
//! looks (libzmq waits at least its 100 ms reconnect interval first), when `POLLOUT` is already
//! back. The request then ends by its timeout, as it did before clients watched connections.
//!
//! With `ZMQ_IMMEDIATE` a request is never queued for a connection that is not up: it waits in
//! the client (see [`State::connected`]) until the broker is reachable, within its attempt's
//! timeout, and a connection that drops takes any unsent request with it.

use zmq_sys::RawFd;

use super::brokers::Brokers;
use super::{connect_socket, ClientError};
use crate::curve::ClientCurve;

/// A DEALER connected to the broker, whose [`state`](Self::state) tells replies and connection
/// changes apart.
pub(crate) struct Connection {
    socket: zmq::Socket,
    /// Which of the client's brokers it connects to (an index into its [`Brokers`]).
    pub(crate) broker: usize,
    /// libzmq's notification fd of `socket` (`ZMQ_FD`).
    fd: RawFd,
}

/// What a [`Connection`] can do right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State {
    /// A reply message can be read.
    pub(crate) readable: bool,
    /// The connection to the broker is up: a request can be sent. After one was sent, `false`
    /// means the connection dropped and the request is lost.
    pub(crate) connected: bool,
}

impl Connection {
    /// A new DEALER connecting to broker number `broker` of `brokers` (in the background: the
    /// broker need not be up), as a CURVE client with `curve`.
    pub(crate) fn open(
        context: &zmq::Context,
        brokers: &Brokers,
        broker: usize,
        curve: Option<&ClientCurve>,
    ) -> Result<Connection, ClientError> {
        Connection::open_with(context, brokers, broker, curve, false)
    }

    /// Like [`open`](Self::open); with `unbounded`, the socket's queues have no high-water mark,
    /// for a connection that carries many requests at once: `POLLOUT` must keep meaning
    /// "connected", never "queue full" (the callers bound how many requests are in flight).
    pub(crate) fn open_with(
        context: &zmq::Context,
        brokers: &Brokers,
        broker: usize,
        curve: Option<&ClientCurve>,
        unbounded: bool,
    ) -> Result<Connection, ClientError> {
        let socket = context.socket(zmq::DEALER)?;
        // Before connecting: they decide how libzmq sets up the connection's pipe.
        socket.set_immediate(true)?;
        if unbounded {
            socket.set_sndhwm(0)?;
            socket.set_rcvhwm(0)?;
        }
        connect_socket(&socket, brokers.endpoint(broker), curve)?;
        let fd = socket.get_fd()?;
        Ok(Connection { socket, broker, fd })
    }

    /// The DEALER, to send requests and read replies on. Call [`state`](Self::state) after using
    /// it, before the next poll.
    pub(crate) fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// What the socket can do now. Processes libzmq's pending notifications, which re-arms
    /// [`wake_item`](Self::wake_item).
    pub(crate) fn state(&self) -> Result<State, ClientError> {
        let events = self.socket.get_events()?;
        Ok(State {
            readable: events.contains(zmq::POLLIN),
            connected: events.contains(zmq::POLLOUT),
        })
    }

    /// The poll item that becomes readable when the [`state`](Self::state) may have changed
    /// since it was last read.
    pub(crate) fn wake_item(&self) -> zmq::PollItem<'static> {
        zmq::PollItem::from_fd(self.fd, zmq::POLLIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{free_endpoint, WAIT_DEADLINE};

    /// A ROUTER peer in a context of its own (like a broker's), bound on `endpoint`.
    fn peer(endpoint: &str) -> (zmq::Context, zmq::Socket) {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::ROUTER).unwrap();
        socket.set_linger(0).unwrap();
        socket.bind(endpoint).unwrap();
        (context, socket)
    }

    /// Sleeps on the wake item until the connection is (or is not) `connected`; panics if a
    /// wake-up that should come does not.
    fn until_connected(connection: &Connection, connected: bool) {
        while connection.state().unwrap().connected != connected {
            let mut items = [connection.wake_item()];
            let woken = zmq::poll(&mut items, WAIT_DEADLINE.as_millis() as i64).unwrap();
            assert!(woken > 0, "no wake-up: connected is still {}", !connected);
        }
    }

    #[test]
    fn state_follows_the_connection_and_the_wake_item_fires_on_each_change() {
        let endpoint = free_endpoint();
        let context = zmq::Context::new();
        let connection =
            Connection::open(&context, &Brokers::parse(&endpoint).unwrap(), 0, None).unwrap();
        assert!(!connection.state().unwrap().connected, "no peer yet");
        assert_eq!(
            connection.socket().send("early", zmq::DONTWAIT),
            Err(zmq::Error::EAGAIN),
            "nothing is queued before the connection is up"
        );

        for _ in 0..2 {
            let (peer_context, router) = peer(&endpoint);
            until_connected(&connection, true);
            connection.socket().send("hello", zmq::DONTWAIT).unwrap();
            assert!(router.poll(zmq::POLLIN, 15_000).unwrap() > 0, "no hello");
            let id = router.recv_multipart(0).unwrap().remove(0);
            router.send_multipart([id, b"reply".to_vec()], 0).unwrap();
            let mut items = [connection.wake_item()];
            while !connection.state().unwrap().readable {
                assert!(zmq::poll(&mut items, 15_000).unwrap() > 0, "no reply");
            }
            assert_eq!(connection.socket().recv_bytes(0).unwrap(), b"reply");

            // The peer goes away (its connections close); then comes back on the same endpoint.
            drop(router);
            drop(peer_context);
            until_connected(&connection, false);
        }
    }
}
