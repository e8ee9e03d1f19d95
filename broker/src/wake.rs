//! The broker loop's doorbell: an inproc PAIR pair that wakes the loop thread out of `zmq::poll`
//! when the broker must stop, so shutdown is immediate without polling a flag on a timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::BrokerError;

/// The side the loop polls.
pub struct Doorbell {
    socket: zmq::Socket,
}

/// The side that rings; usable from any thread.
#[derive(Clone)]
pub struct Ringer {
    socket: Arc<Mutex<zmq::Socket>>,
}

/// A connected doorbell and ringer on a fresh inproc endpoint of `context`.
pub fn pair(context: &zmq::Context) -> Result<(Doorbell, Ringer), BrokerError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let endpoint = format!(
        "inproc://plantd-broker-wake-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let fail = |source| BrokerError::Socket {
        endpoint: endpoint.clone(),
        source,
    };
    let receiver = context.socket(zmq::PAIR).map_err(fail)?;
    receiver.set_linger(0).map_err(fail)?;
    receiver.bind(&endpoint).map_err(fail)?;
    let sender = context.socket(zmq::PAIR).map_err(fail)?;
    sender.set_linger(0).map_err(fail)?;
    sender.connect(&endpoint).map_err(fail)?;
    Ok((
        Doorbell { socket: receiver },
        Ringer {
            socket: Arc::new(Mutex::new(sender)),
        },
    ))
}

impl Doorbell {
    /// The poll item to include in the loop's `zmq::poll`.
    pub fn as_poll_item(&self) -> zmq::PollItem<'_> {
        self.socket.as_poll_item(zmq::POLLIN)
    }
}

impl Ringer {
    /// Rings the bell; never blocks.
    pub fn ring(&self) {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let _ = socket.send(zmq::Message::new(), zmq::DONTWAIT);
    }
}
