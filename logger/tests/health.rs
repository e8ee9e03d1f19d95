//! The logger's `/healthz` tells the truth: a database damaged while the logger runs turns the
//! `database` check DOWN. Real broker, buses, SQLite file and HTTP.

mod common;

use common::{wait_until, System};
use plantd_sqlite_util::testing::{corrupt_middle, fill};
use serde_json::Value;

/// The named check of `/healthz` as (HTTP status, check status, check output).
fn check(system: &System, name: &str) -> (u16, String, String) {
    let (status, body) = system.http(system.logger.health_port, "/healthz");
    let body: Value = serde_json::from_str(&body).expect("health JSON");
    let check = body["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name} check in {body}"));
    (
        status,
        check["status"].as_str().unwrap_or("").to_owned(),
        check["output"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn damage_found_by_the_scheduled_check_turns_the_database_check_down() {
    let system = System::start(|config| {
        fill(&config.db, 1 << 20);
        config.integrity_check_interval_secs = 1;
    });
    corrupt_middle(&system.logger.db);
    wait_until("the integrity check finds the damage", || {
        let (status, check, output) = check(&system, "database");
        status == 503 && check == "DOWN" && output.contains("integrity check failed")
    });
    system.stop();
}
