//! `plantd-state migrate-to-postgres`: a SQLite store copied into PostgreSQL with the real binary
//! serves the same scopes, keys and values; a non-empty target is refused unless `--replace`.
//! Skipped with a message where PostgreSQL is not installed, unless `PLANTD_REQUIRE_POSTGRES`.

mod common;

use std::process::{Command, Output};

use common::{code, data, Backend, Harness};
use plantd_state::store::{StateStore, StoreOptions, WriteOp};
use serde_json::{json, Value};

fn migrate(from: &std::path::Path, dsn: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plantd-state"))
        .arg("migrate-to-postgres")
        .arg("--from")
        .arg(from)
        .args(["--dsn", dsn])
        .args(extra)
        .env_remove("PLANTD_STATE_POSTGRES__DSN")
        .output()
        .expect("run plantd-state migrate-to-postgres")
}

#[test]
fn a_sqlite_store_copied_to_postgres_serves_the_same_data() {
    let Some(mut h) = Harness::broker_only_on(Backend::Postgres) else {
        return;
    };
    let source = h.dir.path().join("source.db");
    let store = StateStore::open(&source, StoreOptions::default()).unwrap();
    for (scope, key, value) in [
        ("a", "k1", json!(1)),
        ("a", "k2", json!({"nested": [1, 2, "x"]})),
        ("b", "ünïcødé", json!("☃")),
        ("b", "Z", json!(null)),
    ] {
        store
            .write_blocking(WriteOp::Set {
                scope: scope.into(),
                key: key.into(),
                value: value.to_string(),
            })
            .unwrap();
    }
    store
        .write_blocking(WriteOp::CreateScope {
            scope: "empty".into(),
        })
        .unwrap();
    store.close();
    drop(store);

    let dsn = h.state_config.postgres.dsn.clone();
    let out = migrate(&source, &dsn, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        copied,
        json!({"scopes": 3, "entries": 4, "replaced_scopes": 0})
    );

    // Once there is data, a second copy is refused, and --replace empties the target first.
    let again = migrate(&source, &dsn, &[]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("--replace"), "{stderr}");
    let replaced = migrate(&source, &dsn, &["--replace"]);
    assert!(
        replaced.status.success(),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    let copied: Value = serde_json::from_slice(&replaced.stdout).unwrap();
    assert_eq!(copied["replaced_scopes"], json!(3));

    // A missing source file is an error naming it, not an empty copy.
    let missing = migrate(&h.dir.path().join("nope.db"), &dsn, &["--replace"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.db"));

    h.start_state();
    assert_eq!(
        data(h.call("list-scopes", json!({})))["scopes"],
        json!(["a", "b", "empty"])
    );
    assert_eq!(
        data(h.call("list-keys", json!({"service": "b"})))["keys"],
        json!(["Z", "ünïcødé"])
    );
    assert_eq!(
        data(h.call("get", json!({"service": "a", "key": "k2"})))["value"],
        json!({"nested": [1, 2, "x"]})
    );
    assert_eq!(
        data(h.call("get", json!({"service": "b", "key": "ünïcødé"})))["value"],
        json!("☃")
    );
    assert_eq!(
        code(&h.call("get", json!({"service": "empty", "key": "x"}))),
        "KEY_NOT_FOUND"
    );
}
