//! `plantd-state`: runs the state service (`org.plantd.State`) until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use plantd_worker_sdk::service::{self, CommonArgs};
use serde::Serialize;

/// plantd state service: scoped key/value store on SQLite.
#[derive(Parser)]
#[command(name = "plantd-state", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    overrides: Overrides,
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
    service::main(
        "state",
        "plantd-state",
        &cli.common,
        &cli.overrides,
        plantd_state::run,
    )?;
    Ok(())
}
