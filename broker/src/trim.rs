//! Giving freed memory back to the operating system.
//!
//! glibc's malloc keeps what the broker frees for reuse, and it can only hand back the top of a
//! heap. After a burst (thousands of connections, a backlog of large messages) the freed memory
//! is scattered between a few live blocks and stays resident: heaptrack and `malloc_stats` after
//! 2,000 abandoned services showed 68 MB resident of which 1.7 MB was in use, most of it in the
//! arena of libzmq's I/O thread (`docs/benchmarks.md`, memory). `malloc_trim(0)` returns the free
//! pages of every arena, libzmq's included, which a Rust global allocator would not even see.
//!
//! `malloc_trim` does not shrink the top of a thread's arena, though, and glibc raises its own
//! trim threshold (up to 64 MB) each time a large block is freed: after a burst of megabyte frames
//! the I/O thread's arena kept a 56 MB free top (15 KB in use) that neither `free` nor
//! `malloc_trim` returned. [`configure_malloc`] therefore sets both thresholds itself, which
//! stops glibc from raising them: the trim threshold stays at its initial 128 KiB, so a free top
//! above that is given back at once, and the mmap threshold is fixed at 32 MiB (glibc's maximum,
//! above the default `max_message_size`). A first version pinned the mmap threshold at 128 KiB
//! too; then every large body libzmq received was a fresh mapping, zeroed page by page by the
//! kernel and unmapped again, and 1 MiB bodies moved at half the rate
//! (`docs/benchmarks.md`, "Large bodies"). From the heap, freed body buffers are reused by the
//! next ones and returned by the periodic trim when traffic stops.
//!
//! So the broker pins the thresholds at start, and every `memory_trim_interval_ms` a task calls
//! `malloc_trim(0)` on a blocking thread and counts what it gave back. On a platform without
//! glibc there is nothing to call and no task runs.

use std::time::{Duration, Instant};

use plantd_worker_sdk::Shutdown;
use prometheus::{Counter, IntCounter};

/// The metric handles the trimming task updates.
#[derive(Clone)]
pub struct TrimMetrics {
    /// Trims done.
    pub trims: IntCounter,
    /// Resident bytes the trims gave back (resident size before minus after, when it shrank).
    pub trimmed_bytes: IntCounter,
    /// Time spent trimming.
    pub seconds: Counter,
}

/// True where [`trim`] does something (glibc).
pub const SUPPORTED: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// Calls [`trim`] every `interval` until `stop`.
pub async fn trim_periodically(interval: Duration, metrics: TrimMetrics, stop: Shutdown) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: nothing has been freed yet.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let metrics = metrics.clone();
        // A trim walks every arena's free lists: keep it off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let before = resident_bytes();
            trim();
            let after = resident_bytes();
            metrics.trims.inc();
            metrics.seconds.inc_by(started.elapsed().as_secs_f64());
            if let (Some(before), Some(after)) = (before, after) {
                metrics.trimmed_bytes.inc_by(before.saturating_sub(after));
            }
        })
        .await;
    }
}

/// glibc's initial trim threshold, pinned by [`configure_malloc`].
const TRIM_THRESHOLD: i32 = 128 * 1024;
/// The mmap threshold [`configure_malloc`] fixes: glibc's largest (`DEFAULT_MMAP_THRESHOLD_MAX`
/// on 64-bit), so that bodies up to the default `max_message_size` come from the heap.
const MMAP_THRESHOLD: i32 = 32 * 1024 * 1024;

/// Fixes glibc's mmap and trim thresholds (see the module docs). Process-wide and idempotent.
pub fn configure_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes malloc parameters; it takes the arena lock itself.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Returns the free memory of every malloc arena to the operating system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free pages; it takes each arena's lock itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's resident memory in bytes, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    #[cfg(unix)]
    // SAFETY: `sysconf` has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    #[cfg(not(unix))]
    let size = 4096;
    u64::try_from(size).unwrap_or(4096)
}
