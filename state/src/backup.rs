//! Online backups: a consistent copy of the live database with SQLite's backup API, and the
//! schedule that takes one every interval and keeps the newest N.
//!
//! A backup is written to `<dest>.partial` and renamed into place when complete, so a file with the
//! final name is always a whole database. Restoring is a file copy while the service is stopped
//! (docs/state.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::metrics::StateMetrics;
use crate::store::{StateStore, StoreError};
use crate::Shutdown;

/// File-name prefix of scheduled snapshots; pruning only ever touches files with it.
pub const SNAPSHOT_PREFIX: &str = "plantd-state-";

/// Scheduled backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupConfig {
    /// Seconds between snapshots; 0 disables the schedule (the `backup` operation still works).
    pub interval_secs: u64,
    /// Snapshots kept; older ones are deleted after each new one (at least 1 is kept).
    pub keep: usize,
    /// Directory of snapshots and of relative `backup {path}` targets. Default: `backups/` next to
    /// the database.
    pub dir: Option<PathBuf>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            interval_secs: 0,
            keep: 7,
            dir: None,
        }
    }
}

impl BackupConfig {
    /// The snapshot directory for the database at `db`.
    pub fn dir_for(&self, db: &Path) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.clone(),
            None => db
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("backups"),
        }
    }
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

/// Copies the database behind `src` to `dest` (which must not exist). Returns the copy's size.
pub fn online_backup(src: &Connection, dest: &Path) -> Result<u64, StoreError> {
    if dest.exists() {
        return Err(StoreError::BackupTargetExists(dest.to_path_buf()));
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(io_error(format!("cannot create {}", parent.display())))?;
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);

    let result = copy_pages(src, &partial).and_then(|()| {
        std::fs::rename(&partial, dest).map_err(io_error(format!(
            "cannot move the backup into place at {}",
            dest.display()
        )))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result?;
    Ok(std::fs::metadata(dest)
        .map_err(io_error(format!("cannot stat {}", dest.display())))?
        .len())
}

fn copy_pages(src: &Connection, dest: &Path) -> Result<(), StoreError> {
    let mut dst = Connection::open(dest)?;
    {
        let backup = Backup::new(src, &mut dst)?;
        // All pages in one step: one read snapshot, so the copy is consistent even while the
        // writer commits. Busy/locked only happen under contention; retry briefly.
        let mut attempts = 0;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    attempts += 1;
                    if attempts > 200 {
                        return Err(StoreError::Commit(
                            "backup source stayed busy for 10 s".into(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {}
            }
        }
    }
    // The copy inherits WAL mode from the header; fold its WAL in so the file stands alone.
    dst.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    dst.close().map_err(|(_, e)| StoreError::Sqlite(e))?;
    Ok(())
}

/// The file name of a snapshot taken now, sortable by time.
pub fn snapshot_name() -> String {
    format!(
        "{SNAPSHOT_PREFIX}{}.db",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    )
}

/// Deletes all but the newest `keep` snapshots in `dir`. Returns how many were deleted.
pub fn prune(dir: &Path, keep: usize) -> Result<usize, StoreError> {
    let entries =
        std::fs::read_dir(dir).map_err(io_error(format!("cannot list {}", dir.display())))?;
    let mut snapshots: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(SNAPSHOT_PREFIX) && n.ends_with(".db"))
        })
        .collect();
    // Names embed a UTC timestamp, so lexical order is age order.
    snapshots.sort();
    let excess = snapshots.len().saturating_sub(keep.max(1));
    for old in &snapshots[..excess] {
        std::fs::remove_file(old).map_err(io_error(format!("cannot delete {}", old.display())))?;
    }
    Ok(excess)
}

/// Takes one snapshot into `dir` and prunes to `keep`. Returns the snapshot's path.
pub fn snapshot(store: &StateStore, dir: &Path, keep: usize) -> Result<PathBuf, StoreError> {
    let dest = dir.join(snapshot_name());
    store.backup_to(&dest)?;
    prune(dir, keep)?;
    Ok(dest)
}

/// Runs the backup schedule until `shutdown`. Does nothing if the interval is 0.
pub async fn run_schedule(
    store: StateStore,
    config: BackupConfig,
    metrics: StateMetrics,
    shutdown: Shutdown,
) {
    if config.interval_secs == 0 {
        return;
    }
    let dir = config.dir_for(store.path());
    let mut ticker = tokio::time::interval(Duration::from_secs(config.interval_secs));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; the first snapshot is one interval after start.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (store, dir, keep) = (store.clone(), dir.clone(), config.keep);
        match tokio::task::spawn_blocking(move || snapshot(&store, &dir, keep)).await {
            Ok(Ok(path)) => {
                metrics.backups.with_label_values(&["ok"]).inc();
                tracing::info!(path = %path.display(), "scheduled backup written");
            }
            Ok(Err(e)) => {
                metrics.backups.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "scheduled backup failed");
            }
            Err(e) => {
                metrics.backups.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "scheduled backup task failed");
            }
        }
    }
}
