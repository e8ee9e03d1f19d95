//! Helpers for tests that need a real database file of some size, and damage to it.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use rand::RngCore;
use rusqlite::Connection;

/// How many bytes [`corrupt_middle`] overwrites.
pub const CORRUPTION_BYTES: usize = 64 * 1024;

/// Writes `bytes` of rows into a scratch table of the database at `path` (created if missing)
/// and checkpoints the WAL, so the rows are in the main file.
pub fn fill(path: &Path, bytes: usize) {
    let conn = Connection::open(path).expect("open database to fill");
    conn.execute_batch("CREATE TABLE IF NOT EXISTS test_filler (id INTEGER PRIMARY KEY, pad TEXT)")
        .expect("filler table");
    let pad = "x".repeat(200);
    conn.execute_batch("BEGIN").expect("begin");
    for _ in 0..bytes / pad.len() {
        conn.execute("INSERT INTO test_filler (pad) VALUES (?1)", [&pad])
            .expect("insert filler");
    }
    conn.execute_batch("COMMIT").expect("commit");
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// Overwrites [`CORRUPTION_BYTES`] in the middle of the file at `path` with random bytes and
/// flushes them to the file. The file should be several times larger than that.
pub fn corrupt_middle(path: &Path) {
    let len = std::fs::metadata(path).expect("database file").len();
    assert!(
        len >= 4 * CORRUPTION_BYTES as u64,
        "{} is too small ({len} bytes) to damage in the middle",
        path.display()
    );
    let mut garbage = vec![0u8; CORRUPTION_BYTES];
    rand::thread_rng().fill_bytes(&mut garbage);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open database file for writing");
    file.seek(SeekFrom::Start(len / 2 - CORRUPTION_BYTES as u64 / 2))
        .expect("seek");
    file.write_all(&garbage).expect("write garbage");
    file.sync_all().expect("sync");
}
