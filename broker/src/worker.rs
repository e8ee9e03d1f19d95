//! What the broker knows about one registered worker.

use std::time::Instant;

use plantd_worker_sdk::protocol::{Dialect, Frame};

use crate::request::{start_message, Request};

/// A request a worker is processing.
#[derive(Debug)]
pub struct InFlight {
    /// The request, body retained for re-dispatch (empty when retries are off).
    pub request: Request,
    /// When it was sent to the worker (for the latency histogram).
    pub dispatched_at: Instant,
}

/// One registered worker (one DEALER session of a worker process).
#[derive(Debug)]
pub struct WorkerRecord {
    /// Its ROUTER routing id.
    pub id: Box<[u8]>,
    /// Slot of the service it serves.
    pub service: usize,
    /// The dialect it registered with; everything sent to it uses this dialect.
    pub dialect: Dialect,
    /// It sent an empty frame before its header (MDP/0.2 over REQ-style framing).
    pub envelope: bool,
    /// After this instant without hearing from it, it is dead.
    pub expires_at: Instant,
    /// Last time any valid message came from it.
    pub last_seen: Instant,
    /// Requests dispatched to it.
    pub requests: u64,
    /// The request it is working on; `None` while idle.
    pub job: Option<InFlight>,
}

impl WorkerRecord {
    /// Starts an outgoing message to this worker in `out` (routing id, optional envelope).
    pub fn begin(&self, out: &mut Vec<Frame>) {
        start_message(out, Frame::from(&self.id[..]), self.dialect, self.envelope);
    }

    /// The routing id as lowercase hex (for `mmi.workers`).
    pub fn hex_id(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }
}
