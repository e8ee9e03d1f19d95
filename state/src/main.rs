//! `plantd-state`: runs the state service (`org.plantd.State`) until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use plantd_state::StateConfig;
use plantd_worker_sdk::telemetry::{self, LogFormat};
use plantd_worker_sdk::{config, signal, Shutdown};
use serde::Serialize;

/// plantd state service: scoped key/value store on SQLite.
#[derive(Parser)]
#[command(name = "plantd-state", version)]
struct Cli {
    /// Config file (default: PLANTD_STATE_CONFIG, then state.yaml in ., ~/.config/plantd, /etc/plantd).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,
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
    /// Port of /healthz and /metrics [env: PLANTD_STATE_HEALTH_PORT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    health_port: Option<u16>,
    /// Worker sessions (parallel requests) [env: PLANTD_STATE_CONCURRENCY].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    /// State bus frontend for change notifications; "" disables [env: PLANTD_STATE_BUS_ENDPOINT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bus_endpoint: Option<String>,
    /// Log level, an EnvFilter directive [env: PLANTD_STATE_LOG_LEVEL].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Log format: text or json [env: PLANTD_STATE_LOG_FORMAT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let config: StateConfig = config::load("state", cli.config.as_deref(), &cli.overrides)?;
    if cli.print_config {
        config::print(&config);
        return Ok(());
    }
    telemetry::init("plantd-state", &config.log_level, config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        signal::cancel_on_signal(shutdown.clone());
        plantd_state::run(config, shutdown).await
    })?;
    Ok(())
}
