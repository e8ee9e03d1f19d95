//! The bus proxy with CURVE: a small loop in place of `zmq_proxy_steerable`, because the per-key
//! policy (`bus.publish`, `bus.subscribe`) is decided per message from the ZAP `User-Id`, which
//! `zmq_proxy` never looks at.
//!
//! - **Publishing.** Every message a publisher sends into the XSUB frontend is forwarded to the
//!   backend only if its key may publish on this bus *now* (a reload applies at once), else
//!   dropped and audited.
//! - **Subscribing.** The XPUB backend is in `XPUB_MANUAL` mode: a subscriber's subscription is
//!   applied (to that subscriber only) only if its key may subscribe; an unsubscription only ever
//!   affects its sender. Subscriptions are therefore not passed upstream one by one (a refused or
//!   forged one would then change what publishers send for everyone): the frontend subscribes
//!   to everything once, so publishers send the broker all they publish, and the backend
//!   filters per subscriber, as it always did.
//! - **Revoking.** A subscription already applied cannot be withdrawn from one subscriber, so a
//!   reload that takes a key's `bus.subscribe` right away (or removes the key) sends `REBIND`:
//!   the loop unbinds the backend (closing every subscriber connection) and binds it again;
//!   subscribers reconnect at once, pass ZAP again, and re-send their subscriptions, which are
//!   checked again. Others lose what was published during the reconnect (~100 ms).
//! - **Control.** The same PAIR commands as `zmq_proxy_steerable` (`STATISTICS` with the same
//!   eight counters, `TERMINATE`), plus `REBIND`.
//!
//! Cost: measured in `docs/benchmarks.md` (bus, CURVE).

use std::time::{Duration, Instant};

use plantd_worker_sdk::curve::user_id;
use plantd_worker_sdk::protocol::{self, Frame};
use plantd_worker_sdk::sockopt;

use crate::security::allow_list::View;
use crate::security::audit::{Action, Audit, Refusal, LOG_WINDOW};
use crate::security::policy::Right;

/// Messages moved per wake-up before the other sockets get a look.
const BATCH: usize = 1024;
/// How long a rebind keeps trying while the old listener is still closing.
const REBIND_PATIENCE: Duration = Duration::from_secs(5);

/// The per-bus security state of a proxy.
pub struct Guard {
    /// The allow list.
    pub allow: View,
    /// Where refusals go.
    pub audit: Audit,
    /// On the audit bus: the broker's own audit events, forwarded like any publisher's.
    pub inject: Option<zmq::Socket>,
}

/// Prepares the backend: manual subscriptions (set before binding).
pub fn configure_backend(backend: &mut zmq::Socket) -> zmq::Result<()> {
    sockopt::set_int(backend, sockopt::XPUB_MANUAL, 1)
}

/// The counters `STATISTICS` answers, in libzmq's order: frontend (messages in, bytes in,
/// messages out, bytes out), then the backend's.
#[derive(Default)]
struct Stats([u64; 8]);

impl Stats {
    fn add(&mut self, at: usize, frames: &[Frame]) {
        self.0[at] += 1;
        self.0[at + 1] += frames.iter().map(|f| f.len() as u64).sum::<u64>();
    }
}

