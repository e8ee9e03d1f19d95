//! The `main` every service binary shares: load the layered configuration, answer
//! `--print-config`, set up logging, and run the service until SIGINT or SIGTERM.
//!
//! A service binary is then a clap struct of its own override flags plus [`CommonArgs`], parsed
//! with [`parse_args`] (so `--help` names the service's real variables), and one call to [`main`].

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
    // The help texts name `PLANTD_<SERVICE>_...` and `<service>`; `parse_args` puts the real
    // names in.
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
    /// The service's former name, if it was renamed: its variables and file are still read
    /// (see [`config::load_with_former_name`]), with a warning.
    const FORMER_NAME: Option<&'static str> = None;
}

/// Parses the command line of `service`'s binary like `P::parse()`, except that the help of every
/// flag names the service's own variables (`PLANTD_STATE_HEALTH_PORT`, `state.yaml`) where the
/// shared [`CommonArgs`] can only say `PLANTD_<SERVICE>_HEALTH_PORT`.
pub fn parse_args<P: clap::Parser>(service: &str) -> P {
    let matches = command_for(P::command(), service).get_matches();
    P::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `command` with the `PLANTD_<SERVICE>_` and `<service>` placeholders of its help texts replaced
/// by `service`'s prefix and name.
pub fn command_for(command: clap::Command, service: &str) -> clap::Command {
    let prefix = config::env_prefix(service);
    command.mut_args(|arg| match arg.get_help() {
        Some(help) => {
            let help = help
                .to_string()
                .replace("PLANTD_<SERVICE>_", &prefix)
                .replace("<service>", service);
            arg.help(help)
        }
        None => arg,
    })
}

/// Loads `service`'s configuration (`overrides` > environment > file > defaults), reading its
/// former name too if it has one; returns the warnings about uses of the former name.
pub fn load_config<C: ServiceConfig>(
    service: &str,
    explicit_file: Option<&std::path::Path>,
    overrides: impl Serialize,
) -> Result<(C, Vec<String>), ConfigError> {
    match C::FORMER_NAME {
        Some(former) => config::load_with_former_name(service, former, explicit_file, overrides),
        None => Ok((config::load(service, explicit_file, overrides)?, Vec::new())),
    }
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
    let (config, warnings): (C, _) = load_config(service, common.config.as_deref(), overrides)?;
    if common.print_config {
        for warning in &warnings {
            eprintln!("warning: {warning}");
        }
        config::print(&config);
        return Ok(());
    }
    telemetry::init(binary, config.log_level(), config.log_format());
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn help_names_the_services_own_variables() {
        let help = command_for(Cli::command(), "module-metric")
            .render_help()
            .to_string();
        for name in [
            "PLANTD_MODULE_METRIC_HEALTH_PORT",
            "PLANTD_MODULE_METRIC_LOG_LEVEL",
            "PLANTD_MODULE_METRIC_LOG_FORMAT",
            "PLANTD_MODULE_METRIC_CONFIG",
            "module-metric.yaml",
        ] {
            assert!(help.contains(name), "{name} missing from:\n{help}");
        }
        assert!(
            !help.contains("<SERVICE>") && !help.contains("<service>"),
            "{help}"
        );
    }
}
