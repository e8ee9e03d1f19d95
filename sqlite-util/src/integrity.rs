//! Integrity checks with SQLite's `PRAGMA quick_check`: [`check_connection`] when a service opens
//! its database (a damaged file refuses to start), and [`watch`] on a schedule while it runs
//! (a damaged file turns the [`DatabaseCheck`] DOWN).
//!
//! `quick_check` reads every page of the file (it skips only the index-content cross-checks of
//! `integrity_check`), so it costs about one full read of the database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plantd_worker_sdk::Shutdown;
use rusqlite::{Connection, OpenFlags};

use crate::DatabaseCheck;

/// At most this many problems are asked of SQLite and reported: the first few say enough.
const MAX_PROBLEMS: u32 = 5;

/// Why a database failed its integrity check.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    /// SQLite found the file damaged.
    #[error("{} is damaged (PRAGMA quick_check: {complaint})", path.display())]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What SQLite said, problems joined with `; `.
        complaint: String,
    },
    /// The check itself could not run.
    #[error("cannot check the integrity of {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Cause.
        source: rusqlite::Error,
    },
}

impl IntegrityError {
    /// What SQLite said, without the file name.
    pub fn complaint(&self) -> String {
        match self {
            IntegrityError::Damaged { complaint, .. } => complaint.clone(),
            IntegrityError::Sqlite { source, .. } => source.to_string(),
        }
    }
}

/// Runs `PRAGMA quick_check` on `conn`, an open connection to the file at `path` (named in the
/// error).
pub fn check_connection(conn: &Connection, path: &Path) -> Result<(), IntegrityError> {
    let damaged = |complaint: String| IntegrityError::Damaged {
        path: path.to_owned(),
        complaint,
    };
    let rows: rusqlite::Result<Vec<String>> = conn
        .prepare(&format!("PRAGMA quick_check({MAX_PROBLEMS})"))
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect());
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(()),
        // Rows may hold several lines; one line reads better in logs and `/healthz`.
        Ok(rows) => Err(damaged(
            rows.iter()
                .flat_map(|row| row.lines())
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        )),
        // Damage bad enough that SQLite cannot even walk the file is damage all the same.
        Err(e) if is_corruption(&e) => Err(damaged(e.to_string())),
        Err(source) => Err(IntegrityError::Sqlite {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Runs `PRAGMA quick_check` on the file at `path`, through a read-only connection of its own
/// (which WAL lets run beside the service's writer).
pub fn check_file(path: &Path) -> Result<(), IntegrityError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|conn| {
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(conn)
    });
    match conn {
        Ok(conn) => check_connection(&conn, path),
        Err(e) if is_corruption(&e) => Err(IntegrityError::Damaged {
            path: path.to_owned(),
            complaint: e.to_string(),
        }),
        Err(source) => Err(IntegrityError::Sqlite {
            path: path.to_owned(),
            source,
        }),
    }
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Checks the file at `path` every `interval` (`None`: never) until `stop` is cancelled, and
/// reports each outcome to `check`. The first check runs one interval after the call: the
/// service checked the file when it opened it.
pub async fn watch(
    path: PathBuf,
    interval: Option<Duration>,
    check: DatabaseCheck,
    stop: Shutdown,
) {
    let Some(interval) = interval.filter(|i| !i.is_zero()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let file = path.clone();
        // It reads the whole file: off the async runtime.
        let result = match tokio::task::spawn_blocking(move || check_file(&file)).await {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!(error = %e, "integrity check task failed");
                continue;
            }
        };
        match result {
            Ok(()) => check.integrity_passed(),
            Err(e) => {
                tracing::error!(error = %e, "database integrity check failed");
                check.integrity_failed(e.complaint());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{corrupt_middle, fill};

    #[test]
    fn a_sound_file_passes_and_a_damaged_one_names_itself_and_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        fill(&path, 1 << 20);
        check_file(&path).unwrap();

        corrupt_middle(&path);
        let error = check_file(&path).unwrap_err();
        assert!(matches!(error, IntegrityError::Damaged { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("quick_check"), "{message}");
        assert!(!error.complaint().is_empty());
        assert_ne!(error.complaint(), "ok");
        assert!(!message.contains('\n'), "one line: {message}");
    }
}
