//! Logger ingest benchmark (issue target: at least 100,000 metrics/s into SQLite).
//!
//! Two measurements, both on a real SQLite file in a temporary directory:
//! - `writer`: the storage write path alone. Metric rows go through the same bounded channel into
//!   the logger's writer thread ([`plantd_logger::store::spawn_writer`], default batch size and
//!   flush interval), which commits them in batches; the clock stops when the writer has
//!   committed the last row and exited.
//! - `end-to-end`: an SDK publisher → a real broker bus → the logger's own `run` (subscriber,
//!   decoding, classification, writer) → rows counted in SQLite. The clock starts at the first
//!   published metric and stops when the last row is visible to a separate reader connection.
//!
//! With `--postgres-dsn DSN` (or `PLANTD_BENCH_POSTGRES_DSN`) the writer measurement also runs
//! against that PostgreSQL database (`store: postgres`, binary `COPY`; target 50,000 metrics/s):
//! use a scratch database, the rows stay there.
//!
//! `cargo bench -p plantd-logger --bench ingest` measures (1,000,000 rows for the writer,
//! 200,000 metrics end to end; `--metrics N` and `--e2e-metrics N` change that). Without
//! `--bench`, which is how `cargo test --all-targets` runs it, it does a quick smoke run of about
//! a second that checks every row arrived but times nothing.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use plantd_broker::bus::{BusConfig, BusSettings};
use plantd_broker::BrokerConfig;
use plantd_logger::metrics::LoggerMetrics;
use plantd_logger::store::{self, MetricRow, Record, WriterSettings};
use plantd_logger::{BusSubscription, LoggerConfig};
use plantd_worker_sdk::bus::{Metric, Publisher};
use plantd_worker_sdk::health::Health;
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use plantd_worker_sdk::Shutdown;
use rusqlite::{Connection, OpenFlags};

/// The target.
const TARGET_PER_SEC: f64 = 100_000.0;
/// Issue 17's target for PostgreSQL.
const POSTGRES_TARGET_PER_SEC: f64 = 50_000.0;
/// Rows in the smoke run of each part.
const SMOKE_METRICS: u64 = 20_000;
/// How long the end-to-end part may go without a new row before it counts the rest as lost.
const STALL: Duration = Duration::from_secs(10);
/// How long the logger may take to start hearing the bus.
const STARTUP: Duration = Duration::from_secs(20);

#[derive(Parser, Debug)]
#[command(about = "Logger ingest benchmark")]
struct Args {
    /// Measure (what `cargo bench` passes); without it, a quick untimed smoke run.
    #[arg(long)]
    bench: bool,
    /// Rows for the writer measurement.
    #[arg(long)]
    metrics: Option<u64>,
    /// Metrics for the end-to-end measurement.
    #[arg(long)]
    e2e_metrics: Option<u64>,
    /// Also measure the writer into this PostgreSQL database (a scratch one).
    #[arg(long, env = "PLANTD_BENCH_POSTGRES_DSN", hide_env_values = true)]
    postgres_dsn: Option<String>,
    /// Filters cargo may pass along; ignored.
    #[arg(hide = true)]
    _filter: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let (writer_n, e2e_n) = if args.bench {
        (
            args.metrics.unwrap_or(1_000_000),
            args.e2e_metrics.unwrap_or(200_000),
        )
    } else {
        (
            args.metrics.unwrap_or(SMOKE_METRICS),
            args.e2e_metrics.unwrap_or(SMOKE_METRICS),
        )
    };
    let writer = bench_writer(writer_n, None)?;
    report(args.bench, "writer", writer_n, writer, TARGET_PER_SEC);
    if let Some(dsn) = &args.postgres_dsn {
        let writer = bench_writer(writer_n, Some(dsn))?;
        report(
            args.bench,
            "writer (postgres)",
            writer_n,
            writer,
            POSTGRES_TARGET_PER_SEC,
        );
    }
    let e2e = bench_end_to_end(e2e_n)?;
    report(args.bench, "end-to-end", e2e_n, e2e, TARGET_PER_SEC);
    Ok(())
}

