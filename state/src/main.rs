//! `plantd-state`: runs the state service (`org.plantd.State`) until SIGINT/SIGTERM, or copies a
//! SQLite store into PostgreSQL (`plantd-state migrate-to-postgres`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use plantd_worker_sdk::service::{self, CommonArgs};
use serde::Serialize;

/// plantd state service: scoped key/value store on SQLite or PostgreSQL.
#[derive(Parser)]
#[command(name = "plantd-state", version)]
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
    /// Copies every scope and key of a SQLite state file into a PostgreSQL database, in one
    /// transaction. Stop the service on the file first.
    MigrateToPostgres {
        /// The SQLite state file to copy.
        #[arg(long)]
        from: PathBuf,
        /// Target DSN (URL or key=value) [env: PLANTD_STATE_POSTGRES__DSN].
        #[arg(long, env = "PLANTD_STATE_POSTGRES__DSN", hide_env_values = true)]
        dsn: String,
        /// File holding the target's password (mode 0600) [env: PLANTD_STATE_POSTGRES__PASSWORD_FILE].
        #[arg(long, env = "PLANTD_STATE_POSTGRES__PASSWORD_FILE")]
        password_file: Option<PathBuf>,
        /// CA certificates (PEM) the target's TLS certificate must chain to; default: the
        /// system's roots [env: PLANTD_STATE_POSTGRES__TLS_ROOT_CERT].
        #[arg(long, env = "PLANTD_STATE_POSTGRES__TLS_ROOT_CERT")]
        tls_root_cert: Option<PathBuf>,
        /// Empty a target that already holds scopes instead of refusing it.
        #[arg(long)]
        replace: bool,
    },
}

/// Flags that override the environment and the config file.
#[derive(Parser, Serialize)]
struct Overrides {
    /// SQLite database file [env: PLANTD_STATE_DB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    db: Option<PathBuf>,
    /// Broker endpoint [env: PLANTD_STATE_BROKER_ENDPOINT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_endpoint: Option<String>,
    /// Worker sessions (parallel requests) [env: PLANTD_STATE_CONCURRENCY].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    /// Requests each session may hold at once (credit extension) [env: PLANTD_STATE_CREDIT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    credit: Option<u32>,
    /// State bus frontend for change notifications; "" disables [env: PLANTD_STATE_BUS_ENDPOINT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bus_endpoint: Option<String>,
}

fn main() -> Result<()> {
    let cli: Cli = service::parse_args("state");
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
            .block_on(plantd_state::migrate::migrate_to_postgres(
                &from, &target, replace,
            ))
            .with_context(|| {
                format!("migrating {} to {}", from.display(), target.redacted_dsn())
            })?;
        println!("{}", serde_json::to_string(&copied)?);
        return Ok(());
    }
    service::main(
        "state",
        "plantd-state",
        &cli.common,
        &cli.overrides,
        plantd_state::run,
    )?;
    Ok(())
}
