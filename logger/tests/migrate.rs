//! `plantd-logger migrate-to-postgres`: a SQLite logger file copied into PostgreSQL with the real
//! binary answers the same queries; a non-empty target is refused unless `--replace`. Skipped
//! with a message where PostgreSQL is not installed, unless `PLANTD_REQUIRE_POSTGRES` is set.

mod common;

use std::process::{Command, Output};

use common::{Backend, System};
use plantd_logger::store::{self, EventRow, MetricRow, Record};
use serde_json::{json, Value};

fn migrate(from: &std::path::Path, dsn: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plantd-logger"))
        .arg("migrate-to-postgres")
        .arg("--from")
        .arg(from)
        .args(["--dsn", dsn])
        .args(extra)
        .env_remove("PLANTD_LOGGER_POSTGRES__DSN")
        .output()
        .expect("run plantd-logger migrate-to-postgres")
}

#[test]
fn a_sqlite_logger_file_copied_to_postgres_answers_the_same_queries() {
    let Some(dsn) = plantd_pg_util::testing::fresh_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("logger.db");
    let mut conn = store::open_for_writing(&source).unwrap();
    let t0 = 1_700_000_000_000_000i64;
    let mut records: Vec<Record> = (0..10)
        .map(|i| {
            Record::Metric(MetricRow {
                time_us: t0 + i * 1_000_000,
                bus: "metric".into(),
                topic: "org.plantd.metric.host.cpu".into(),
                source: "host".into(),
                channel: "cpu".into(),
                value: Some(i as f64),
                units: "%".into(),
                tags_json: r#"{"core":"0"}"#.into(),
            })
        })
        .collect();
    records.push(Record::Event(EventRow {
        time_us: t0,
        bus: "event".into(),
        topic: "org.plantd.event.x".into(),
        encoding: "json",
        payload_json: r#"{"n":1}"#.into(),
        malformed: false,
    }));
    store::writer::insert_batch(&mut conn, &records).unwrap();
    drop(conn);

    let out = migrate(&source, &dsn, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        copied,
        json!({"metrics": 10, "events": 1, "replaced_rows": 0})
    );
    let again = migrate(&source, &dsn, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--replace"));
    let replaced = migrate(&source, &dsn, &["--replace"]);
    assert!(
        replaced.status.success(),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    let copied: Value = serde_json::from_slice(&replaced.stdout).unwrap();
    assert_eq!(copied["replaced_rows"], json!(11));

    // The same queries against the source (SQLite) and the copy (PostgreSQL) answer alike.
    let queries = [
        (
            "metrics-query",
            json!({"topic_prefix": "org.plantd.metric.", "limit": 3}),
        ),
        (
            "metrics-summary",
            json!({"topic_prefix": "org.plantd.metric.host", "since": "2023-11-14T22:13:20Z", "until": "2023-11-14T22:13:30Z", "bucket": "5s"}),
        ),
        ("events-query", json!({})),
    ];
    let answers = |system: &System| -> Vec<Value> {
        queries
            .iter()
            .map(|(op, params)| system.data(op, params.clone()))
            .collect()
    };
    let sqlite = System::start(|c| {
        c.db = source.clone();
        c.retention_max_age_secs = 0;
    });
    let on_sqlite = answers(&sqlite);
    sqlite.stop();
    let postgres = System::start(|c| {
        c.store = Backend::Postgres;
        c.postgres = plantd_pg_util::PostgresConfig::with_dsn(dsn.clone());
        c.retention_max_age_secs = 0;
    });
    let on_postgres = answers(&postgres);
    postgres.stop();
    assert_eq!(on_sqlite, on_postgres);
    assert_eq!(on_postgres[0]["count"], json!(3));
    assert_eq!(on_postgres[0]["metrics"][0]["tags"], json!({"core": "0"}));
    assert_eq!(on_postgres[1]["series"][0]["buckets"][0]["count"], json!(5));
    assert_eq!(on_postgres[2]["events"][0]["payload"], json!({"n": 1}));
}
