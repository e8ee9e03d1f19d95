//! `plantd-module-echo`: runs the echo worker (`org.plantd.module.Echo`) until SIGINT/SIGTERM.

use anyhow::Result;
use clap::Parser;
use plantd_worker_sdk::service::{self, CommonArgs};
use serde::Serialize;

/// plantd echo module: replies to every request with its own frames.
#[derive(Parser)]
#[command(name = "plantd-module-echo", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    overrides: Overrides,
}

/// Flags that override the environment and the config file.
#[derive(Parser, Serialize)]
struct Overrides {
    /// Broker endpoint [env: PLANTD_ECHO_BROKER_ENDPOINT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_endpoint: Option<String>,
    /// Worker sessions (parallel requests) [env: PLANTD_ECHO_CONCURRENCY].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    /// Requests each session may hold at once (credit extension) [env: PLANTD_ECHO_CREDIT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    credit: Option<u32>,
}

fn main() -> Result<()> {
    let cli: Cli = service::parse_args("echo");
    service::main(
        "echo",
        "plantd-module-echo",
        &cli.common,
        &cli.overrides,
        plantd_module_echo::run,
    )?;
    Ok(())
}
