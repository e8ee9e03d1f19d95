//! One service: its idle workers in least-recently-used order and its bounded, expiring queue of
//! requests waiting for a worker, bounded by count (`queue_limit`) and by bytes
//! (`queue_limit_bytes`).
//!
//! Two FIFOs make up the queue. `retries` holds requests whose worker was lost; they go ahead of
//! everything in `waiting` (new requests), which is what "back to the head of the queue" means.
//! Both FIFOs are ordered by deadline (every request gets the same time to live when it enters
//! its FIFO), so expiry only ever looks at their fronts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::metrics::ServiceMetrics;
use crate::request::Request;

/// Longest service name the broker accepts, in bytes; a longer one makes a request or READY
/// malformed.
pub const MAX_SERVICE_NAME: usize = 255;

/// A service the broker knows: workers registered for it or requests asked of it.
pub struct ServiceQueue {
    name: Box<[u8]>,
    /// Slots of workers with room for a request, least recently used first; each at most once.
    idle: VecDeque<usize>,
    retries: VecDeque<Request>,
    waiting: VecDeque<Request>,
    limit: usize,
    /// Most bytes `waiting` and `retries` may hold together before new requests are refused
    /// (0: unlimited).
    byte_limit: u64,
    /// Bytes of the requests in `waiting` and `retries`.
    queued_bytes: u64,
    workers: usize,
    had_worker: bool,
    vacant_since: Instant,
    metrics: ServiceMetrics,
}

/// Why [`ServiceQueue::push`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// `queue_limit` new requests are waiting.
    Requests,
    /// The request would take the queue past `queue_limit_bytes`.
    Bytes,
}

impl ServiceQueue {
    /// An empty service called `name` whose `waiting` queue holds at most `limit` requests, and
    /// whose queue holds at most `byte_limit` bytes of requests (0: unlimited).
    pub fn new(
        name: &[u8],
        limit: usize,
        byte_limit: u64,
        metrics: ServiceMetrics,
        now: Instant,
    ) -> Self {
        ServiceQueue {
            name: name.into(),
            idle: VecDeque::new(),
            retries: VecDeque::new(),
            waiting: VecDeque::new(),
            limit,
            byte_limit,
            queued_bytes: 0,
            workers: 0,
            had_worker: false,
            vacant_since: now,
            metrics,
        }
    }

    /// The service name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The service name as text (lossy), for messages and JSON.
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// The per-service metric handles.
    pub fn metrics(&self) -> &ServiceMetrics {
        &self.metrics
    }

    /// Registered workers, idle or busy.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Workers with room for a request now (idle, or a credit worker with credit left).
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// Requests waiting for a worker (retries included).
    pub fn queued(&self) -> usize {
        self.retries.len() + self.waiting.len()
    }

    /// Bytes of the requests waiting (retries included).
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// The byte bound of the queue (0: unlimited).
    pub fn byte_limit(&self) -> u64 {
        self.byte_limit
    }

    /// True if any request is waiting.
    pub fn has_requests(&self) -> bool {
        !self.retries.is_empty() || !self.waiting.is_empty()
    }

    /// True if a worker ever registered for this service (decides `504` vs `404` on expiry).
    pub fn had_worker(&self) -> bool {
        self.had_worker
    }

    /// Queues a new request behind the others. A full queue hands the request back, saying
    /// which bound it would break.
    #[allow(clippy::result_large_err)] // handed back by value, not boxed: no allocation
    pub fn push(&mut self, request: Request) -> Result<(), (Request, Full)> {
        if self.waiting.len() >= self.limit {
            return Err((request, Full::Requests));
        }
        let bytes = request.charge.bytes();
        if self.byte_limit > 0 && self.queued_bytes.saturating_add(bytes) > self.byte_limit {
            return Err((request, Full::Bytes));
        }
        self.waiting.push_back(request);
        self.entered(bytes);
        Ok(())
    }

    /// Queues a request whose worker was lost ahead of every new request. Never refused: the
    /// request was already admitted.
    pub fn requeue(&mut self, request: Request) {
        let bytes = request.charge.bytes();
        self.retries.push_back(request);
        self.entered(bytes);
    }

    /// The next request to dispatch: retries first, then new requests in arrival order.
    pub fn next_request(&mut self) -> Option<Request> {
        let request = self
            .retries
            .pop_front()
            .or_else(|| self.waiting.pop_front())?;
        Some(self.left(request))
    }

    fn entered(&mut self, bytes: u64) {
        self.queued_bytes += bytes;
        self.metrics.add_queued(1, bytes as i64);
    }

    /// Books `request` out of the queue.
    fn left(&mut self, request: Request) -> Request {
        let bytes = request.charge.bytes();
        self.queued_bytes -= bytes;
        self.metrics.add_queued(-1, -(bytes as i64));
        self.shrink_when_drained();
        request
    }

