//! `/healthz` tells the truth about the database: failed writes and a damaged file turn the
//! `database` check DOWN, and a damaged file refuses to start. Real broker, real SQLite file,
//! real HTTP.

mod common;

use common::{code, data, wait_for, Harness};
use plantd_sqlite_util::testing::{corrupt_middle, fill};
use plantd_state::{StateConfig, StateError};
use serde_json::{json, Value};

/// `/healthz` as (status, the `database` check's status, its output).
fn database_check(h: &Harness) -> (u16, String, String) {
    let response = reqwest::blocking::get(format!("{}/healthz", h.health_url())).expect("GET");
    let status = response.status().as_u16();
    let body: Value = response.json().expect("health JSON");
    let check = body["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "database"))
        .cloned()
        .unwrap_or_else(|| panic!("no database check in {body}"));
    (
        status,
        check["status"].as_str().unwrap_or("").to_owned(),
        check["output"].as_str().unwrap_or("").to_owned(),
    )
}

fn wait_until_up(h: &Harness) {
    wait_for("/healthz to be 200", || database_check(h).0 == 200);
}

#[test]
fn a_failed_write_turns_the_database_check_down_until_a_write_succeeds() {
    let mut h = Harness::broker_only();
    // Room for the schema and small values, not for a 512 KiB one: SQLite fails that write with
    // SQLITE_FULL, as on a full disk. The probe only runs at startup, so it cannot interfere.
    h.state_config.max_db_bytes = 64 * 1024;
    h.state_config.probe_interval_secs = 3600;
    h.start_state();
    wait_until_up(&h);

    let big = "x".repeat(512 * 1024);
    let reply = h.call(
        "state-set",
        json!({"service": "s", "key": "big", "value": big}),
    );
    assert_eq!(code(&reply), "STORAGE_ERROR", "{reply}");
    // Reported before the reply was sent: no waiting.
    let (status, check, output) = database_check(&h);
    assert_eq!((status, check.as_str()), (503, "DOWN"), "{output}");
    assert!(output.contains("full"), "{output}");

    data(h.call(
        "state-set",
        json!({"service": "s", "key": "small", "value": 1}),
    ));
    let (status, check, output) = database_check(&h);
    assert_eq!((status, check.as_str()), (200, "UP"), "{output}");
}

#[test]
fn a_damaged_file_refuses_to_start_naming_the_file_and_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    fill(&db, 1 << 20);
    corrupt_middle(&db);
    let config = StateConfig {
        db: db.clone(),
        broker_endpoint: plantd_worker_sdk::testing::free_endpoint(),
        health_host: "127.0.0.1".into(),
        health_port: plantd_worker_sdk::testing::free_port(),
        bus_endpoint: String::new(),
        auth: plantd_worker_sdk::auth::AuthConfig::off(),
        ..StateConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        let run = plantd_state::run(config, plantd_state::Shutdown::new());
        tokio::time::timeout(common::DEADLINE, run).await
    });
    let error = result
        .expect("still running: the damaged database is being served")
        .expect_err("a damaged database must not be served");
    assert!(
        matches!(
            error,
            StateError::Store(plantd_state::store::StoreError::Integrity(_))
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&db.display().to_string()), "{message}");
    assert!(message.contains("quick_check"), "{message}");
}

#[test]
fn damage_found_by_the_scheduled_check_turns_the_database_check_down() {
    let mut h = Harness::broker_only();
    fill(&h.db_path(), 1 << 20);
    h.state_config.integrity_check_interval_secs = 1;
    h.start_state();
    wait_until_up(&h);

    corrupt_middle(&h.db_path());
    wait_for("the integrity check to find the damage", || {
        let (status, check, output) = database_check(&h);
        status == 503 && check == "DOWN" && output.contains("integrity check failed")
    });
    // Writes still succeed (the damage is elsewhere in the file), and must not hide it.
    data(h.call("state-set", json!({"service": "s", "key": "k", "value": 1})));
    assert_eq!(database_check(&h).0, 503);
}
