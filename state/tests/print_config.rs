//! `store: postgres` from the environment, and the DSN's password kept out of `--print-config`.

use std::process::Command;

use serde_json::Value;

#[test]
fn print_config_shows_the_postgres_store_with_the_password_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_plantd-state"))
        .arg("--print-config")
        .current_dir(dir.path())
        .env("PLANTD_STATE_STORE", "postgres")
        .env(
            "PLANTD_STATE_POSTGRES__DSN",
            "postgres://plantd:hunter2-secret@db.example:5432/state",
        )
        .env("PLANTD_STATE_POSTGRES__POOL_SIZE", "7")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "{stdout}{stderr}"
    );
    let config: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(config["store"], "postgres");
    assert_eq!(
        config["postgres"]["dsn"],
        "postgres://plantd:***@db.example:5432/state"
    );
    assert_eq!(config["postgres"]["pool_size"], 7);
}

#[test]
fn an_unknown_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_plantd-state"))
        .arg("--print-config")
        .current_dir(dir.path())
        .env("PLANTD_STATE_STORE", "mysql")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mysql"));
}