    /// A drained queue gives back the room a backlog made it grow to (a `VecDeque` keeps its
    /// capacity): cheap, since it happens only once the queue is empty.
    fn shrink_when_drained(&mut self) {
        const KEEP: usize = 1024;
        for queue in [&mut self.waiting, &mut self.retries] {
            if queue.is_empty() && queue.capacity() > KEEP {
                queue.shrink_to(KEEP);
            }
        }
    }

    /// Removes and returns one request whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Request> {
        let expired = |q: &VecDeque<Request>| q.front().is_some_and(|r| r.deadline <= now);
        let request = if expired(&self.retries) {
            self.retries.pop_front()
        } else if expired(&self.waiting) {
            self.waiting.pop_front()
        } else {
            None
        }?;
        Some(self.left(request))
    }

    /// The earliest deadline of any waiting request.
    pub fn next_deadline(&self) -> Option<Instant> {
        let a = self.retries.front().map(|r| r.deadline);
        let b = self.waiting.front().map(|r| r.deadline);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counts a newly registered worker (not yet idle: see [`ServiceQueue::push_idle`]).
    pub fn add_worker(&mut self) {
        self.workers += 1;
        self.had_worker = true;
        self.metrics.add_workers(1);
    }

    /// Forgets worker `slot`, removing it from the idle list if it is there.
    pub fn remove_worker(&mut self, slot: usize, now: Instant) {
        if let Some(i) = self.idle.iter().position(|s| *s == slot) {
            self.idle.remove(i);
        }
        self.workers = self.workers.saturating_sub(1);
        self.metrics.add_workers(-1);
        if self.workers == 0 {
            self.vacant_since = now;
        }
    }

    /// Marks worker `slot` idle (able to take a request); it is used after every worker that
    /// became idle before it. The broker lists a worker once at most.
    pub fn push_idle(&mut self, slot: usize) {
        self.idle.push_back(slot);
    }

    /// Takes the least recently used idle worker.
    pub fn pop_idle(&mut self) -> Option<usize> {
        self.idle.pop_front()
    }

    /// True when nothing refers to this service any more and it may be dropped: no workers, no
    /// requests, and either it never had a worker (a typo) or its last one left `linger` ago.
    pub fn is_vacant(&self, now: Instant, linger: Duration) -> bool {
        self.workers == 0
            && !self.has_requests()
            && (!self.had_worker || now.saturating_duration_since(self.vacant_since) >= linger)
    }

    /// Removes every waiting request (at shutdown).
    pub fn drain(&mut self) -> Vec<Request> {
        let drained: Vec<Request> = self
            .retries
            .drain(..)
            .chain(self.waiting.drain(..))
            .collect();
        self.metrics
            .add_queued(-(drained.len() as i64), -(self.queued_bytes as i64));
        self.queued_bytes = 0;
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Charge;
    use crate::metrics::Metrics;
    use crate::request::ReturnAddress;
    use plantd_worker_sdk::protocol::{Dialect, Frame};

    fn request(tag: &str, deadline: Instant) -> Request {
        sized(tag, deadline, 10)
    }

    fn sized(tag: &str, deadline: Instant, bytes: u64) -> Request {
        Request {
            client: ReturnAddress {
                id: Frame::from(tag),
                dialect: Dialect::V02,
                envelope: false,
                tag: None,
            },
            service: Frame::from("svc"),
            body: vec![Frame::from(tag)],
            deadline,
            dispatches: 0,
            charge: Charge::untracked(bytes),
        }
    }

    fn tag(r: &Request) -> String {
        String::from_utf8_lossy(&r.client.id).into_owned()
    }

    fn queue(limit: usize) -> (ServiceQueue, Metrics, Instant) {
        bounded(limit, 0)
    }

    fn bounded(limit: usize, byte_limit: u64) -> (ServiceQueue, Metrics, Instant) {
        let metrics = Metrics::new().unwrap();
        let now = Instant::now();
        let q = ServiceQueue::new(b"svc", limit, byte_limit, metrics.service(b"svc"), now);
        (q, metrics, now)
    }

    #[test]
    fn idle_workers_are_used_least_recently_used_first() {
        let (mut q, _m, now) = queue(10);
        for slot in [3, 1, 2] {
            q.add_worker();
            q.push_idle(slot);
        }
        assert_eq!(q.pop_idle(), Some(3));
        q.push_idle(3);
        assert_eq!(q.pop_idle(), Some(1));
        q.remove_worker(2, now);
        assert_eq!(q.pop_idle(), Some(3), "removed worker is no longer idle");
        assert_eq!(q.pop_idle(), None);
        assert_eq!((q.workers(), q.idle()), (2, 0));
    }

    #[test]
    fn queue_is_bounded_and_fifo() {
        let (mut q, m, now) = queue(2);
        let later = now + Duration::from_secs(1);
        q.push(request("a", later)).unwrap();
        q.push(request("b", later)).unwrap();
        let (refused, why) = q.push(request("c", later)).unwrap_err();
        assert_eq!((tag(&refused).as_str(), why), ("c", Full::Requests));
        assert_eq!(m.queued_requests.get(), 2);
        assert_eq!(tag(&q.next_request().unwrap()), "a");
        assert_eq!(tag(&q.next_request().unwrap()), "b");
        assert!(q.next_request().is_none());
        assert_eq!(m.queued_requests.get(), 0);
    }

    #[test]
    fn requeued_requests_go_ahead_of_new_ones_even_when_full() {
        let (mut q, _m, now) = queue(1);
        let later = now + Duration::from_secs(1);
        q.push(request("new", later)).unwrap();
        q.requeue(request("lost1", later));
        q.requeue(request("lost2", later));
        assert_eq!(q.queued(), 3);
        let order: Vec<String> = std::iter::from_fn(|| q.next_request())
            .map(|r| tag(&r))
            .collect();
        assert_eq!(order, ["lost1", "lost2", "new"]);
    }

    #[test]
    fn only_expired_requests_are_popped_and_next_deadline_is_the_earliest() {
        let (mut q, _m, now) = queue(10);
        let t = |ms| now + Duration::from_millis(ms);
        q.push(request("w1", t(10))).unwrap();
        q.push(request("w2", t(30))).unwrap();
        q.requeue(request("r1", t(20)));
        assert_eq!(q.next_deadline(), Some(t(10)));
        assert!(q.pop_expired(t(5)).is_none());
        let expired: Vec<String> = std::iter::from_fn(|| q.pop_expired(t(20)))
            .map(|r| tag(&r))
            .collect();
        assert_eq!(expired.len(), 2);
        assert!(expired.contains(&"w1".to_string()) && expired.contains(&"r1".to_string()));
        assert_eq!(q.next_deadline(), Some(t(30)));
        assert_eq!(q.queued(), 1);
    }

    #[test]
    fn vacancy_depends_on_history() {
        let (mut q, _m, now) = queue(10);
        let linger = Duration::from_secs(60);
        assert!(q.is_vacant(now, linger), "a typo is forgotten at once");
        q.add_worker();
        assert!(!q.had_worker() || !q.is_vacant(now, linger));
        q.remove_worker(0, now);
        assert!(q.had_worker());
        assert!(
            !q.is_vacant(now, linger),
            "kept a while after its last worker left"
        );
        assert!(q.is_vacant(now + linger, linger));
        q.push(request("a", now)).unwrap();
        assert!(
            !q.is_vacant(now + linger, linger),
            "never while requests wait"
        );
        assert_eq!(q.drain().len(), 1);
    }

    #[test]
    fn queue_is_bounded_in_bytes_too_and_retries_still_go_in() {
        let (mut q, m, now) = bounded(100, 100);
        let later = now + Duration::from_secs(1);
        q.push(sized("a", later, 60)).unwrap();
        let (refused, why) = q.push(sized("b", later, 41)).unwrap_err();
        assert_eq!((tag(&refused).as_str(), why), ("b", Full::Bytes));
        q.push(sized("c", later, 40)).unwrap();
        q.requeue(sized("lost", later, 50));
        assert_eq!(q.queued_bytes(), 150, "a retry is never refused");
        assert!(q.push(sized("d", later, 1)).is_err());
        assert_eq!(m.queued_bytes.get(), 150);
    }

    #[test]
    fn byte_counters_return_to_zero_whichever_way_requests_leave() {
        let (mut q, m, now) = bounded(100, 1000);
        let t = |ms| now + Duration::from_millis(ms);
        for (i, bytes) in [7u64, 11, 13, 17].into_iter().enumerate() {
            q.push(sized(&format!("w{i}"), t(10 * (i as u64 + 1)), bytes))
                .unwrap();
        }
        q.requeue(sized("r", t(5), 19));
        assert_eq!((q.queued_bytes(), m.queued_bytes.get()), (67, 67));
        // Dispatched: the retry, then the oldest new request.
        assert_eq!(q.next_request().unwrap().charge.bytes(), 19);
        assert_eq!(q.next_request().unwrap().charge.bytes(), 7);
        // Expired.
        assert_eq!(q.pop_expired(t(20)).unwrap().charge.bytes(), 11);
        assert_eq!((q.queued_bytes(), m.queued_bytes.get()), (30, 30));
        // Shut down.
        assert_eq!(q.drain().len(), 2);
        assert_eq!(q.queued_bytes(), 0);
        assert_eq!(m.queued_bytes.get(), 0);
        assert_eq!(m.queued_requests.get(), 0);
        let text = {
            use prometheus::Encoder;
            let mut buf = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&m.registry().gather(), &mut buf)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(text.contains("plantd_broker_service_queue_bytes{service=\"svc\"} 0"));
    }

    #[test]
    fn a_drained_queue_gives_its_room_back() {
        let (mut q, _m, now) = queue(100_000);
        for i in 0..10_000 {
            q.push(request(&i.to_string(), now)).unwrap();
        }
        while q.next_request().is_some() {}
        assert!(q.waiting.capacity() <= 1024, "{}", q.waiting.capacity());
    }
}
