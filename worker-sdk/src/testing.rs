//! Helpers for tests that run real services on loopback.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Ports handed out by [`free_port`]: below Linux's default ephemeral range (32768–60999), so the
/// kernel never picks one as the source port of an outgoing connection between our check and the
/// moment a test binds it (which an OS-chosen ephemeral port can suffer under parallel tests).
const PORTS: std::ops::Range<u32> = 20_000..32_768;

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before. Each process starts at a random place in the range, so parallel test processes rarely
/// meet.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = PORTS.end - PORTS.start;
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let _ = NEXT.compare_exchange(
            u32::MAX,
            rand::random::<u32>() % span,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    for _ in 0..span {
        let port = PORTS.start + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free loopback port in {PORTS:?}")
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
}
