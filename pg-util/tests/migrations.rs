//! Migrations against a real (private) PostgreSQL: applied once each, recorded, racing migrators
//! take turns, a newer database is refused; a bad DSN is a clear error. Skipped with a message
//! where PostgreSQL is not installed, unless `PLANTD_REQUIRE_POSTGRES` is set.

use plantd_pg_util::migrations::{current_version, migrate, MigrationError};
use plantd_pg_util::{PgError, PostgresConfig};

const STEPS: &[&str] = &[
    "CREATE TABLE a (x INTEGER);",
    "CREATE TABLE b (y INTEGER); INSERT INTO a VALUES (1);",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_are_applied_once_and_racing_migrators_take_turns() {
    let Some(dsn) = plantd_pg_util::testing::fresh_database() else {
        return;
    };
    let config = PostgresConfig::with_dsn(dsn);
    let pool = config.pool().unwrap();
    let mut client = config.connect(&pool).await.unwrap();
    assert_eq!(current_version(&client, "t_migrations").await.unwrap(), 0);
    assert_eq!(
        migrate(&mut client, "t_migrations", &STEPS[..1])
            .await
            .unwrap(),
        1
    );
    // Eight migrators at once: step 2 runs exactly once (a second run would insert a second row).
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, config) = (pool.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = config.connect(&pool).await.unwrap();
            migrate(&mut client, "t_migrations", STEPS).await.unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 2);
    }
    let rows: i64 = client
        .query_one("SELECT count(*) FROM a", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
    assert!(matches!(
        migrate(&mut client, "t_migrations", &STEPS[..1]).await,
        Err(MigrationError::TooNew {
            found: 2,
            supported: 1
        })
    ));
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error_without_the_password() {
    let config = PostgresConfig {
        connect_timeout_secs: 2,
        ..PostgresConfig::with_dsn(format!("postgres://u:sekrit@127.0.0.1:{}/x", unused_port()))
    };
    let pool = config.pool().unwrap();
    let err = config.connect(&pool).await.unwrap_err();
    assert!(matches!(err, PgError::Connect { .. }), "{err}");
    let shown = err.to_string();
    assert!(
        !shown.contains("sekrit") && shown.contains("u:***@127.0.0.1"),
        "{shown}"
    );
    assert!(matches!(
        PostgresConfig::with_dsn("host=x port=notaport").pg_config(),
        Err(PgError::InvalidDsn(_))
    ));
}

/// A loopback port nobody listens on (bound, then released).
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