fn report(timed: bool, label: &str, n: u64, elapsed: Duration, target: f64) {
    if !timed {
        println!("{label}: {n} metrics stored (smoke run, not timed)");
        return;
    }
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "{label}: {n} metrics in {:.3} s = {rate:.0} metrics/s (target {target:.0}/s: {})",
        elapsed.as_secs_f64(),
        if rate >= target { "met" } else { "NOT met" }
    );
}

/// A metric row as the ingest side would build it from `org.plantd.metric.<host>.<channel>`.
fn row(i: u64, now_us: i64) -> Record {
    let host = i % 16;
    let channel = i % 32;
    Record::Metric(MetricRow {
        time_us: now_us + i as i64,
        bus: "metric".into(),
        topic: format!("org.plantd.metric.bench-{host}.channel.{channel}"),
        source: format!("bench-{host}"),
        channel: format!("channel.{channel}"),
        value: Some(i as f64 * 0.5),
        units: "units".into(),
        tags_json: "{}".into(),
    })
}

/// The writer thread alone: `n` rows through its channel, until it has committed them all; into
/// a SQLite file, or the PostgreSQL database of `postgres` if given.
fn bench_writer(n: u64, postgres: Option<&str>) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("writer.db");
    let (sink, pg) = match postgres {
        None => (store::Sink::Sqlite(store::open_for_writing(&path)?), None),
        Some(dsn) => {
            let pg =
                store::postgres::PgLogStore::open(&plantd_pg_util::PostgresConfig::with_dsn(dsn))?;
            (store::Sink::Postgres(pg.clone()), Some(pg))
        }
    };
    let before = match &pg {
        Some(pg) => pg_rows(pg)?,
        None => 0,
    };
    let config = LoggerConfig::default();
    let health = Health::new("bench");
    let database = plantd_sqlite_util::DatabaseCheck::new(health.check("database"));
    // The same bounded channel `plantd_logger::run` sets up.
    let (tx, rx) =
        std::sync::mpsc::sync_channel(config.batch_size.saturating_mul(8).clamp(1024, 200_000));
    // Rows are built before the clock starts: this measures storage, not string formatting.
    let now_us = chrono::Utc::now().timestamp_micros();
    let rows: Vec<Record> = (0..n).map(|i| row(i, now_us)).collect();
    let started = Instant::now();
    let writer = store::spawn_writer(
        sink,
        rx,
        WriterSettings {
            batch_size: config.batch_size,
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            retention: config.retention(),
        },
        LoggerMetrics::new(),
        database.clone(),
    )?;
    for record in rows {
        tx.send(record).context("the writer stopped early")?;
    }
    drop(tx);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    let elapsed = started.elapsed();
    if !database.is_up() {
        bail!("the writer reported the database down");
    }
    let stored = match &pg {
        Some(pg) => pg_rows(pg)? - before,
        None => count_rows(&path)?,
    };
    if stored != n {
        bail!("the writer stored {stored} of {n} rows");
    }
    Ok(elapsed)
}

fn pg_rows(pg: &store::postgres::PgLogStore) -> Result<u64> {
    let stats = pg.stats()?;
    stats["metrics"]["rows"]
        .as_u64()
        .context("stats without a metric row count")
}

fn count_rows(path: &Path) -> Result<u64> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row("SELECT count(*) FROM metrics", [], |r| r.get(0))?)
}

/// Highest row id so far: with no deletes, the number of rows, found without a table scan.
fn max_id(conn: &Connection) -> Result<u64> {
    let id: Option<u64> = conn.query_row("SELECT max(id) FROM metrics", [], |r| r.get(0))?;
    Ok(id.unwrap_or(0))
}