/// Runs the proxy until `TERMINATE` (or the context ends).
pub fn run(
    name: &str,
    frontend: zmq::Socket,
    backend: zmq::Socket,
    capture: Option<zmq::Socket>,
    control: zmq::Socket,
    backend_endpoint: String,
    mut guard: Guard,
) -> zmq::Result<()> {
    let mut stats = Stats::default();
    let everything = [Frame::from(&[1u8][..])];
    frontend.send(&[1u8][..], 0)?;
    stats.add(2, &everything);
    // One report per (key, right) per window on the hot path; the metric counts every refusal.
    let mut reported: Vec<(String, Instant)> = Vec::new();
    let mut frames: Vec<Frame> = Vec::with_capacity(4);
    loop {
        let (from_publishers, from_subscribers, command, from_broker) = {
            let mut items = vec![
                frontend.as_poll_item(zmq::POLLIN),
                backend.as_poll_item(zmq::POLLIN),
                control.as_poll_item(zmq::POLLIN),
            ];
            if let Some(inject) = &guard.inject {
                items.push(inject.as_poll_item(zmq::POLLIN));
            }
            match zmq::poll(&mut items, -1) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e),
            }
            (
                items[0].is_readable(),
                items[1].is_readable(),
                items[2].is_readable(),
                items.get(3).is_some_and(|i| i.is_readable()),
            )
        };
        if from_broker {
            if let Some(inject) = &guard.inject {
                while protocol::recv_frames_into(inject, zmq::DONTWAIT, &mut frames).is_ok() {
                    stats.add(6, &frames);
                    forward(&backend, capture.as_ref(), &mut frames)?;
                }
            }
        }
        if command {
            match control.recv_bytes(zmq::DONTWAIT) {
                Ok(c) if c == b"TERMINATE" => return Ok(()),
                Ok(c) if c == b"STATISTICS" => {
                    let values: Vec<Vec<u8>> =
                        stats.0.iter().map(|v| v.to_ne_bytes().to_vec()).collect();
                    control.send_multipart(values, 0)?;
                }
                Ok(c) if c == b"REBIND" => rebind(name, &backend, &backend_endpoint),
                Ok(_) | Err(zmq::Error::EAGAIN) => {}
                Err(e) => return Err(e),
            }
        }
        if from_publishers {
            for _ in 0..BATCH {
                match protocol::recv_frames_into(&frontend, zmq::DONTWAIT, &mut frames) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => return Err(e),
                }
                stats.add(0, &frames);
                if allowed(&mut guard, &frames[0], Right::Publish, name, &mut reported) {
                    stats.add(6, &frames);
                    forward(&backend, capture.as_ref(), &mut frames)?;
                } else {
                    frames.clear();
                }
            }
        }
        if from_subscribers {
            for _ in 0..BATCH {
                let mut message = Frame::new();
                match backend.recv(&mut message, zmq::DONTWAIT) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => return Err(e),
                }
                stats.add(4, std::slice::from_ref(&message));
                if let Some(capture) = &capture {
                    send_copy(capture, std::slice::from_ref(&message));
                }
                match message.first() {
                    // Applied to the subscriber that sent it (XPUB_MANUAL: the last pipe read).
                    Some(1)
                        if allowed(&mut guard, &message, Right::Subscribe, name, &mut reported) =>
                    {
                        backend.set_subscribe(&message[1..])?
                    }
                    // An unsubscription from a subscriber affects only it; those libzmq makes
                    // up for a closed connection (no User-Id) need nothing.
                    Some(0) if user_id(&message).is_some() => {
                        backend.set_unsubscribe(&message[1..])?
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Whether the key of the connection `frame` came on may use `right` on bus `name`; refusals
/// are audited (at most once per key and right per window) and always counted.
fn allowed(
    guard: &mut Guard,
    frame: &Frame,
    right: Right,
    name: &str,
    reported: &mut Vec<(String, Instant)>,
) -> bool {
    let key = user_id(frame);
    let entry = key.and_then(|k| guard.allow.current().get(k));
    if entry.is_some_and(|e| e.policy.allows(right, name.as_bytes())) {
        return true;
    }
    let action = match right {
        Right::Subscribe => Action::Subscribe,
        _ => Action::Publish,
    };
    let tag = format!("{}/{}", key.unwrap_or("-"), action.name());
    let now = Instant::now();
    reported.retain(|(_, at)| now.duration_since(*at) < LOG_WINDOW);
    let first = !reported.iter().any(|(t, _)| *t == tag);
    let refusal = Refusal {
        action,
        name: entry.map(|e| e.name.to_string()),
        key: key.map(str::to_owned),
        target: name.to_owned(),
        reason: match entry {
            Some(e) => format!("key {} may not {} on bus {name}", e.name, right.name()),
            None => "this key is not (or no longer) on the broker's allow list".into(),
        },
    };
    if first {
        reported.push((tag, now));
        guard.audit.refused(refusal);
    } else {
        guard.audit.count(action);
    }
    false
}

/// Sends `frames` (emptied) to the subscribers, and a copy to the capture if there is one.
fn forward(
    backend: &zmq::Socket,
    capture: Option<&zmq::Socket>,
    frames: &mut Vec<Frame>,
) -> zmq::Result<()> {
    if let Some(capture) = capture {
        send_copy(capture, frames);
    }
    let last = frames.len().saturating_sub(1);
    for (i, frame) in frames.drain(..).enumerate() {
        backend.send(frame, if i < last { zmq::SNDMORE } else { 0 })?;
    }
    Ok(())
}

/// Sends a copy of `frames` to the capture PUB (which drops rather than block).
fn send_copy(capture: &zmq::Socket, frames: &[Frame]) {
    let copy: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    let _ = capture.send_multipart(copy, zmq::DONTWAIT);
}

/// Closes every subscriber connection and listens again on the same endpoint.
fn rebind(name: &str, backend: &zmq::Socket, endpoint: &str) {
    if let Err(e) = backend.unbind(endpoint) {
        tracing::error!(bus = %name, %endpoint, error = %e, "cannot unbind the bus backend");
        return;
    }
    let deadline = Instant::now() + REBIND_PATIENCE;
    loop {
        match backend.bind(endpoint) {
            Ok(()) => {
                tracing::info!(bus = %name, %endpoint, "subscribers reconnected to recheck their rights");
                return;
            }
            // The old listener closes asynchronously in libzmq's I/O thread.
            Err(zmq::Error::EADDRINUSE) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::error!(bus = %name, %endpoint, error = %e, "cannot bind the bus backend again");
                return;
            }
        }
    }
}
