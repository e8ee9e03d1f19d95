//! The restore drills of docs/operations.md#backups, performed for real on `plantd up`: back up,
//! lose the database, restore the backup, and find the data (and nothing written after the
//! backup). State backs up online (`plant state backup`); identity is copied while stopped.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{isolated, plant_binary, Plantd};
use serde_json::Value;

/// `plant args...` against `plantd` with `input` on stdin.
fn plant_stdin(plantd: &Plantd, args: &[&str], input: &str) -> Output {
    let mut child = isolated(plant_binary(), &plantd.dir)
        .args(["--endpoint", &plantd.endpoint, "--timeout", "10s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Removes a SQLite database with its WAL and shared-memory files, as a lost disk would.
fn lose(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
    assert!(!db.exists());
}

fn get(plantd: &Plantd, key: &str) -> Output {
    plantd.plant(&["--output", "json", "state", "get", "--scope", "drill", key])
}

#[test]
fn state_restore_drill_backup_lose_the_database_restore_values_present() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("plantd-data");
    let mut plantd = Plantd::start(dir.path(), &[], &[]);
    plantd.plant_ok(&["state", "create-scope", "--scope", "drill"]);
    plantd.plant_ok(&[
        "state",
        "set",
        "--scope",
        "drill",
        "setpoint",
        r#"{"c": 21.5}"#,
    ]);
    // Online, while serving: a relative path lands in the backup directory.
    plantd.plant_ok(&["state", "backup", "drill.db"]);
    let backup = data.join("backups/drill.db");
    assert!(backup.is_file());
    plantd.plant_ok(&["state", "set", "--scope", "drill", "later", "1"]);
    assert!(plantd.interrupt().success());

    // The drill: the database is gone; restore it from the backup while the service is stopped.
    let db = data.join("plantd-state.db");
    lose(&db);
    std::fs::copy(&backup, &db).unwrap();

    let mut plantd = Plantd::start(dir.path(), &[], &[]);
    let got: Value = serde_json::from_slice(&get(&plantd, "setpoint").stdout).unwrap();
    assert_eq!(got["value"], serde_json::json!({"c": 21.5}), "{got}");
    let after = get(&plantd, "later");
    assert!(
        !after.status.success(),
        "a value set after the backup is not in it"
    );
    assert!(String::from_utf8_lossy(&after.stderr).contains("KEY_NOT_FOUND"));
    assert!(plantd.interrupt().success());
}

#[test]
fn identity_restore_drill_copy_while_stopped_lose_it_restore_users_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("plantd-data");
    let password = "drill-password-of-some-length-7";
    let mut plantd = Plantd::start(dir.path(), &[], &[]);
    let create = |plantd: &Plantd, name: &str| {
        let out = plant_stdin(
            plantd,
            &[
                "identity",
                "user",
                "create",
                &format!("username={name}"),
                &format!("email={name}@example.com"),
                "--password-stdin",
            ],
            password,
        );
        assert!(out.status.success(), "{out:?}");
    };
    create(&plantd, "alice");
    assert!(plantd.interrupt().success());

    // Backup: identity stopped, its database copied (with its WAL, if one was left).
    let db = data.join("plantd-identity.db");
    let backups = dir.path().join("identity-backup");
    std::fs::create_dir_all(&backups).unwrap();
    for suffix in ["", "-wal"] {
        let from = format!("{}{suffix}", db.display());
        if Path::new(&from).exists() {
            std::fs::copy(&from, backups.join(format!("plantd-identity.db{suffix}"))).unwrap();
        }
    }
    let plantd = Plantd::start(dir.path(), &[], &[]);
    create(&plantd, "bob");
    let mut plantd = plantd;
    assert!(plantd.interrupt().success());

    lose(&db);
    for suffix in ["", "-wal"] {
        let from = backups.join(format!("plantd-identity.db{suffix}"));
        if from.exists() {
            std::fs::copy(&from, format!("{}{suffix}", db.display())).unwrap();
        }
    }
    let mut plantd = Plantd::start(dir.path(), &[], &[]);
    let login = |user: &str| {
        plant_stdin(
            &plantd,
            &["auth", "login", "-u", user, "--password-stdin"],
            password,
        )
    };
    let alice = login("alice");
    assert!(alice.status.success(), "alice is restored: {alice:?}");
    let bob = login("bob");
    assert!(!bob.status.success(), "bob was created after the backup");
    assert!(plantd.interrupt().success());
}
