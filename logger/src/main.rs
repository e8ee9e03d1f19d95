//! `plantd-logger`: runs the logger service (`org.plantd.Logger`) until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use plantd_worker_sdk::service::{self, CommonArgs};
use serde::Serialize;

/// plantd logger: stores bus metrics and events in SQLite and answers queries about them.
#[derive(Parser)]
#[command(name = "plantd-logger", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    overrides: Overrides,
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
    service::main(
        "logger",
        "plantd-logger",
        &cli.common,
        &cli.overrides,
        plantd_logger::run,
    )?;
    Ok(())
}
