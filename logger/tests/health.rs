//! The logger's `/healthz` tells the truth: `broker_connection` is UP as soon as the broker routes
//! to the logger and DOWN once the broker is gone, and a database damaged while the logger runs
//! turns the `database` check DOWN. Real broker, buses, SQLite file and HTTP.

mod common;

use std::time::Duration;

use common::{wait_until, System};
use plantd_sqlite_util::testing::{corrupt_middle, fill};
use plantd_worker_sdk::client::Client;
use serde_json::Value;

/// The named check of `/healthz` as (HTTP status, check status, check output).
fn check(system: &System, name: &str) -> (u16, String, String) {
    try_check(system, name).expect("/healthz answers")
}

/// Like [`check`], `None` while `/healthz` does not answer yet.
fn try_check(system: &System, name: &str) -> Option<(u16, String, String)> {
    let url = format!("http://127.0.0.1:{}/healthz", system.logger.health_port);
    let response = reqwest::blocking::get(url).ok()?;
    let status = response.status().as_u16();
    let body: Value = response.json().expect("health JSON");
    let check = body["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name} check in {body}"));
    Some((
        status,
        check["status"].as_str().unwrap_or("").to_owned(),
        check["output"].as_str().unwrap_or("").to_owned(),
    ))
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

#[test]
fn broker_connection_is_up_as_soon_as_the_broker_routes_to_the_logger() {
    // The broker heartbeats every 5 s, its first tick 5 s after it started: far later than the
    // GET below, so a check waiting for the broker's first message would still be DOWN there.
    let mut system = System::launch(|broker| broker.heartbeat_interval_ms = 5000, |_| {});
    // The other checks do not depend on the broker's heartbeats: wait for them first.
    wait_until("the database and subscribed checks are UP", || {
        let up = |name| try_check(&system, name).is_some_and(|c| c.1 == "UP");
        up("database") && up("subscribed")
    });
    let client = Client::connect(&system.broker_endpoint)
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    wait_until("the broker routes to the logger", || {
        client
            .service_available(plantd_logger::SERVICE)
            .unwrap_or(false)
    });
    let (status, broker, output) = check(&system, "broker_connection");
    assert_eq!((status, broker.as_str()), (200, "UP"), "{output}");

    system.stop_broker();
    wait_until("broker_connection is DOWN without a broker", || {
        let (status, broker, _) = check(&system, "broker_connection");
        status == 503 && broker == "DOWN"
    });
    system.stop();
}
