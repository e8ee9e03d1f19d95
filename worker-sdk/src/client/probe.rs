//! [`Probe`]: finds out why a request's connection does not come up, so that a broker refusing
//! the client's key is an authentication error naming the endpoint rather than a silent timeout.
//!
//! Request sockets carry no socket monitor (see `connection.rs` for what one costs), and libzmq
//! does not retry a handshake it failed on a refused key or a security mismatch: such a socket
//! simply never connects. So when a request has waited [`PROBE_AFTER`] for its connection, the
//! client opens one monitored DEALER with the same security settings and reads the outcome of its
//! handshake: a failure fails the request at once with [`ClientError::Authentication`]; a
//! success closes the probe (the broker admits us; the request keeps waiting for its own
//! connection); nothing at all means no broker answers, and the request times out as before.
//! A healthy broker completes a handshake well within the delay, so probes cost nothing then.

use std::time::Duration;

use crate::curve::{self, ClientCurve};
use crate::monitor::{ConnectionMonitor, HandshakeFailure, MonitorGuard};

use super::ClientError;

/// How long a request waits for its connection before a probe is opened.
pub(crate) const PROBE_AFTER: Duration = Duration::from_millis(250);

/// One monitored connection attempt to the broker.
pub(crate) struct Probe {
    socket: zmq::Socket,
    monitor: ConnectionMonitor,
    guard: Option<MonitorGuard>,
}

impl Probe {
    /// Opens a probe of `endpoint` with `curve`'s keys (or none).
    pub(crate) fn open(
        context: &zmq::Context,
        endpoint: &str,
        curve: Option<&ClientCurve>,
    ) -> Result<Probe, ClientError> {
        let socket = context.socket(zmq::DEALER)?;
        socket.set_linger(0)?;
        curve::apply_client(curve, &socket)?;
        let (monitor, guard) = ConnectionMonitor::attach(context, &socket)?;
        let mut probe = Probe {
            socket,
            monitor,
            guard: Some(guard),
        };
        probe.socket.connect(endpoint)?;
        // Reading arms the edge-triggered wake item.
        let _ = probe.monitor.handshake();
        Ok(probe)
    }

    /// The poll item that becomes readable when [`outcome`](Self::outcome) may have changed.
    pub(crate) fn wake_item(&self) -> Result<zmq::PollItem<'static>, ClientError> {
        Ok(self.monitor.wake_item()?)
    }

    /// The handshake's outcome once there is one (reads pending events, which re-arms the wake
    /// item).
    pub(crate) fn outcome(&mut self) -> Option<Result<(), HandshakeFailure>> {
        self.monitor.handshake()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.stop(&mut self.socket);
        }
    }
}

/// What a request waiting for its connection learns from its probe.
pub(crate) enum Verdict {
    /// No answer yet, or the broker admitted the probe: keep waiting.
    Wait,
    /// The broker refused the handshake: fail with this error.
    Refused(ClientError),
}

/// The probing state of one attempt: not started, running, or done (admitted).
#[derive(Default)]
pub(crate) struct Probing {
    probe: Option<Probe>,
    done: bool,
    /// Whether the client uses CURVE: only then is a connection closed mid-handshake telling
    /// (most likely a wrong server key); without it, a broker restarting does the same.
    curve: bool,
}

impl Probing {
    /// Starts the probe if the attempt has waited `waited` for its connection and none ran yet.
    pub(crate) fn start_if_due(
        &mut self,
        waited: Duration,
        context: &zmq::Context,
        endpoint: &str,
        curve: Option<&ClientCurve>,
    ) -> Result<(), ClientError> {
        if !self.done && self.probe.is_none() && waited >= PROBE_AFTER {
            self.probe = Some(Probe::open(context, endpoint, curve)?);
            self.curve = curve.is_some();
        }
        Ok(())
    }

    /// How long until the probe is due, if it has not started.
    pub(crate) fn due_in(&self, waited: Duration) -> Option<Duration> {
        (!self.done && self.probe.is_none()).then(|| PROBE_AFTER.saturating_sub(waited))
    }

    /// Reads the running probe, if any.
    pub(crate) fn verdict(&mut self, endpoint: &str) -> Verdict {
        let Some(probe) = self.probe.as_mut() else {
            return Verdict::Wait;
        };
        match probe.outcome() {
            None => Verdict::Wait,
            Some(Ok(())) => {
                self.probe = None;
                self.done = true;
                Verdict::Wait
            }
            Some(Err(failure)) if !failure.is_final() && !self.curve => Verdict::Wait,
            Some(Err(failure)) => {
                self.probe = None;
                self.done = true;
                Verdict::Refused(ClientError::Authentication {
                    endpoint: endpoint.to_owned(),
                    reason: failure,
                })
            }
        }
    }

    /// The running probe's wake item, for the caller's poll set.
    pub(crate) fn wake_item(&self) -> Option<zmq::PollItem<'static>> {
        self.probe.as_ref().and_then(|p| p.wake_item().ok())
    }
}
