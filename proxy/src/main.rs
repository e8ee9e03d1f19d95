//! `plantd-proxy`: runs the HTTP proxy until SIGINT/SIGTERM.

use anyhow::Result;
use clap::Parser;
use plantd_worker_sdk::service::{self, CommonArgs};
use serde::Serialize;

/// plantd HTTP proxy: JSON and SSE onto the broker's services and buses.
#[derive(Parser)]
#[command(name = "plantd-proxy", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    overrides: Overrides,
}

/// Flags that override the environment and the config file.
#[derive(Parser, Serialize)]
struct Overrides {
    /// Broker endpoint [env: PLANTD_PROXY_BROKER_ENDPOINT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_endpoint: Option<String>,
    /// Address of the HTTP API [env: PLANTD_PROXY_HTTP_HOST].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_host: Option<String>,
    /// Port of the HTTP API [env: PLANTD_PROXY_HTTP_PORT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_port: Option<u16>,
}

fn main() -> Result<()> {
    let cli: Cli = service::parse_args(plantd_proxy::SERVICE_NAME);
    service::main(
        plantd_proxy::SERVICE_NAME,
        "plantd-proxy",
        &cli.common,
        &cli.overrides,
        plantd_proxy::run,
    )?;
    Ok(())
}
