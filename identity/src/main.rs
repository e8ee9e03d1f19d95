//! `plantd-identity`: runs the identity service (`org.plantd.Identity`) until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use plantd_worker_sdk::service::{self, CommonArgs};
use serde::Serialize;

/// plantd identity service: users, organizations, roles, tokens and API keys.
#[derive(Parser)]
#[command(name = "plantd-identity", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    overrides: Overrides,
}

/// Flags that override the environment and the config file.
#[derive(Parser, Serialize)]
struct Overrides {
    /// SQLite database file [env: PLANTD_IDENTITY_DB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    db: Option<PathBuf>,
    /// Broker endpoint [env: PLANTD_IDENTITY_BROKER_ENDPOINT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_endpoint: Option<String>,
    /// Worker sessions (parallel requests) [env: PLANTD_IDENTITY_CONCURRENCY].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    /// Event bus frontend for revocations and audit events; "" disables
    /// [env: PLANTD_IDENTITY_EVENT_ENDPOINT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    event_endpoint: Option<String>,
}

fn main() -> Result<()> {
    let cli: Cli = service::parse_args("identity");
    service::main(
        "identity",
        "plantd-identity",
        &cli.common,
        &cli.overrides,
        plantd_identity::run,
    )?;
    Ok(())
}
