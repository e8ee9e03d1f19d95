//! Issue test 6: a backup (the `backup` operation, and the schedule) is a database that opens and
//! holds the same data.

mod common;

use std::collections::BTreeSet;

use common::{data, wait_for, Harness};
use plantd_state::backup::BackupConfig;
use plantd_state::store::{StateStore, StoreOptions};
use serde_json::json;

#[test]
fn the_backup_operation_writes_a_database_with_the_same_data() {
    let h = Harness::start();
    for i in 0..100 {
        data(h.call(
            "set",
            json!({"service": format!("s{}", i % 5), "key": format!("k{i}"), "value": {"i": i}}),
        ));
    }
    let target = h.dir.path().join("snapshots/manual.db");
    let done = data(h.call("backup", json!({"path": target.to_str().unwrap()})));
    assert_eq!(done["status"], json!("completed"));
    assert!(done["bytes"].as_u64().unwrap() > 0);
    // Never overwrites.
    assert_eq!(
        common::code(&h.call("backup", json!({"path": target.to_str().unwrap()}))),
        "INVALID_REQUEST"
    );

    let copy = StateStore::open(&target, StoreOptions::default()).unwrap();
    assert_eq!(
        copy.list_scopes().unwrap(),
        vec!["s0", "s1", "s2", "s3", "s4"]
    );
    for i in [0, 42, 99] {
        assert_eq!(
            copy.get(&format!("s{}", i % 5), &format!("k{i}")).unwrap(),
            format!("{{\"i\":{i}}}")
        );
    }
    assert_eq!(copy.list_keys("s3").unwrap().len(), 20);
}

#[test]
fn scheduled_backups_keep_the_newest_n() {
    let mut h = Harness::broker_only();
    let dir = h.dir.path().join("scheduled");
    h.state_config.backup = BackupConfig {
        interval_secs: 1,
        keep: 2,
        dir: Some(dir.clone()),
    };
    h.start_state();
    data(h.call("set", json!({"service": "s", "key": "k", "value": "kept"})));
    let mut seen = BTreeSet::new();
    wait_for("three scheduled snapshots", || {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".db") {
                    seen.insert(name);
                }
            }
        }
        seen.len() >= 3
    });
    // Stop the schedule so nothing is pruned while we look.
    h.stop_state();
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "db"))
        .collect();
    assert!(left.len() <= 2, "{left:?}");
    let newest = left.iter().max().unwrap();
    let copy = StateStore::open(newest, StoreOptions::default()).unwrap();
    assert_eq!(copy.get("s", "k").unwrap(), "\"kept\"");
}
