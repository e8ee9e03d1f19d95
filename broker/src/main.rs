//! `plantd-broker`: runs the MDP broker until SIGINT or SIGTERM.

use clap::Parser;
use plantd_worker_sdk::service::{self, CommonArgs};
use plantd_worker_sdk::telemetry::LogFormat;
use serde::Serialize;

/// The plantd MDP broker (MDP/0.2, MDP/0.1 and the Go plantd dialect on one socket).
#[derive(Parser, Serialize)]
#[command(name = "plantd-broker", version)]
struct Cli {
    /// ZeroMQ endpoint to bind [default: tcp://*:9797; env PLANTD_BROKER_ENDPOINT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    /// Port of /healthz and /metrics [default: 8081; env PLANTD_BROKER_HEALTH_PORT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    health_port: Option<u16>,
    /// Log filter, e.g. `info` or `plantd_broker=debug` [env PLANTD_BROKER_LOG_LEVEL].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Log format: text or json [env PLANTD_BROKER_LOG_FORMAT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
    #[command(flatten)]
    #[serde(skip)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    service::main(
        "broker",
        "plantd-broker",
        &cli.common,
        &cli,
        plantd_broker::run,
    )?;
    Ok(())
}
