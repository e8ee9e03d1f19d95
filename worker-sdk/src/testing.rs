//! Helpers for tests that run real services on loopback.

pub mod interop;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports handed out by [`free_port`]: below Linux's default ephemeral range (32768–60999), so the
/// kernel never picks one as the source port of an outgoing connection between our check and the
/// moment a test binds it (which an OS-chosen ephemeral port can suffer under parallel tests).
const PORTS: std::ops::Range<u32> = 20_000..32_768;

/// Ports this process handed out (by [`free_port`] or [`free_port_offset`]): never handed out
/// twice, because a test may not have bound its port yet when the next one asks.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before. Each process starts at a random place in the range, so parallel test processes rarely
/// meet.
pub fn free_port() -> u16 {
    let span = PORTS.end - PORTS.start;
    for _ in 0..span {
        let port = (PORTS.start + next_candidate() % span) as u16;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}")
}

/// An offset that moves every one of `ports` onto a port free right now (on every interface) and
/// not handed out before by this process, the moved ports all within [`free_port`]'s range.
/// Two systems started side by side in one test process get offsets whose ports never meet, even
/// where their default ports are neighbours (8081, 8082...) and the offsets differ by one.
pub fn free_port_offset(ports: &[u16]) -> u16 {
    let (lowest, highest) = match (ports.iter().min(), ports.iter().max()) {
        (Some(&lowest), Some(&highest)) => (u32::from(lowest), u32::from(highest)),
        _ => return 0,
    };
    assert!(
        highest - lowest < PORTS.end - PORTS.start,
        "ports {lowest}..={highest} do not fit in {PORTS:?}"
    );
    let first = PORTS.start.saturating_sub(lowest);
    let span = (PORTS.end - 1 - highest) - first + 1;
    for _ in 0..span {
        let offset = (first + next_candidate() % span) as u16;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let free = ports.iter().all(|port| {
            !handed_out.contains(&(port + offset))
                && TcpListener::bind(("0.0.0.0", port + offset)).is_ok()
        });
        if free {
            handed_out.extend(ports.iter().map(|port| port + offset));
            return offset;
        }
    }
    panic!("no offset puts {ports:?} on free ports in {PORTS:?}")
}

/// The next of this process's spread-out candidate numbers, starting at a random place.
fn next_candidate() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let _ = NEXT.compare_exchange(
            u32::MAX,
            rand::random::<u32>() % (PORTS.end - PORTS.start),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How long [`wait_until`] waits: generous, since tests must pass on a loaded 2-core machine, but
/// only ever spent when a test fails.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(30);

/// Polls `condition` every 10 ms until it holds; panics naming `what` after [`WAIT_DEADLINE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT_DEADLINE;
    while !condition() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `tcp://127.0.0.1:<free port>`.
pub fn free_endpoint() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}

/// A command running the service binary `bin` in `dir`, isolated from the caller's setup: `HOME`
/// is `dir` (so no `~/.config/plantd` file is found) and the service's `config_env` variable and
/// `RUST_LOG` are removed.
pub fn service_command(bin: &str, dir: &Path, config_env: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove(config_env)
        .env_remove("RUST_LOG");
    command
}

/// What [`keep_in_flight`] saw: every request ends in exactly one of these.
#[derive(Debug, Default)]
pub struct LoadTally {
    /// Replies that passed the caller's check.
    pub ok: usize,
    /// Clear error replies (broker or worker errors): request number and error text.
    pub errors: Vec<(usize, String)>,
    /// Replies that failed the caller's check: request number and reason.
    pub wrong: Vec<(usize, String)>,
    /// Requests that got no answer within the client's timeout: silently lost.
    pub timeouts: usize,
}

impl LoadTally {
    /// Requests accounted for.
    pub fn total(&self) -> usize {
        self.ok + self.errors.len() + self.wrong.len() + self.timeouts
    }
}

/// A request load for tests: `total` requests to `service`, `in_flight` of them outstanding at
/// once, each given `timeout` (far longer than a healthy request takes: a timeout here means a
/// request was lost).
#[derive(Clone, Debug)]
pub struct RequestLoad<'a> {
    /// Broker endpoint.
    pub endpoint: &'a str,
    /// Service to call.
    pub service: &'a str,
    /// Requests in all.
    pub total: usize,
    /// Requests outstanding at once.
    pub in_flight: usize,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl RequestLoad<'_> {
    /// Runs the load and tallies how each request ended. Request `i` has the body `body(i)`; its
    /// reply must pass `check(i, reply)`. `done` counts finished requests as they finish, so
    /// another thread can act mid-load (kill a worker when a quarter is done, say).
    pub fn run(
        &self,
        body: impl Fn(usize) -> crate::Frames + Send + Sync + 'static,
        check: impl Fn(usize, &crate::Frames) -> Result<(), String> + Send + Sync + 'static,
        done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> LoadTally {
        use crate::client::{AsyncClient, ClientError};
        use std::sync::{Arc, Mutex};

        let (total, service) = (self.total, self.service);
        let client = AsyncClient::connect(self.endpoint)
            .expect("client endpoint")
            .with_timeout(self.timeout);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let next = Arc::new(AtomicU32::new(0));
        let tally = Arc::new(Mutex::new(LoadTally::default()));
        let (body, check) = (Arc::new(body), Arc::new(check));
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..self.in_flight {
                let (client, next, tally, done) =
                    (client.clone(), next.clone(), tally.clone(), done.clone());
                let (body, check, service) = (body.clone(), check.clone(), service.to_owned());
                tasks.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= total {
                            return;
                        }
                        let result = client.request(&service, body(i)).await;
                        let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                        match result {
                            Ok(reply) => match check(i, &reply) {
                                Ok(()) => tally.ok += 1,
                                Err(why) => tally.wrong.push((i, why)),
                            },
                            Err(ClientError::Timeout) => tally.timeouts += 1,
                            Err(e) => tally.errors.push((i, e.to_string())),
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            while let Some(joined) = tasks.join_next().await {
                joined.expect("load task panicked");
            }
        });
        let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
        tally
    }
}

/// Checks that a broker's books balance once a load is over: nothing queued, nothing in flight,
/// and every request it routed answered exactly once (a relayed reply or a broker error reply).
pub fn assert_broker_balanced(endpoint: &str) {
    let client = crate::client::Client::connect(endpoint).expect("client endpoint");
    let info = client.broker_info().expect("mmi.broker");
    let counter = |name: &str| {
        info.counters
            .get(name)
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    };
    let errors: u64 = info
        .counters
        .get("error_replies")
        .and_then(|v| v.as_object())
        .map(|codes| codes.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(info.queued, 0, "requests left queued: {info:?}");
    assert_eq!(info.in_flight, 0, "requests left in flight: {info:?}");
    assert_eq!(
        counter("requests"),
        counter("replies") + errors,
        "requests routed vs. replies plus error replies: {:?}",
        info.counters
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..100).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            assert!(PORTS.contains(&u32::from(port)));
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }

    #[test]
    fn offsets_for_neighbouring_ports_never_overlap() {
        let defaults = [8081, 8082, 8083, 9797];
        let mut taken = std::collections::HashSet::new();
        for _ in 0..50 {
            let offset = free_port_offset(&defaults);
            for port in defaults {
                let moved = port + offset;
                assert!(PORTS.contains(&u32::from(moved)), "{moved}");
                assert!(taken.insert(moved), "{moved} handed out twice");
            }
        }
        let single = free_port();
        assert!(!taken.contains(&single), "{single} handed out twice");
    }
}
