//! The `broker_loop` health check: the loop thread records a heartbeat timestamp on every wakeup,
//! and a small task on the HTTP side turns that into UP (recent) or DOWN (stalled or exited).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plantd_worker_sdk::health::Check;
use plantd_worker_sdk::Shutdown;

/// What the loop thread publishes about itself. Written with relaxed atomics: one store per
/// wakeup, read a few times a second.
#[derive(Debug)]
pub struct LoopStatus {
    origin: Instant,
    last_beat_ms: AtomicU64,
    running: AtomicBool,
}

impl Default for LoopStatus {
    fn default() -> Self {
        LoopStatus {
            origin: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            running: AtomicBool::new(false),
        }
    }
}

impl LoopStatus {
    /// Records that the loop is alive at `now`.
    pub fn beat(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis() as u64;
        self.last_beat_ms.store(ms, Ordering::Relaxed);
    }

    /// Records that the loop started or stopped.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    /// How long since the last beat, or `None` if the loop is not running.
    pub fn silence(&self, now: Instant) -> Option<Duration> {
        if !self.running.load(Ordering::Relaxed) {
            return None;
        }
        let last = Duration::from_millis(self.last_beat_ms.load(Ordering::Relaxed));
        Some(
            now.saturating_duration_since(self.origin)
                .saturating_sub(last),
        )
    }
}

/// Keeps `check` UP while the loop beats at least every `max_silence`, until `stop`.
pub async fn watch(
    status: std::sync::Arc<LoopStatus>,
    check: Check,
    max_silence: Duration,
    stop: Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match status.silence(Instant::now()) {
            None => check.down("broker loop is not running"),
            Some(s) if s > max_silence => {
                check.down(format!("broker loop silent for {} ms", s.as_millis()))
            }
            Some(_) => check.up(),
        }
    }
    check.down("broker stopped");
}
