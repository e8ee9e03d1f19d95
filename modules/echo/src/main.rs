//! `plantd-module-echo`: runs the echo worker (`org.plantd.module.Echo`) until SIGINT/SIGTERM.

use anyhow::Result;
use clap::Parser;
use plantd_worker_sdk::service::{self, CommonArgs};
use plantd_worker_sdk::telemetry::LogFormat;
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
    /// Port of /healthz and /metrics [env: PLANTD_ECHO_HEALTH_PORT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    health_port: Option<u16>,
    /// Worker sessions (parallel requests) [env: PLANTD_ECHO_CONCURRENCY].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    /// Requests each session may hold at once (credit extension) [env: PLANTD_ECHO_CREDIT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    credit: Option<u32>,
    /// Log level, an EnvFilter directive [env: PLANTD_ECHO_LOG_LEVEL].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Log format: text or json [env: PLANTD_ECHO_LOG_FORMAT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    service::main(
        "echo",
        "plantd-module-echo",
        &cli.common,
        &cli.overrides,
        plantd_module_echo::run,
    )?;
    Ok(())
}
