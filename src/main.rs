//! `plantd`: the all-in-one binary. `plantd up` runs the broker and every bundled service in one
//! process on embedded defaults, each through the same `run(config, shutdown)` its own binary uses.
//!
//! Each service reads its usual configuration (`PLANTD_<SERVICE>_*` environment, `<service>.yaml`),
//! so anything a single service accepts works here too; `--endpoint` and `--data-dir` set the
//! values that must agree across services, and `--port-offset` moves every port at once so a
//! second system can run beside the first ([`ports`]).
//!
//! `up --only state,echo` / `--except logger` runs some of the services ([`select`]).
//!
//! `up --secure` runs everything on CURVE, with keys made on the first run ([`secure`]).
//!
//! `up` checks that every port is free before starting anything, and says it is up only once
//! every service's `/healthz` answers UP ([`ready`]); a service that fails on the way stops the
//! others and the process exits non-zero with that service's error.

mod login;
mod ports;
mod ready;
mod secure;
mod select;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use plantd_worker_sdk::bus::connectable_endpoint;
use plantd_worker_sdk::telemetry::{self, LogFormat};
use plantd_worker_sdk::{config, service, Shutdown};
use serde::Serialize;
use tokio::task::JoinSet;

use ports::{shift_endpoint, shift_port, Binding};

/// The broker endpoint `plant` uses when given none; the banner adds `--endpoint` otherwise.
const CLIENT_DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:9797";
/// How long the services have to come up before `up` gives up on them.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long the services have to stop after Ctrl-C or a failure.
const STOP_WITHIN: Duration = Duration::from_secs(5);

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
    #[command(after_help = UP_AFTER_HELP)]
    Up(UpArgs),
}

/// The ports and their variables, for `plantd up --help`.
const UP_AFTER_HELP: &str = "\
Every service also reads its own settings (PLANTD_BROKER_*, PLANTD_ECHO_*, PLANTD_STATE_*,
PLANTD_LOGGER_*, PLANTD_METRIC_*, PLANTD_PROXY_*; for example PLANTD_STATE_HEALTH_PORT).
`plantd up --print-ports` lists every port, what listens there and the variable that sets it;
`--port-offset N` moves them all, so a second system can run beside the first.";

