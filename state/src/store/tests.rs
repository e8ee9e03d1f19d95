use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::*;
use crate::backup;

fn open(dir: &tempfile::TempDir) -> StateStore {
    StateStore::open(dir.path().join("state.db"), StoreOptions::default()).unwrap()
}

fn set(store: &StateStore, scope: &str, key: &str, value: &str) {
    store
        .write_blocking(WriteOp::Set {
            scope: scope.into(),
            key: key.into(),
            value: value.into(),
        })
        .unwrap();
}

#[test]
fn set_creates_the_scope_and_get_tells_missing_key_from_missing_scope() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert!(matches!(
        store.get("s", "k"),
        Err(StoreError::ScopeNotFound(_))
    ));
    set(&store, "s", "k", "\"\"");
    assert_eq!(store.get("s", "k").unwrap(), "\"\"");
    assert!(matches!(
        store.get("s", "other"),
        Err(StoreError::KeyNotFound { .. })
    ));
    assert_eq!(store.list_scopes().unwrap(), vec!["s".to_string()]);
    set(&store, "s", "k", r#"{"a":[1,2]}"#);
    assert_eq!(store.get("s", "k").unwrap(), r#"{"a":[1,2]}"#);
}

#[test]
fn scope_lifecycle_and_delete_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let create = || WriteOp::CreateScope { scope: "s".into() };
    store.write_blocking(create()).unwrap();
    assert!(matches!(
        store.write_blocking(create()),
        Err(StoreError::ScopeExists(_))
    ));
    set(&store, "s", "b", "2");
    set(&store, "s", "a", "1");
    assert_eq!(store.list_keys("s").unwrap(), vec!["a", "b"]);
    let delete = |key: &str| WriteOp::Delete {
        scope: "s".into(),
        key: key.into(),
    };
    store.write_blocking(delete("a")).unwrap();
    assert!(matches!(
        store.write_blocking(delete("a")),
        Err(StoreError::KeyNotFound { .. })
    ));
    store
        .write_blocking(WriteOp::DeleteScope { scope: "s".into() })
        .unwrap();
    assert!(matches!(
        store.list_keys("s"),
        Err(StoreError::ScopeNotFound(_))
    ));
    assert!(matches!(
        store.write_blocking(delete("b")),
        Err(StoreError::ScopeNotFound(_))
    ));
    // The entries went with the scope: recreating it gives an empty scope.
    store.write_blocking(create()).unwrap();
    assert!(store.list_keys("s").unwrap().is_empty());
}

#[test]
fn set_many_is_atomic_and_get_many_reports_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .write_blocking(WriteOp::SetMany {
            scope: "m".into(),
            entries: vec![("x".into(), "1".into()), ("y".into(), "\"two\"".into())],
        })
        .unwrap();
    let keys = ["x", "nope", "y"].map(String::from);
    assert_eq!(
        store.get_many("m", &keys).unwrap(),
        vec![Some("1".into()), None, Some("\"two\"".into())]
    );
    assert!(matches!(
        store.get_many("other", &keys),
        Err(StoreError::ScopeNotFound(_))
    ));
}

#[test]
fn a_failing_request_does_not_undo_its_batch_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .write_blocking(WriteOp::CreateScope { scope: "s".into() })
        .unwrap();
    // Submitted back to back, these usually share a transaction; either way each must stand alone.
    let receipts = vec![
        store.submit(WriteOp::Set {
            scope: "s".into(),
            key: "before".into(),
            value: "1".into(),
        }),
        store.submit(WriteOp::CreateScope { scope: "s".into() }),
        store.submit(WriteOp::Set {
            scope: "s".into(),
            key: "after".into(),
            value: "2".into(),
        }),
    ];
    let results: Vec<_> = receipts
        .into_iter()
        .map(|r| r.blocking_recv().unwrap())
        .collect();
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(results[1], Err(StoreError::ScopeExists(_))));
    assert_eq!(store.list_keys("s").unwrap(), vec!["after", "before"]);
}

