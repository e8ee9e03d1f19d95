//! `plantd-module-metric`: publishes this host's readings on the metric bus (producer, default)
//! or prints the metrics on the bus as JSON lines (consumer), until SIGINT/SIGTERM.

use anyhow::Result;
use clap::Parser;
use plantd_module_metric::Mode;
use plantd_worker_sdk::service::{self, CommonArgs};
use serde::Serialize;

/// plantd metric module: host readings onto the metric bus, or metric bus onto stdout.
#[derive(Parser)]
#[command(name = "plantd-module-metric", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    overrides: Overrides,
}

/// Flags that override the environment and the config file.
#[derive(Parser, Serialize)]
struct Overrides {
    /// producer or consumer [env: PLANTD_METRIC_MODE].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
    /// Metric bus frontend to publish to [env: PLANTD_METRIC_BUS_FRONTEND].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bus_frontend: Option<String>,
    /// Metric bus backend to subscribe to [env: PLANTD_METRIC_BUS_BACKEND].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bus_backend: Option<String>,
    /// Sampling interval in milliseconds [env: PLANTD_METRIC_INTERVAL_MS].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_ms: Option<u64>,
    /// Source name in topics and metrics, default the host name [env: PLANTD_METRIC_SOURCE].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// Topic prefix the consumer subscribes to [env: PLANTD_METRIC_TOPIC_PREFIX].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_prefix: Option<String>,
}

fn main() -> Result<()> {
    let cli: Cli = service::parse_args(plantd_module_metric::SERVICE_NAME);
    service::main(
        plantd_module_metric::SERVICE_NAME,
        "plantd-module-metric",
        &cli.common,
        &cli.overrides,
        plantd_module_metric::run,
    )?;
    Ok(())
}
