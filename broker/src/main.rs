//! `plantd-broker`: runs the MDP broker until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use plantd_broker::BrokerConfig;
use plantd_worker_sdk::telemetry::{self, LogFormat};
use plantd_worker_sdk::{config, signal, Shutdown};
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
    /// YAML configuration file (optional) [env PLANTD_BROKER_CONFIG].
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    #[serde(skip)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: BrokerConfig = config::load("broker", cli.config.as_deref(), &cli)
        .context("cannot load the broker configuration")?;
    if cli.print_config {
        config::print(&config);
        return Ok(());
    }
    telemetry::init("broker", &config.log_level, config.log_format);

    let shutdown = Shutdown::new();
    signal::cancel_on_signal(shutdown.clone());
    plantd_broker::run(config, shutdown)
        .await
        .context("broker failed")?;
    Ok(())
}
