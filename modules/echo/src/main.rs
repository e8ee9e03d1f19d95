//! `plantd-module-echo`: runs the echo worker (`org.plantd.module.Echo`) until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use plantd_module_echo::EchoConfig;
use plantd_worker_sdk::telemetry::{self, LogFormat};
use plantd_worker_sdk::{config, signal, Shutdown};
use serde::Serialize;

/// plantd echo module: replies to every request with its own frames.
#[derive(Parser)]
#[command(name = "plantd-module-echo", version)]
struct Cli {
    /// Config file (default: PLANTD_ECHO_CONFIG, then echo.yaml in ., ~/.config/plantd, /etc/plantd).
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
    let config: EchoConfig = config::load("echo", cli.config.as_deref(), &cli.overrides)?;
    if cli.print_config {
        config::print(&config);
        return Ok(());
    }
    telemetry::init("plantd-module-echo", &config.log_level, config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        signal::cancel_on_signal(shutdown.clone());
        plantd_module_echo::run(config, shutdown).await
    })?;
    Ok(())
}
