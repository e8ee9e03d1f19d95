//! `plantd-bridge-nats`: bridges the buses to NATS until SIGINT/SIGTERM.

use anyhow::Result;
use clap::Parser;
use plantd_worker_sdk::service::{self, CommonArgs};
use serde::Serialize;

/// plantd bus bridge: bus topics onto NATS subjects and NATS subjects onto buses.
#[derive(Parser)]
#[command(name = "plantd-bridge-nats", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    overrides: Overrides,
}

/// Flags that override the environment and the config file. (Credentials have no flags: a
/// command line is visible to every user of the host.)
#[derive(Parser, Serialize)]
struct Overrides {
    /// This bridge's origin id [env: PLANTD_BRIDGE_NATS_BRIDGE_ID].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bridge_id: Option<String>,
}

fn main() -> Result<()> {
    let cli: Cli = service::parse_args(plantd_bridge_nats::SERVICE_NAME);
    service::main(
        plantd_bridge_nats::SERVICE_NAME,
        "plantd-bridge-nats",
        &cli.common,
        &cli.overrides,
        plantd_bridge_nats::run,
    )?;
    Ok(())
}
