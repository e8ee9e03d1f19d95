//! `plantd-module-metric`: publishes this host's readings on the metric bus (producer, default)
//! or prints the metrics on the bus as JSON lines (consumer), until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use plantd_module_metric::{MetricModuleConfig, Mode};
use plantd_worker_sdk::telemetry::{self, LogFormat};
use plantd_worker_sdk::{config, signal, Shutdown};
use serde::Serialize;

/// plantd metric module: host readings onto the metric bus, or metric bus onto stdout.
#[derive(Parser)]
#[command(name = "plantd-module-metric", version)]
struct Cli {
    /// Config file (default: PLANTD_MODULE_METRIC_CONFIG, then module-metric.yaml in ., ~/.config/plantd, /etc/plantd).
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
    /// producer or consumer [env: PLANTD_MODULE_METRIC_MODE].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
    /// Metric bus frontend to publish to [env: PLANTD_MODULE_METRIC_BUS_FRONTEND].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bus_frontend: Option<String>,
    /// Metric bus backend to subscribe to [env: PLANTD_MODULE_METRIC_BUS_BACKEND].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bus_backend: Option<String>,
    /// Sampling interval in milliseconds [env: PLANTD_MODULE_METRIC_INTERVAL_MS].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_ms: Option<u64>,
    /// Source name in topics and metrics, default the host name [env: PLANTD_MODULE_METRIC_SOURCE].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// Topic prefix the consumer subscribes to [env: PLANTD_MODULE_METRIC_TOPIC_PREFIX].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_prefix: Option<String>,
    /// Port of /healthz and /metrics [env: PLANTD_MODULE_METRIC_HEALTH_PORT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    health_port: Option<u16>,
    /// Log level, an EnvFilter directive [env: PLANTD_MODULE_METRIC_LOG_LEVEL].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Log format: text or json [env: PLANTD_MODULE_METRIC_LOG_FORMAT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let config: MetricModuleConfig =
        config::load("module-metric", cli.config.as_deref(), &cli.overrides)?;
    if cli.print_config {
        config::print(&config);
        return Ok(());
    }
    telemetry::init("plantd-module-metric", &config.log_level, config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        signal::cancel_on_signal(shutdown.clone());
        plantd_module_metric::run(config, shutdown).await
    })?;
    Ok(())
}