/// Publisher → broker bus → logger `run` → SQLite, for `n` metrics.
fn bench_end_to_end(n: u64) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("logger.db");
    let bus = BusConfig {
        name: "metric".into(),
        frontend: free_endpoint(),
        backend: free_endpoint(),
        capture: None,
    };
    let broker = BrokerConfig {
        endpoint: free_endpoint(),
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        bus: BusSettings {
            buses: vec![bus.clone()],
            ..BusSettings::default()
        },
        ..BrokerConfig::default()
    };
    let logger = LoggerConfig {
        broker_endpoint: broker.endpoint.clone(),
        db: db.clone(),
        buses: vec![BusSubscription {
            name: "metric".into(),
            endpoint: bus.backend.clone(),
        }],
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        auth: plantd_worker_sdk::auth::AuthConfig::off(),
        ..LoggerConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let shutdown = Shutdown::new();
    let broker_task = runtime.spawn(plantd_broker::run(broker, shutdown.clone()));
    let logger_task = runtime.spawn(plantd_logger::run(logger, shutdown.clone()));
    let result = (|| {
        let publisher = Publisher::connect(&bus.frontend)?;
        // PUB/SUB's slow joiner: probe until the logger stores something, then measure.
        let reader = wait_for_first_row(&db, &publisher, || {
            broker_task.is_finished() || logger_task.is_finished()
        })?;
        // Probes still in flight land within a flush interval or two; start once they have.
        let baseline = settled_max_id(&reader)?;
        let metrics: Vec<Metric> = (0..n)
            .map(|i| {
                Metric::new(
                    format!("bench-{}", i % 16),
                    format!("channel.{}", i % 32),
                    i as f64,
                )
            })
            .collect();
        let started = Instant::now();
        for metric in &metrics {
            publisher.publish_metric(metric)?;
        }
        let target = baseline + n;
        let (mut last, mut last_change) = (baseline, Instant::now());
        loop {
            let now = max_id(&reader)?;
            if now >= target {
                return Ok(started.elapsed());
            }
            if now != last {
                (last, last_change) = (now, Instant::now());
            } else if last_change.elapsed() > STALL {
                bail!(
                    "only {} of {n} metrics were stored ({} lost)",
                    now - baseline,
                    target - now
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })();
    shutdown.cancel();
    let stopped = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            (broker_task.await, logger_task.await)
        })
        .await
    });
    let elapsed = result?;
    match stopped {
        Ok((Ok(Ok(())), Ok(Ok(())))) => Ok(elapsed),
        Ok((broker, logger)) => bail!("unclean stop: broker {broker:?}, logger {logger:?}"),
        Err(_) => bail!("the broker and logger did not stop within 10 s"),
    }
}

/// The row count once it has stopped changing for a while (no probe left in flight).
fn settled_max_id(conn: &Connection) -> Result<u64> {
    let quiet = Duration::from_millis(LoggerConfig::default().flush_interval_ms * 3);
    let (mut last, mut since) = (max_id(conn)?, Instant::now());
    while since.elapsed() < quiet {
        std::thread::sleep(Duration::from_millis(20));
        let now = max_id(conn)?;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    Ok(last)
}

/// Publishes probe metrics until the logger has stored one; returns a reader of its database.
fn wait_for_first_row(
    db: &Path,
    publisher: &Publisher,
    failed: impl Fn() -> bool,
) -> Result<Connection> {
    let end = Instant::now() + STARTUP;
    let probe = Metric::new("probe", "probe", 1.0);
    let mut reader: Option<Connection> = None;
    loop {
        if failed() {
            bail!("the broker or the logger stopped during startup (is a port taken?)");
        }
        if Instant::now() > end {
            bail!("the logger stored nothing within {} s", STARTUP.as_secs());
        }
        publisher.publish_metric(&probe)?;
        // The logger creates the file; open it once it exists.
        if reader.is_none() && db.exists() {
            reader = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).ok();
        }
        if let Some(conn) = &reader {
            if max_id(conn).unwrap_or(0) > 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reader.context("no reader")
}
