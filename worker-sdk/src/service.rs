//! The `main` every service binary shares: load the layered configuration, answer
//! `--print-config`, set up logging, and run the service until SIGINT or SIGTERM.
//!
//! A service binary is then a clap struct of its own override flags plus [`CommonArgs`], and one
//! call to [`main`].

use std::error::Error;
use std::future::Future;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::config::{self, ConfigError};
use crate::telemetry::{self, LogFormat};
use crate::{signal, Shutdown};

/// Flags every service binary takes besides its own overrides: where the configuration comes
/// from, and the settings every service has (they override the environment and the file).
#[derive(clap::Args, Debug, Default)]
pub struct CommonArgs {
    /// Config file (default: PLANTD_<SERVICE>_CONFIG, then <service>.yaml in ., ~/.config/plantd,
    /// /etc/plantd).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Port of /healthz and /metrics [env: PLANTD_<SERVICE>_HEALTH_PORT].
    #[arg(long)]
    pub health_port: Option<u16>,
    /// Log filter, e.g. `info` or `plantd_state=debug` [env: PLANTD_<SERVICE>_LOG_LEVEL].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: text or json [env: PLANTD_<SERVICE>_LOG_FORMAT].
    #[arg(long)]
    pub log_format: Option<LogFormat>,
}

/// The common flags that were given, followed by the service's own overrides, as one layer.
#[derive(Serialize)]
struct Overrides<'a, O> {
    #[serde(skip_serializing_if = "Option::is_none")]
    health_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
    #[serde(flatten)]
    service: O,
}

/// What [`main`] needs from a service's configuration besides loading it.
pub trait ServiceConfig: DeserializeOwned + Serialize + Default {
    /// The `tracing` filter directive.
    fn log_level(&self) -> &str;
    /// Text or JSON log lines.
    fn log_format(&self) -> LogFormat;
}

/// Why a service binary stopped with an error.
#[derive(Debug, Error)]
pub enum ServiceMainError {
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tokio runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The service's `run` returned an error.
    #[error("{service} failed: {source}")]
    Failed {
        /// The service name.
        service: String,
        /// What `run` returned.
        source: Box<dyn Error + Send + Sync>,
    },
}

/// Loads `service`'s configuration (`overrides` > environment > file > defaults), prints it and
/// returns if `--print-config` was given, else sets up logging for `binary` and runs
/// `run(config, shutdown)` on a multi-threaded runtime, cancelling `shutdown` on SIGINT/SIGTERM.
pub fn main<C, F, Fut, E>(
    service: &str,
    binary: &str,
    common: &CommonArgs,
    overrides: impl Serialize,
    run: F,
) -> Result<(), ServiceMainError>
where
    C: ServiceConfig,
    F: FnOnce(C, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Error + Send + Sync + 'static,
{
    let overrides = Overrides {
        health_port: common.health_port,
        log_level: common.log_level.as_deref(),
        log_format: common.log_format,
        service: overrides,
    };
    let config: C = config::load(service, common.config.as_deref(), overrides)?;
    if common.print_config {
        config::print(&config);
        return Ok(());
    }
    telemetry::init(binary, config.log_level(), config.log_format());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServiceMainError::Runtime)?;
    runtime
        .block_on(async {
            let shutdown = Shutdown::new();
            signal::cancel_on_signal(shutdown.clone());
            run(config, shutdown).await
        })
        .map_err(|e| ServiceMainError::Failed {
            service: service.to_owned(),
            source: Box::new(e),
        })
}
