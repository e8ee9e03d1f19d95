//! Opening a service's database file the one way every plantd SQLite store does: the writer's
//! connection ([`open_writer`]: its directory created, the file optionally private, integrity
//! checked before anything writes, WAL verified, the durability asked for, foreign keys on) and
//! the readers' ([`open_reader`]). Migrations are each store's own, run on the writer's
//! connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{integrity, IntegrityError};

/// How long a connection waits for another's lock before failing with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Its directory or file could not be created.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file failed `PRAGMA quick_check`.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// SQLite refused to open or set it up.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file could not be put in WAL mode (a network filesystem, say).
    #[error("cannot switch {} to WAL (journal_mode is {mode})", path.display())]
    NotWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
}

/// How the writer's connection is set up.
#[derive(Clone, Copy, Debug)]
pub struct WriterSettings {
    /// `PRAGMA synchronous`: `FULL` where an acknowledged write must survive a power loss,
    /// `NORMAL` where surviving a crash of the process is enough.
    pub synchronous: &'static str,
    /// Create the file readable by its owner only (SQLite gives the `-wal` and `-shm` files the
    /// database file's permissions). An existing file keeps its mode.
    pub private: bool,
}

/// The writer's connection to the database at `path`, created if needed, checked and set up as
/// `settings` say; not yet migrated.
pub fn open_writer(path: &Path, settings: WriterSettings) -> Result<Connection, OpenError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| OpenError::Io {
            context: format!("cannot create directory {}", parent.display()),
            source,
        })?;
    }
    if settings.private {
        create_private(path)?;
    }
    let conn = Connection::open(path)?;
    // First of all: another process opening the same file may hold a lock for a moment.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Before anything writes to it: serving from a damaged file spreads the damage.
    integrity::check_connection(&conn, path)?;
    switch_to_wal(&conn, path)?;
    conn.pragma_update(None, "synchronous", settings.synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// A query-only connection to the database at `path`, which the writer has created. Opened
/// read-write (a WAL reader may need to create the `-shm` file) with `query_only` on.
pub fn open_reader(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

/// Puts the file in WAL mode. The switch needs the file to itself for a moment, and SQLite does
/// not wait for that the way `busy_timeout` waits for ordinary locks: with another process
/// opening the same fresh file (two state services sharing it) the pragma fails with "database
/// is locked" or leaves the mode unchanged. So it is tried again, up to [`BUSY_TIMEOUT`].
fn switch_to_wal(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let tried = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0));
        let retry = match tried {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => OpenError::NotWal {
                path: path.to_owned(),
                mode,
            },
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                OpenError::Sqlite(e)
            }
            Err(e) => return Err(OpenError::Sqlite(e)),
        };
        if std::time::Instant::now() >= deadline {
            return Err(retry);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates `path` with mode 0600 unless it exists.
fn create_private(path: &Path) -> Result<(), OpenError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(OpenError::Io {
            context: format!("cannot create {}", path.display()),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_writer_makes_a_0600_wal_file_and_readers_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/db.sqlite");
        let settings = WriterSettings {
            synchronous: "FULL",
            private: true,
        };
        let writer = open_writer(&path, settings).unwrap();
        writer.execute("CREATE TABLE t (x INTEGER)", []).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let fk: i64 = writer
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let reader = open_reader(&path).unwrap();
        let rows: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
        assert!(reader.execute("INSERT INTO t VALUES (1)", []).is_err());
    }

    #[test]
    fn processes_opening_one_fresh_file_at_once_all_get_wal() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("shared.db");
            let barrier = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                let openers: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            let settings = WriterSettings {
                                synchronous: "NORMAL",
                                private: true,
                            };
                            let conn = open_writer(&path, settings).map_err(|e| e.to_string())?;
                            crate::migrations::migrate(&mut { conn }, &["CREATE TABLE t (x);"])
                                .map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                for opener in openers {
                    assert_eq!(opener.join().unwrap(), Ok(1), "round {round}");
                }
            });
        }
    }

    #[test]
    fn a_damaged_file_is_refused_before_anything_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let settings = WriterSettings {
            synchronous: "NORMAL",
            private: false,
        };
        let e = open_writer(&path, settings).unwrap_err();
        assert!(
            matches!(e, OpenError::Integrity(_) | OpenError::Sqlite(_)),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
    }
}
