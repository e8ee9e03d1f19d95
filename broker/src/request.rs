//! A client request while the broker holds it: queued, in flight, or about to be answered.

use std::time::Instant;

use plantd_worker_sdk::protocol::{Dialect, Frame};

use crate::ledger::Charge;

/// Where and how to send something back to a peer.
#[derive(Debug)]
pub struct ReturnAddress {
    /// The ROUTER routing id of the peer.
    pub id: Frame,
    /// The MDP dialect the peer spoke; replies use the same one.
    pub dialect: Dialect,
    /// The peer put an empty frame before its header (a REQ socket): MDP/0.2 replies mirror it.
    /// (MDP/0.1 always carries it and the Go dialect never does on replies; the codec handles both.)
    pub envelope: bool,
    /// The client's request tag (plantd's extension, `protocol::tag`), put in front of every
    /// reply; `None` for untagged peers.
    pub tag: Option<Frame>,
}

/// Clears `out` and pushes the routing id `id`, then the REQ envelope if the peer needs one the
/// codec does not add (MDP/0.2 peers that sent one).
pub fn start_message(out: &mut Vec<Frame>, id: Frame, dialect: Dialect, envelope: bool) {
    start_tagged(out, id, None, dialect, envelope);
}

/// Like [`start_message`], with the client's request `tag` (if any) and its delimiter after the
/// routing id. A tagged reply always has the delimiter; in MDP/0.1 the codec adds it.
pub fn start_tagged(
    out: &mut Vec<Frame>,
    id: Frame,
    tag: Option<Frame>,
    dialect: Dialect,
    envelope: bool,
) {
    out.clear();
    out.push(id);
    let tagged = tag.is_some();
    if let Some(tag) = tag {
        out.push(tag);
    }
    if (dialect == Dialect::V02 && envelope) || (tagged && dialect != Dialect::V01) {
        out.push(Frame::new());
    }
}

/// One client request for a worker service.
#[derive(Debug)]
pub struct Request {
    /// The client to answer.
    pub client: ReturnAddress,
    /// The service frame as the client sent it (echoed in replies).
    pub service: Frame,
    /// The request body. Kept while in flight (shared, not copied) so it can be dispatched again.
    pub body: Vec<Frame>,
    /// When the request stops waiting for a worker.
    pub deadline: Instant,
    /// How many times it has been sent to a worker.
    pub dispatches: u32,
    /// Its size, held against its client's account until the request is dropped.
    pub charge: Charge,
}

/// What a request counts against the byte bounds: its service name and body frames.
pub fn request_bytes(service: &[u8], body: &[Frame]) -> u64 {
    let body: usize = body.iter().map(|f| f.len()).sum();
    (service.len() + body) as u64
}
