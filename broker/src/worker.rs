//! What the broker knows about one registered worker, including the requests it holds.
//!
//! A plain MDP worker holds one request at a time. A worker that registered with credit N (plantd's
//! credit extension, `protocol::credit`) holds up to N; each of its requests goes out with a tagged
//! client address so that its reply finds the right request even out of order.

use std::collections::VecDeque;
use std::time::Instant;

use plantd_worker_sdk::protocol::{credit, Dialect, Frame};

use crate::request::{start_message, Request};

/// A request a worker is processing.
#[derive(Debug)]
pub struct InFlight {
    /// The request, body retained for re-dispatch (empty when retries are off).
    pub request: Request,
    /// When it was sent to the worker (for the latency histogram).
    pub dispatched_at: Instant,
    /// Its tag in the address sent to a credit worker (unused at credit 1).
    tag: u32,
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
    /// Requests it may hold at once (1 for plain MDP).
    pub credit: u32,
    /// The requests it is working on, oldest first.
    pub jobs: VecDeque<InFlight>,
    /// It is in its service's idle list (it has room and waits its turn there).
    pub listed_idle: bool,
    /// The CURVE key it registered with (its ZAP `User-Id`); only that key may speak for it.
    pub key: crate::security::gate::BoundKey,
    next_tag: u32,
}

impl WorkerRecord {
    /// A worker that registered just now and holds nothing yet.
    pub fn new(
        id: Box<[u8]>,
        service: usize,
        dialect: Dialect,
        envelope: bool,
        credit: u32,
        expires_at: Instant,
        now: Instant,
    ) -> Self {
        WorkerRecord {
            id,
            service,
            dialect,
            envelope,
            expires_at,
            last_seen: now,
            requests: 0,
            credit: credit.max(1),
            jobs: VecDeque::new(),
            listed_idle: false,
            key: None,
            next_tag: 0,
        }
    }

    /// Starts an outgoing message to this worker in `out` (routing id, optional envelope).
    pub fn begin(&self, out: &mut Vec<Frame>) {
        start_message(out, Frame::from(&self.id[..]), self.dialect, self.envelope);
    }

    /// The client address to send this worker with `request`, and the tag to record with it.
    pub fn address_for(&mut self, request: &Request) -> (Frame, u32) {
        if self.credit == 1 {
            return (Frame::from(&request.client.id[..]), 0);
        }
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        (credit::tag_address(&request.client.id, tag), tag)
    }

    /// Records `request` as sent to this worker with `tag`.
    pub fn hold(&mut self, request: Request, tag: u32, now: Instant) {
        self.requests += 1;
        self.jobs.push_back(InFlight {
            request,
            dispatched_at: now,
            tag,
        });
    }

    /// The request a reply addressed to `address` answers, if this worker holds it.
    pub fn job(&self, address: &[u8]) -> Option<&InFlight> {
        self.job_index(address).map(|i| &self.jobs[i])
    }

    /// Removes and returns the request a FINAL addressed to `address` answers.
    pub fn finish(&mut self, address: &[u8]) -> Option<InFlight> {
        let i = self.job_index(address)?;
        self.jobs.remove(i)
    }

    fn job_index(&self, address: &[u8]) -> Option<usize> {
        if self.credit == 1 {
            return self
                .jobs
                .iter()
                .position(|j| j.request.client.id[..] == *address);
        }
        let (client, tag) = credit::split_address(address)?;
        // Tags are handed out in order and `jobs` keeps that order, so it is sorted by distance
        // from the oldest tag (which also holds across the wrap of the u32 counter).
        let oldest = self.jobs.front()?.tag;
        let i = self
            .jobs
            .binary_search_by_key(&tag.wrapping_sub(oldest), |j| j.tag.wrapping_sub(oldest))
            .ok()?;
        (self.jobs[i].request.client.id[..] == *client).then_some(i)
    }

    /// True while it can take another request.
    pub fn has_credit(&self) -> bool {
        (self.jobs.len() as u64) < u64::from(self.credit)
    }

    /// The routing id as lowercase hex (for `mmi.workers`).
    pub fn hex_id(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ReturnAddress;

    fn request(client: &str) -> Request {
        Request {
            client: ReturnAddress {
                id: Frame::from(client),
                dialect: Dialect::V02,
                envelope: false,
                tag: None,
            },
            service: Frame::from("svc"),
            body: vec![Frame::from(client)],
            deadline: Instant::now(),
            dispatches: 0,
            charge: crate::ledger::Charge::untracked(0),
        }
    }

    fn worker(credit: u32) -> WorkerRecord {
        let now = Instant::now();
        WorkerRecord::new(
            b"w".to_vec().into(),
            0,
            Dialect::V02,
            false,
            credit,
            now,
            now,
        )
    }

    #[test]
    fn plain_worker_gets_the_bare_client_address() {
        let mut w = worker(1);
        let r = request("client-a");
        let (address, tag) = w.address_for(&r);
        assert_eq!(&address[..], b"client-a");
        w.hold(r, tag, Instant::now());
        assert!(!w.has_credit());
        assert!(w.finish(b"client-b").is_none());
        assert!(w.finish(b"client-a").is_some());
        assert!(w.has_credit());
    }

    #[test]
    fn tags_keep_matching_across_the_wrap_of_the_counter() {
        let mut w = worker(8);
        w.next_tag = u32::MAX - 2;
        let mut addresses = Vec::new();
        for i in 0..6 {
            let mut r = request("c");
            r.body = vec![Frame::from(format!("{i}").as_str())];
            let (address, tag) = w.address_for(&r);
            addresses.push(address);
            w.hold(r, tag, Instant::now());
        }
        for i in [4, 0, 5, 2, 1, 3] {
            let job = w.finish(&addresses[i]).expect("held");
            assert_eq!(&job.request.body[0][..], format!("{i}").as_bytes());
        }
        assert!(w.jobs.is_empty());
    }

    #[test]
    fn credit_worker_replies_match_their_request_in_any_order() {
        let mut w = worker(3);
        let mut addresses = Vec::new();
        for body in ["one", "two", "three"] {
            let mut r = request("same-client");
            r.body = vec![Frame::from(body)];
            let (address, tag) = w.address_for(&r);
            addresses.push(address);
            w.hold(r, tag, Instant::now());
        }
        assert!(!w.has_credit());
        let body = |j: InFlight| String::from_utf8_lossy(&j.request.body[0]).into_owned();
        assert_eq!(body(w.finish(&addresses[1]).unwrap()), "two");
        assert!(w.finish(&addresses[1]).is_none(), "answered once only");
        assert_eq!(body(w.finish(&addresses[2]).unwrap()), "three");
        assert!(
            w.finish(b"same-client").is_none(),
            "an untagged address matches nothing"
        );
        assert_eq!(w.job(&addresses[0]).map(|j| j.tag), Some(0));
        assert_eq!(body(w.finish(&addresses[0]).unwrap()), "one");
        assert!(w.jobs.is_empty());
    }
}