#[derive(Parser)]
struct UpArgs {
    /// Broker MDP endpoint to bind; services connect to the same port on 127.0.0.1.
    #[arg(long, env = "PLANTD_UP_ENDPOINT")]
    endpoint: Option<String>,
    /// Add this to every port plantd up binds: the MDP endpoint, the buses' frontends and
    /// backends, and every health port, wherever each was set (default, environment, file or
    /// --endpoint).
    #[arg(long, env = "PLANTD_UP_PORT_OFFSET", default_value_t = 0)]
    port_offset: u16,
    /// Print every port plantd up would bind (after --port-offset), what listens there and the
    /// variable that sets it, then exit.
    #[arg(long)]
    print_ports: bool,
    /// Directory for the services' databases.
    #[arg(long, env = "PLANTD_UP_DATA_DIR", default_value = "plantd-data")]
    data_dir: PathBuf,
    /// Log level (an EnvFilter directive).
    #[arg(long, env = "PLANTD_UP_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format: text or json.
    #[arg(long, env = "PLANTD_UP_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Run everything on CURVE: keys and the broker's allow list in <data-dir>/keys (made on the
    /// first run), the CLI's settings for the endpoint in $XDG_CONFIG_HOME/plantd/curve.json.
    #[arg(long, env = "PLANTD_UP_SECURE")]
    secure: bool,
    #[command(flatten)]
    select: select::SelectArgs,
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

/// Every service's configuration, as `up` runs them.
struct System {
    broker: plantd_broker::BrokerConfig,
    /// Where the services (and `plant`) on this host reach the broker.
    broker_endpoint: String,
    echo: plantd_module_echo::EchoConfig,
    state: plantd_state::StateConfig,
    identity: plantd_identity::IdentityConfig,
    logger: plantd_logger::LoggerConfig,
    proxy: plantd_proxy::ProxyConfig,
    /// `None` when the broker runs no metric bus: then the producer has nothing to do.
    metric: Option<plantd_module_metric::MetricModuleConfig>,
    /// Uses of deprecated configuration names, to log once logging is up.
    warnings: Vec<String>,
    /// The services that run (`--only`, `--except`); every one is configured regardless, so a
    /// bad setting is reported even for a service left out this time.
    selection: select::Selection,
}

impl System {
    /// Loads every service's configuration and applies `up`'s flags to it.
    fn configure(args: &UpArgs) -> Result<System> {
        let offset = args.port_offset;
        let mut broker: plantd_broker::BrokerConfig = config::load("broker", None, NoOverrides {})?;
        if let Some(endpoint) = &args.endpoint {
            broker.endpoint = endpoint.clone();
        }
        broker.endpoint = shift_endpoint(&broker.endpoint, offset, "the broker MDP endpoint")?;
        broker.health_port = shift_port(broker.health_port, offset, "the broker health port")?;
        for bus in &mut broker.bus.buses {
            let what = format!("bus {}", bus.name);
            bus.frontend = shift_endpoint(&bus.frontend, offset, &what)?;
            bus.backend = shift_endpoint(&bus.backend, offset, &what)?;
            if let Some(capture) = &mut bus.capture {
                *capture = shift_endpoint(capture, offset, &what)?;
            }
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
        echo.health_port = shift_port(echo.health_port, offset, "the echo health port")?;

        let mut state: plantd_state::StateConfig = config::load("state", None, NoOverrides {})?;
        state.broker_endpoint = broker_endpoint.clone();
        if std::env::var_os("PLANTD_STATE_DB").is_none() {
            state.db = args.data_dir.join("plantd-state.db");
        }
        state.bus_endpoint = bus("state").map(|(front, _)| front).unwrap_or_default();
        // Revocations reach the verifiers over the event bus; without one, expiry is all.
        let events = bus("event");
        state.auth.event_endpoint = events.clone().map(|(_, back)| back).unwrap_or_default();
        state.health_port = shift_port(state.health_port, offset, "the state health port")?;

        let mut logger: plantd_logger::LoggerConfig = config::load("logger", None, NoOverrides {})?;
        logger.broker_endpoint = broker_endpoint.clone();
        logger.auth.event_endpoint = events.clone().map(|(_, back)| back).unwrap_or_default();
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
        logger.health_port = shift_port(logger.health_port, offset, "the logger health port")?;

        let mut identity: plantd_identity::IdentityConfig =
            config::load("identity", None, NoOverrides {})?;
        identity.broker_endpoint = broker_endpoint.clone();
        if std::env::var_os("PLANTD_IDENTITY_DB").is_none() {
            identity.db = args.data_dir.join("plantd-identity.db");
        }
        identity.event_endpoint = events.map(|(front, _)| front).unwrap_or_default();
        identity.health_port =
            shift_port(identity.health_port, offset, "the identity health port")?;

        let mut proxy: plantd_proxy::ProxyConfig =
            config::load(plantd_proxy::SERVICE_NAME, None, NoOverrides {})?;
        proxy.broker_endpoint = broker_endpoint.clone();
        proxy.auth.event_endpoint = bus("event").map(|(_, back)| back).unwrap_or_default();
        proxy.buses = broker
            .bus
            .active()
            .iter()
            .map(|b| plantd_proxy::BusEndpoints {
                name: b.name.clone(),
                frontend: connectable_endpoint(&b.frontend, &broker_endpoint),
                backend: connectable_endpoint(&b.backend, &broker_endpoint),
            })
            .collect();
        proxy.http_port = shift_port(proxy.http_port, offset, "the proxy HTTP port")?;
        proxy.health_port = shift_port(proxy.health_port, offset, "the proxy health port")?;
        // `up` gives every service 5 s to stop: the proxy's in-flight requests get less.
        proxy.shutdown_grace_ms = proxy.shutdown_grace_ms.min(4_000);

        let mut warnings = Vec::new();
        let metric = match bus("metric") {
            Some((frontend, backend)) => {
                let (mut metric, notes): (plantd_module_metric::MetricModuleConfig, _) =
                    service::load_config(plantd_module_metric::SERVICE_NAME, None, NoOverrides {})?;
                warnings = notes;
                metric.bus_frontend = frontend;
                metric.bus_backend = backend;
                metric.health_port =
                    shift_port(metric.health_port, offset, "the metric health port")?;
                Some(metric)
            }
            None => None,
        };
        Ok(System {
            broker,
            broker_endpoint,
            echo,
            state,
            identity,
            logger,
            proxy,
            metric,
            warnings,
            selection: args.select.selection()?,
        })
    }

    /// Puts every service on CURVE with `keys`; tokens stay required as without it.
    fn secure(&mut self, keys: &secure::SecureKeys) {
        self.broker.curve = keys.broker();
        self.echo.curve = keys.client("echo");
        self.state.curve = keys.client("state");
        self.logger.curve = keys.client("logger");
        if let Some(metric) = &mut self.metric {
            metric.curve = keys.client("metric");
        }
        self.identity.curve = keys.client("identity");
        self.proxy.curve = keys.client("proxy");
    }

    /// Every TCP port the services bind.
    fn bindings(&self) -> Vec<Binding> {
        let mut bindings: Vec<Binding> = Binding::endpoint(
            "broker MDP".into(),
            &self.broker.endpoint,
            "--endpoint, PLANTD_UP_ENDPOINT",
        )
        .into_iter()
        .collect();
        for bus in self.broker.bus.active() {
            let endpoints = [
                ("frontend", Some(&bus.frontend)),
                ("backend", Some(&bus.backend)),
                ("capture", bus.capture.as_ref()),
            ];
            for (side, endpoint) in endpoints {
                let what = format!("bus {} {side}", bus.name);
                bindings.extend(endpoint.and_then(|endpoint| {
                    Binding::endpoint(what, endpoint, "PLANTD_BROKER_BUS__BUSES")
                }));
            }
        }
        if self.selection.runs("proxy") {
            bindings.push(Binding::health(
                "proxy HTTP API".into(),
                &self.proxy.http_host,
                self.proxy.http_port,
                "PLANTD_PROXY_HTTP_PORT",
            ));
        }
        bindings.extend(
            self.health()
                .into_iter()
                .map(|(name, host, port, setting)| {
                    Binding::health(format!("{name} health"), host, port, setting)
                }),
        );
        bindings
    }

    /// Each service's health server: name, host, port and the variable of the port.
    fn health(&self) -> Vec<(&'static str, &str, u16, &'static str)> {
        let mut health = vec![
            (
                "broker",
                self.broker.health_host.as_str(),
                self.broker.health_port,
                "PLANTD_BROKER_HEALTH_PORT",
            ),
            (
                "echo",
                &self.echo.health_host,
                self.echo.health_port,
                "PLANTD_ECHO_HEALTH_PORT",
            ),
            (
                "state",
                &self.state.health_host,
                self.state.health_port,
                "PLANTD_STATE_HEALTH_PORT",
            ),
            (
                "identity",
                &self.identity.health_host,
                self.identity.health_port,
                "PLANTD_IDENTITY_HEALTH_PORT",
            ),
            (
                "logger",
                &self.logger.health_host,
                self.logger.health_port,
                "PLANTD_LOGGER_HEALTH_PORT",
            ),
            (
                "proxy",
                &self.proxy.health_host,
                self.proxy.health_port,
                "PLANTD_PROXY_HEALTH_PORT",
            ),
        ];
        if let Some(metric) = &self.metric {
            health.push((
                "metric",
                &metric.health_host,
                metric.health_port,
                "PLANTD_METRIC_HEALTH_PORT",
            ));
        }
        health.retain(|(name, ..)| self.selection.runs(name));
        health
    }

    /// The `/healthz` URLs of every process, for the dashboard (`0.0.0.0` asked on loopback).
    fn dashboard_health(&self) -> Vec<plantd_proxy::HealthTarget> {
        self.health()
            .into_iter()
            .map(|(name, host, port, _)| {
                let host = match host {
                    "0.0.0.0" | "::" => "127.0.0.1".to_owned(),
                    host if host.contains(':') => format!("[{host}]"),
                    host => host.to_owned(),
                };
                plantd_proxy::HealthTarget {
                    name: name.to_owned(),
                    url: format!("http://{host}:{port}/healthz"),
                }
            })
            .collect()
    }

    /// The `/healthz` endpoints that must answer UP before `up` says so.
    fn ready_targets(&self) -> Vec<ready::Target> {
        self.health()
            .into_iter()
            .filter_map(|(name, host, port, setting)| {
                let addr = Binding::health(name.into(), host, port, setting).local_addr()?;
                Some(ready::Target { name, addr })
            })
            .collect()
    }

    /// The "is up" banner: what listens where, and a first command to try.
    fn banner(&self) -> String {
        let health = |port: u16| format!("health http://127.0.0.1:{port}/healthz");
        let mut rows = vec![
            (
                "broker",
                format!(
                    "MDP {} · {}",
                    self.broker.endpoint,
                    health(self.broker.health_port)
                ),
            ),
            (
                "echo",
                format!("org.plantd.module.Echo · {}", health(self.echo.health_port)),
            ),
            (
                "state",
                format!(
                    "org.plantd.State · {} · {}",
                    self.state.db.display(),
                    health(self.state.health_port)
                ),
            ),
            (
                "identity",
                format!(
                    "org.plantd.Identity · {} · {}",
                    self.identity.db.display(),
                    health(self.identity.health_port)
                ),
            ),
            (
                "logger",
                format!(
                    "org.plantd.Logger · {} · {}",
                    self.logger.db.display(),
                    health(self.logger.health_port)
                ),
            ),
            (
                "proxy",
                format!(
                    "HTTP API http://{host}:{port}/api/v1 · dashboard http://{host}:{port}/ · {}",
                    health(self.proxy.health_port),
                    host = self.proxy.http_host,
                    port = self.proxy.http_port,
                ),
            ),
        ];
        rows.retain(|(name, _)| self.selection.runs(name));
        for b in self.broker.bus.active() {
            rows.push((
                "bus",
                format!(
                    "{} · publish {} · subscribe {}",
                    b.name, b.frontend, b.backend
                ),
            ));
        }
        if let Some(metric) = self
            .metric
            .as_ref()
            .filter(|_| self.selection.runs("metric"))
        {
            rows.push((
                "metric",
                format!(
                    "host readings every {} ms on the metric bus · {}",
                    metric.interval_ms,
                    health(metric.health_port)
                ),
            ));
        }
        let mut text = format!("plantd {} is up:\n", env!("CARGO_PKG_VERSION"));
        for (name, what) in rows {
            text.push_str(&format!("  {name:<8} {what}\n"));
        }
        text
    }

    /// The banner's last lines: a first command to try, runnable as printed.
    fn advice(&self) -> String {
        let mut text = String::new();
        let endpoint = if self.broker_endpoint == CLIENT_DEFAULT_ENDPOINT {
            String::new()
        } else {
            format!("--endpoint {} ", self.broker_endpoint)
        };
        // Runnable as printed from the source tree, where `plant` may not be installed yet.
        text.push_str(&format!(
            "Try, in another terminal in the source tree:\n  \
             cargo run --release -p plantd-client -- {endpoint}echo hello\n\
             (or `plant {endpoint}echo hello` once `cargo install --path client` has put plant \
             on your PATH). Ctrl-C stops everything."
        ));
        text
    }
}

fn up(args: UpArgs) -> Result<()> {
    telemetry::init("plantd", &args.log_level, args.log_format);
    let mut system = System::configure(&args)?;
    if system.proxy.dashboard.health.is_empty() {
        // The dashboard's overview shows the health of every process `up` runs.
        system.proxy.dashboard.health = system.dashboard_health();
    }
    for warning in &system.warnings {
        tracing::warn!("{warning}");
    }
    let bindings = system.bindings();
    if args.print_ports {
        println!("{:<6} {:<26} SET WITH", "PORT", "LISTENER");
        for binding in &bindings {
            println!("{binding}");
        }
        return Ok(());
    }
    // Before anything starts: a taken port is one clear error, not a half-started system.
    for binding in &bindings {
        binding.check_free()?;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let keys = match args.secure {
        true => Some(secure::SecureKeys::prepare(&args.data_dir)?),
        false => None,
    };
    if let Some(keys) = &keys {
        system.secure(keys);
    }

    let banner = system.banner();
    let advice = system.advice();
    let targets = system.ready_targets();
    let cli_curve = match &keys {
        Some(keys) => keys.client("cli").client()?,
        None => None,
    };
    let admin = login::AdminLogin::new(&system.identity, &system.broker_endpoint, cli_curve);
    let broker_endpoint = system.broker_endpoint.clone();
    let selection = system.selection.clone();
    let System {
        broker,
        echo,
        state,
        identity,
        logger,
        proxy,
        metric,
        ..
    } = system;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = Shutdown::new();
        let mut services = JoinSet::new();
        services.spawn(named("broker", plantd_broker::run(broker, shutdown.clone())));
        if selection.runs("echo") {
            services.spawn(named("echo", plantd_module_echo::run(echo, shutdown.clone())));
        }
        if selection.runs("state") {
            services.spawn(named("state", plantd_state::run(state, shutdown.clone())));
        }
        if selection.runs("identity") {
            services.spawn(named("identity", plantd_identity::run(identity, shutdown.clone())));
        }
        if selection.runs("logger") {
            services.spawn(named("logger", plantd_logger::run(logger, shutdown.clone())));
        }
        if selection.runs("proxy") {
            services.spawn(named("proxy", plantd_proxy::run(proxy, shutdown.clone())));
        }
        if let Some(metric) = metric.filter(|_| selection.runs("metric")) {
            services.spawn(named("metric", plantd_module_metric::run(metric, shutdown.clone())));
        }

        let signal = plantd_worker_sdk::signal::wait_for_shutdown_signal();
        tokio::pin!(signal);
        let startup = tokio::select! {
            ready = ready::wait_until_up(&targets, READY_WITHIN) => ready.map_err(anyhow::Error::from),
            Some(done) = services.join_next() => Err(stopped_on_its_own(done)),
            _ = &mut signal => {
                tracing::info!("interrupted before every service was up");
                stop(&mut services, &shutdown).await;
                return Ok(());
            }
        };
        if let Err(e) = startup {
            stop(&mut services, &shutdown).await;
            return Err(e.context("plantd did not come up"));
        }
        // The quick start's `plant` commands need a login: write the admin's, as minikube
        // writes a kubeconfig. A failure here is reported but does not stop the system.
        // Under --secure, plant's CURVE settings first: the login goes through CURVE too.
        let curve_note = keys
            .as_ref()
            .map(|keys| secure_note(keys, &broker_endpoint))
            .unwrap_or_default();
        let login_note = match selection.runs("identity") {
            false => "identity is not running (--only/--except): no CLI login was saved".into(),
            true => match tokio::task::spawn_blocking(move || admin.save_if_missing()).await {
            Ok(Ok(note)) => note,
            Ok(Err(e)) => format!("could not log the CLI in as admin: {e:#}"),
            Err(e) => format!("could not log the CLI in as admin: {e}"),
            },
        };
        let login_note = format!("{curve_note}{login_note}");
        println!("{banner}{login_note}\n{advice}");

        let mut failed = None;
        tokio::select! {
            _ = &mut signal => tracing::info!("shutting down"),
            Some(done) = services.join_next() => failed = Some(stopped_on_its_own(done)),
        }
        stop(&mut services, &shutdown).await;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}

/// The banner's lines about CURVE: where the keys are, and the CLI's settings written for it.
fn secure_note(keys: &secure::SecureKeys, endpoint: &str) -> String {
    let made = if keys.created { "made now" } else { "kept" };
    let profile = match keys.save_cli_profile(endpoint) {
        Ok(path) => format!("plant's CURVE settings for {endpoint}: {}", path.display()),
        Err(e) => format!("could not write plant's CURVE settings: {e:#}"),
    };
    format!(
        "  curve    every socket encrypted · keys and allow list in {} ({made})
  {profile}
",
        keys.dir().display()
    )
}

/// What it means that a service's task ended while `up` runs: always a failure.
fn stopped_on_its_own(done: Result<Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match done.map_err(anyhow::Error::from).and_then(|r| r) {
        Err(e) => e,
        Ok(()) => anyhow::anyhow!("a service stopped unexpectedly"),
    }
}

/// Cancels `shutdown` and waits (a bounded time) for every service to stop, logging their errors.
async fn stop(services: &mut JoinSet<Result<()>>, shutdown: &Shutdown) {
    shutdown.cancel();
    let drained = tokio::time::timeout(STOP_WITHIN, async {
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
