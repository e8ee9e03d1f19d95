//! `plantd-logger`: runs the logger service (`org.plantd.Logger`) until SIGINT/SIGTERM, or copies a
//! SQLite logger file into PostgreSQL (`plantd-logger migrate-to-postgres`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use plantd_worker_sdk::service::{self, CommonArgs};
use serde::Serialize;

/// plantd logger: stores bus metrics and events in SQLite or PostgreSQL and answers queries about
/// them.
#[derive(Parser)]
#[command(name = "plantd-logger", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Copies every metric and event row of a SQLite logger file into a PostgreSQL database, in
    /// one transaction. Stop the logger on the file first.
    MigrateToPostgres {
        /// The SQLite logger file to copy.
        #[arg(long)]
        from: PathBuf,
        /// Target DSN (URL or key=value) [env: PLANTD_LOGGER_POSTGRES__DSN].
        #[arg(long, env = "PLANTD_LOGGER_POSTGRES__DSN", hide_env_values = true)]
        dsn: String,
        /// File holding the target's password (mode 0600) [env: PLANTD_LOGGER_POSTGRES__PASSWORD_FILE].
        #[arg(long, env = "PLANTD_LOGGER_POSTGRES__PASSWORD_FILE")]
        password_file: Option<PathBuf>,
        /// CA certificates (PEM) the target's TLS certificate must chain to; default: the
        /// system's roots [env: PLANTD_LOGGER_POSTGRES__TLS_ROOT_CERT].
        #[arg(long, env = "PLANTD_LOGGER_POSTGRES__TLS_ROOT_CERT")]
        tls_root_cert: Option<PathBuf>,
        /// Empty a target that already holds rows instead of refusing it.
        #[arg(long)]
        replace: bool,
    },
}

/// Flags that override the environment and the config file.
#[derive(Parser, Serialize)]
struct Overrides {
    /// SQLite database file [env: PLANTD_LOGGER_DB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    db: Option<PathBuf>,
    /// Broker endpoint [env: PLANTD_LOGGER_BROKER_ENDPOINT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_endpoint: Option<String>,
    /// Topic prefix to store, on every bus ("" = all) [env: PLANTD_LOGGER_TOPIC_PREFIX].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_prefix: Option<String>,
    /// Delete rows older than this many seconds, 0 = never [env: PLANTD_LOGGER_RETENTION_MAX_AGE_SECS].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_max_age_secs: Option<u64>,
    /// Keep at most this many rows per table, 0 = no limit [env: PLANTD_LOGGER_RETENTION_MAX_ROWS].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_max_rows: Option<u64>,
}

fn main() -> Result<()> {
    let cli: Cli = service::parse_args("logger");
    if let Some(Command::MigrateToPostgres {
        from,
        dsn,
        password_file,
        tls_root_cert,
        replace,
    }) = cli.command
    {
        let target = plantd_pg_util::PostgresConfig {
            password_file,
            tls_root_cert,
            ..plantd_pg_util::PostgresConfig::with_dsn(dsn)
        };
        let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
        let copied = runtime
            .block_on(plantd_logger::migrate::migrate_to_postgres(
                &from, &target, replace,
            ))
            .with_context(|| {
                format!("migrating {} to {}", from.display(), target.redacted_dsn())
            })?;
        println!("{}", serde_json::to_string(&copied)?);
        return Ok(());
    }
    service::main(
        "logger",
        "plantd-logger",
        &cli.common,
        &cli.overrides,
        plantd_logger::run,
    )?;
    Ok(())
}