#[test]
fn queued_writes_are_committed_together_and_acknowledged_only_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = StateMetrics::unregistered();
    let store = StateStore::open(
        dir.path().join("state.db"),
        StoreOptions {
            metrics: Some(metrics.clone()),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    // Hold the database write lock from another connection so the writer cannot commit.
    let blocker = Connection::open(dir.path().join("state.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut receipts: Vec<_> = (0..100)
        .map(|i| {
            store.submit(WriteOp::Set {
                scope: "g".into(),
                key: format!("k{i}"),
                value: i.to_string(),
            })
        })
        .collect();
    // Nothing may be acknowledged while the commit cannot happen.
    std::thread::sleep(Duration::from_millis(100));
    assert!(receipts.iter_mut().all(|r| r.try_recv().is_err()));
    blocker.execute_batch("COMMIT").unwrap();
    for r in receipts {
        r.blocking_recv().unwrap().unwrap();
    }
    assert_eq!(store.list_keys("g").unwrap().len(), 100);
    // 100 writes in at most 2 transactions: the first job alone, then everything queued behind it.
    let batches = metrics.commit_batch_size.get_sample_count();
    assert!(batches <= 2, "{batches} commits for 100 queued writes");
    assert_eq!(metrics.commit_batch_size.get_sample_sum() as u64, 100);
}

#[test]
fn data_survives_close_and_reopen_and_writes_after_close_fail() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..50 {
        set(&store, &format!("scope-{i}"), "k", &i.to_string());
    }
    store.close();
    assert!(matches!(
        store.write_blocking(WriteOp::Probe),
        Err(StoreError::Closed)
    ));
    drop(store);
    let store = open(&dir);
    assert_eq!(store.list_scopes().unwrap().len(), 50);
    assert_eq!(store.get("scope-49", "k").unwrap(), "49");
}

#[test]
fn backup_copies_a_consistent_database_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    set(&store, "s", "k", "\"v\"");
    let dest = dir.path().join("copies/one.db");
    let bytes = store.backup_to(&dest).unwrap();
    assert!(bytes > 0);
    assert!(matches!(
        store.backup_to(&dest),
        Err(StoreError::BackupTargetExists(_))
    ));
    let copy = StateStore::open(&dest, StoreOptions::default()).unwrap();
    assert_eq!(copy.get("s", "k").unwrap(), "\"v\"");
}

#[test]
fn snapshots_are_pruned_to_the_newest_n() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    set(&store, "s", "k", "1");
    let snapshots = dir.path().join("snap");
    let mut kept = Vec::new();
    for _ in 0..4 {
        kept.push(backup::snapshot(&store, &snapshots, 2).unwrap());
        // Names have millisecond resolution.
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut left: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    assert_eq!(left, kept[2..].to_vec());
}

#[derive(Default)]
struct Collect(Mutex<Vec<StateChange>>);

impl ChangePublisher for Collect {
    fn publish(&self, changes: Vec<StateChange>) {
        self.0.lock().unwrap().extend(changes);
    }
}

#[test]
fn committed_changes_are_published_and_failed_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let collect = Arc::new(Collect::default());
    let store = StateStore::open(
        dir.path().join("state.db"),
        StoreOptions {
            publisher: collect.clone(),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    set(&store, "s", "k", "1");
    let _ = store.write_blocking(WriteOp::Delete {
        scope: "s".into(),
        key: "missing".into(),
    });
    store
        .write_blocking(WriteOp::Delete {
            scope: "s".into(),
            key: "k".into(),
        })
        .unwrap();
    store.close();
    let changes = collect.0.lock().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(
        (
            changes[0].key.as_deref(),
            changes[0].value_json.as_deref(),
            changes[0].deleted
        ),
        (Some("k"), Some("1"), false)
    );
    assert_eq!(
        (changes[1].key.as_deref(), changes[1].deleted),
        (Some("k"), true)
    );
    assert_eq!(changes[1].topic(), "org.plantd.state.s");
}

/// A write that fills the disk makes SQLite roll back the whole batch transaction itself: every
/// write of that batch must then be reported failed and be absent, none committed on the side.
#[test]
fn a_batch_sqlite_rolled_back_itself_fails_whole_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let options = StoreOptions {
        // Room for small values, not for a 512 KiB one: SQLITE_FULL, as on a full disk.
        max_db_bytes: 64 * 1024,
        ..StoreOptions::default()
    };
    let store = StateStore::open(&path, options).unwrap();
    set(&store, "s", "before", "0");

    // Another connection holds the write lock, so the writer waits in its first batch while the
    // writes below queue up: the small one after the big one shares its transaction (unless the
    // writer happened to take the big one into that first batch, and then the check is weaker).
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let first = store.submit(WriteOp::Probe);
    let op = |key: &str, len: usize| WriteOp::Set {
        scope: "s".into(),
        key: key.into(),
        value: format!("\"{}\"", "x".repeat(len)),
    };
    let receipts = [
        ("big", store.submit(op("big", 512 * 1024))),
        ("small", store.submit(op("small", 1))),
    ];
    blocker.execute_batch("COMMIT").unwrap();
    let _ = first.blocking_recv();

    for (key, receipt) in receipts {
        let result = receipt.blocking_recv().unwrap();
        let stored = store.get("s", key);
        match result {
            Ok(()) => assert!(stored.is_ok(), "{key} acknowledged but not stored"),
            Err(e) => {
                assert!(e.is_storage_failure(), "{key}: {e}");
                assert!(e.to_string().contains("full"), "{key}: {e}");
                assert!(
                    matches!(stored, Err(StoreError::KeyNotFound { .. })),
                    "{key} reported failed but stored"
                );
            }
        }
    }
    assert!(store.get("s", "big").is_err(), "the big write cannot fit");
    // The store keeps working for writes that fit.
    set(&store, "s", "after", "1");
    assert_eq!(store.get("s", "after").unwrap(), "1");
    assert_eq!(store.get("s", "before").unwrap(), "0");
}
