//! `plantd`: the all-in-one binary. `plantd up` runs the broker and every bundled service in one
//! process on embedded defaults, each through the same `run(config, shutdown)` its own binary uses.
//!
//! Each service reads its usual configuration (`PLANTD_<SERVICE>_*` environment, `<service>.yaml`),
//! so anything a single service accepts works here too; `--endpoint` and `--data-dir` set the
//! values that must agree across services.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use plantd_worker_sdk::bus::connectable_endpoint;
use plantd_worker_sdk::telemetry::{self, LogFormat};
use plantd_worker_sdk::{config, Shutdown};
use serde::Serialize;
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(
    name = "plantd",
    version,
    about = "plantd: MDP broker and bundled services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker and all bundled services in this process until Ctrl-C.
    Up(UpArgs),
}

#[derive(Parser)]
struct UpArgs {
    /// Broker MDP endpoint to bind; services connect to the same port on 127.0.0.1.
    #[arg(long, env = "PLANTD_UP_ENDPOINT")]
    endpoint: Option<String>,
    /// Directory for the services' databases.
    #[arg(long, env = "PLANTD_UP_DATA_DIR", default_value = "plantd-data")]
    data_dir: PathBuf,
    /// Log level (an EnvFilter directive).
    #[arg(long, env = "PLANTD_UP_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format: text or json.
    #[arg(long, env = "PLANTD_UP_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// No per-service overrides beyond what `plantd up` sets explicitly.
#[derive(Serialize)]
struct NoOverrides {}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => up(args),
    }
}

fn up(args: UpArgs) -> Result<()> {
    telemetry::init("plantd", &args.log_level, args.log_format);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;

    let mut broker: plantd_broker::BrokerConfig = config::load("broker", None, NoOverrides {})?;
    if let Some(endpoint) = args.endpoint {
        broker.endpoint = endpoint;
    }
    let broker_endpoint = connectable_endpoint(&broker.endpoint, &broker.endpoint);
    // Where peers on this host reach a bus, if the broker runs it.
    let bus = |name: &str| {
        broker
            .bus
            .active()
            .iter()
            .find(|b| b.name == name)
            .map(|b| {
                (
                    connectable_endpoint(&b.frontend, &broker_endpoint),
                    connectable_endpoint(&b.backend, &broker_endpoint),
                )
            })
    };

    let mut echo: plantd_module_echo::EchoConfig = config::load("echo", None, NoOverrides {})?;
    echo.broker_endpoint = broker_endpoint.clone();

    let mut state: plantd_state::StateConfig = config::load("state", None, NoOverrides {})?;
    state.broker_endpoint = broker_endpoint.clone();
    if std::env::var_os("PLANTD_STATE_DB").is_none() {
        state.db = args.data_dir.join("plantd-state.db");
    }
    state.bus_endpoint = bus("state").map(|(front, _)| front).unwrap_or_default();
    // Until identity runs inside `plantd up` nothing could issue a token: keep checks off here.
    state.auth = plantd_worker_sdk::auth::AuthConfig::off();

    let mut logger: plantd_logger::LoggerConfig = config::load("logger", None, NoOverrides {})?;
    logger.broker_endpoint = broker_endpoint.clone();
    logger.auth = plantd_worker_sdk::auth::AuthConfig::off();
    if std::env::var_os("PLANTD_LOGGER_DB").is_none() {
        logger.db = args.data_dir.join("plantd-logger.db");
    }
    logger.buses = broker
        .bus
        .active()
        .iter()
        .map(|b| plantd_logger::BusSubscription {
            name: b.name.clone(),
            endpoint: connectable_endpoint(&b.backend, &broker_endpoint),
        })
        .collect();

    // The metric producer needs the metric bus; without it there is nothing for it to do.
    let metric = match bus("metric") {
        Some((frontend, backend)) => {
            let mut metric: plantd_module_metric::MetricModuleConfig =
                config::load("module-metric", None, NoOverrides {})?;
            metric.bus_frontend = frontend;
            metric.bus_backend = backend;
            Some(metric)
        }
        None => None,
    };

    let mut rows = vec![
        (
            "broker",
            format!(
                "MDP {} · health http://127.0.0.1:{}/healthz",
                broker.endpoint, broker.health_port
            ),
        ),
        (
            "echo",
            format!(
                "org.plantd.module.Echo · health http://127.0.0.1:{}/healthz",
                echo.health_port
            ),
        ),
        (
            "state",
            format!(
                "org.plantd.State · {} · health http://127.0.0.1:{}/healthz",
                state.db.display(),
                state.health_port
            ),
        ),
        (
            "logger",
            format!(
                "org.plantd.Logger · {} · health http://127.0.0.1:{}/healthz",
                logger.db.display(),
                logger.health_port
            ),
        ),
    ];
    for b in broker.bus.active() {
        rows.push((
            "bus",
            format!(
                "{} · publish {} · subscribe {}",
                b.name, b.frontend, b.backend
            ),
        ));
    }
    if let Some(metric) = &metric {
        rows.push((
            "metric",
            format!(
                "host readings every {} ms on the metric bus · health http://127.0.0.1:{}/healthz",
                metric.interval_ms, metric.health_port
            ),
        ));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = Shutdown::new();
        let mut services = JoinSet::new();
        services.spawn(named("broker", plantd_broker::run(broker, shutdown.clone())));
        services.spawn(named("echo", plantd_module_echo::run(echo, shutdown.clone())));
        services.spawn(named("state", plantd_state::run(state, shutdown.clone())));
        services.spawn(named("logger", plantd_logger::run(logger, shutdown.clone())));
        if let Some(metric) = metric {
            services.spawn(named("metric", plantd_module_metric::run(metric, shutdown.clone())));
        }

        println!("plantd {} is up:", env!("CARGO_PKG_VERSION"));
        for (name, what) in &rows {
            println!("  {name:<8} {what}");
        }
        println!("Try: plant --endpoint {broker_endpoint} echo hello   (Ctrl-C stops everything)");

        let mut failed = None;
        tokio::select! {
            _ = plantd_worker_sdk::signal::wait_for_shutdown_signal() => tracing::info!("shutting down"),
            Some(done) = services.join_next() => {
                // A service stopping on its own is an error in `up`: take the rest down too.
                failed = Some(done.map_err(anyhow::Error::from).and_then(|r| r));
            }
        }
        shutdown.cancel();
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(done) = services.join_next().await {
                if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r) {
                    tracing::error!("{e:#}");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some services did not stop within 5 s");
        }
        match failed {
            Some(Err(e)) => Err(e),
            Some(Ok(())) => anyhow::bail!("a service stopped unexpectedly"),
            None => Ok(()),
        }
    })
}

/// Runs a service future and labels its error with the service name.
async fn named<E>(
    name: &'static str,
    service: impl std::future::Future<Output = Result<(), E>>,
) -> Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    service.await.with_context(|| format!("{name} failed"))
}
