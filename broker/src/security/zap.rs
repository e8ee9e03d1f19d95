//! The broker's ZAP handler (RFC 27): a REP socket on `inproc://zeromq.zap.01` in each of the
//! broker's ZeroMQ contexts (the MDP socket's and the buses'), answering libzmq's authentication
//! requests for CURVE connections from the allow list.
//!
//! A listed key gets `200` with the key's Z85 text as `User-Id`, which libzmq then attaches to
//! every message of that connection (`curve::user_id`): that is how the broker loop and the bus
//! proxies know, per message, whose it is. Any other key gets `400` and is audited. What a listed
//! key may do is decided per message, not here, so that a reloaded policy applies to connections
//! already open.
//!
//! The broker's CURVE sockets set `ZMQ_ZAP_ENFORCE_DOMAIN`, so while this handler is not running
//! (not started yet, stopped, crashed) libzmq admits nobody.

use std::sync::Arc;
use std::thread::JoinHandle;

use plantd_worker_sdk::curve::{PublicKey, KEY_BYTES};
use plantd_worker_sdk::wake::{Doorbell, Waker};
use prometheus::IntCounterVec;
use tracing::debug;

use super::allow_list::SharedAllowList;
use super::audit::{Action, Audit, Refusal};
use super::policy::Right;

/// The endpoint libzmq sends ZAP requests to, in every context.
pub const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// The running handler; [`ZapHandler::stop`] ends it (before its contexts are dropped).
pub struct ZapHandler {
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

impl ZapHandler {
    /// Binds a ZAP socket in each of `contexts` and starts answering from `allow`. `outcomes` is
    /// `plantd_broker_zap_requests_total{outcome}`.
    pub fn start(
        contexts: &[&zmq::Context],
        allow: Arc<SharedAllowList>,
        audit: Audit,
        outcomes: &IntCounterVec,
    ) -> Result<ZapHandler, zmq::Error> {
        let mut sockets = Vec::new();
        for context in contexts {
            let socket = context.socket(zmq::REP)?;
            socket.set_linger(0)?;
            socket.bind(ZAP_ENDPOINT)?;
            sockets.push(socket);
        }
        let Some(first) = contexts.first() else {
            return Err(zmq::Error::EINVAL);
        };
        let (doorbell, waker) = Doorbell::new(first)?;
        let counters = Counters {
            accepted: outcomes.with_label_values(&["accepted"]),
            refused: outcomes.with_label_values(&["refused"]),
        };
        let thread = std::thread::Builder::new()
            .name("plantd-broker-zap".into())
            .spawn(move || {
                let state = State {
                    allow,
                    audit,
                    counters,
                };
                serve(&sockets, &doorbell, &state)
            })
            .map_err(|_| zmq::Error::ENOMEM)?;
        Ok(ZapHandler {
            waker,
            thread: Some(thread),
        })
    }

    /// Stops the handler and closes its sockets.
    pub fn stop(mut self) {
        self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Counters {
    accepted: prometheus::IntCounter,
    refused: prometheus::IntCounter,
}

/// What the handler answers from.
struct State {
    allow: Arc<SharedAllowList>,
    audit: Audit,
    counters: Counters,
}

fn serve(sockets: &[zmq::Socket], doorbell: &Doorbell, state: &State) {
    loop {
        let mut items: Vec<_> = sockets
            .iter()
            .map(|s| s.as_poll_item(zmq::POLLIN))
            .collect();
        items.push(doorbell.as_poll_item());
        match zmq::poll(&mut items, -1) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(_) => return,
        }
        if items.last().is_some_and(|i| i.is_readable()) {
            return;
        }
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        for (socket, ready) in sockets.iter().zip(ready) {
            if !ready {
                continue;
            }
            while let Ok(request) = socket.recv_multipart(zmq::DONTWAIT) {
                let reply = answer(&request, state);
                if socket.send_multipart(reply, 0).is_err() {
                    return;
                }
            }
        }
    }
}

/// The reply to one ZAP request:
/// `[version, request id, domain, address, routing id, mechanism, credentials...]` →
/// `[version, request id, status code, status text, user id, metadata]`.
fn answer(request: &[Vec<u8>], state: &State) -> Vec<Vec<u8>> {
    let (allow, audit, counters) = (&state.allow, &state.audit, &state.counters);
    let field = |i: usize| request.get(i).map(Vec::as_slice).unwrap_or_default();
    let reply = |code: &str, text: &str, user: String| {
        vec![
            b"1.0".to_vec(),
            field(1).to_vec(),
            code.as_bytes().to_vec(),
            text.as_bytes().to_vec(),
            user.into_bytes(),
            Vec::new(),
        ]
    };
    if field(0) != b"1.0" {
        counters.refused.inc();
        return reply("500", "unsupported ZAP version", String::new());
    }
    let domain = String::from_utf8_lossy(field(2)).into_owned();
    let address = String::from_utf8_lossy(field(3)).into_owned();
    let key = match (field(5), <[u8; KEY_BYTES]>::try_from(field(6))) {
        (b"CURVE", Ok(bytes)) => PublicKey::from_bytes(bytes),
        (mechanism, _) => {
            counters.refused.inc();
            audit.refused(Refusal {
                action: Action::Handshake,
                name: None,
                key: None,
                target: domain,
                reason: format!(
                    "{} mechanism from {address}; only CURVE is accepted",
                    String::from_utf8_lossy(mechanism)
                ),
            });
            return reply("400", "CURVE required", String::new());
        }
    };
    let z85 = key.to_z85();
    let list = allow.load();
    // A capture socket copies a bus to whoever connects, which no per-message check can
    // filter: only keys that may subscribe to that bus may connect to it.
    let capture_of = domain
        .strip_prefix("plantd.bus.")
        .and_then(|rest| rest.strip_suffix(".capture"));
    let entry = list.get(&z85).filter(|entry| {
        capture_of.is_none_or(|bus| entry.policy.allows(Right::Subscribe, bus.as_bytes()))
    });
    if let Some(entry) = entry {
        counters.accepted.inc();
        debug!(key_name = %entry.name, %domain, %address, "handshake accepted");
        return reply("200", "OK", z85);
    }
    counters.refused.inc();
    let listed = list.get(&z85);
    audit.refused(Refusal {
        action: Action::Handshake,
        name: listed.map(|e| e.name.to_string()),
        reason: match listed {
            Some(entry) => format!(
                "key {} from {address} may not subscribe to the captured bus",
                entry.name
            ),
            None => format!("key from {address} is not on the allow list"),
        },
        key: Some(z85),
        target: domain,
    });
    reply("400", "key not authorized", String::new())
}
