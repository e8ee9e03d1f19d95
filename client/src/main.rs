//! `plant`: the plantd command-line client.
//!
//! Talks MDP to a broker (`--endpoint`, env `PLANTD_CLIENT_ENDPOINT`, default
//! `tcp://127.0.0.1:9797`), in MDP/0.2 unless `--protocol` says 0.1 or go; needs no config file.
//! Results go to stdout (`--output text|json`), diagnostics to stderr; any failure exits 1 with
//! one line saying what went wrong (usage errors exit 2).
//!
//! Read-only commands resend their request after a timeout or a broker disconnect (2 times unless
//! `--retries` says otherwise), so they ride out a broker restart; writes are never resent unless
//! `--retries` asks, and report a broker that went away mid-request (`context::Access`).
//!
//! Adding a command: a module under `commands/`, one [`Command`] variant, one arm in [`dispatch`].

mod commands;
mod context;
mod error;
mod output;
mod session;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use plantd_worker_sdk::protocol::Dialect;

use commands::{auth, bench, echo, identity, keys, mmi, request, state};
use commands::{bus, logger};
use context::{parse_duration, Context};
use error::CliError;
use output::OutputFormat;

/// plant: talk to a plantd system through its broker.
#[derive(Parser, Debug)]
#[command(name = "plant", version, propagate_version = true)]
struct Cli {
    /// Broker endpoint.
    #[arg(
        long,
        global = true,
        env = "PLANTD_CLIENT_ENDPOINT",
        default_value = "tcp://127.0.0.1:9797"
    )]
    endpoint: String,
    /// How long each attempt waits for a reply: 500ms, 5s, 1.5s, 2m (a bare number is seconds).
    #[arg(long, global = true, env = "PLANTD_CLIENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Resend a request this many times (on a new connection) after a timeout or a broker
    /// disconnect. Default: 2 for read-only commands (MMI, state get/list/list-scopes, logger
    /// queries, echo), 0 for writes (state set/delete/..., any `plant request`).
    #[arg(long, global = true, env = "PLANTD_CLIENT_RETRIES")]
    retries: Option<u32>,
    /// MDP version to speak to the broker: 0.2, 0.1 (zguide brokers) or go.
    #[arg(
        long,
        global = true,
        env = "PLANTD_CLIENT_PROTOCOL",
        default_value_t = Dialect::V02
    )]
    protocol: Dialect,
    /// The broker's CURVE public key (Z85, or a file holding it): talk to a CURVE broker.
    /// Default: the entry for --endpoint in $XDG_CONFIG_HOME/plantd/curve.json, if any.
    // Z85 text may begin with '-' (or "-+"), which clap would otherwise read as a flag.
    #[arg(
        long,
        global = true,
        env = "PLANTD_CLIENT_SERVER_KEY",
        allow_hyphen_values = true
    )]
    server_key: Option<String>,
    /// This client's CURVE secret key file (NAME.key from `plant keys generate`), with
    /// --server-key.
    // Its own id: `key` is also an argument of `plant state` subcommands.
    #[arg(
        long = "key",
        id = "curve_key",
        value_name = "FILE",
        global = true,
        env = "PLANTD_CLIENT_KEY"
    )]
    key: Option<std::path::PathBuf>,
    /// Result format on stdout.
    #[arg(
        long,
        short = 'o',
        global = true,
        env = "PLANTD_CLIENT_OUTPUT",
        value_enum,
        default_value_t = OutputFormat::Text
    )]
    output: OutputFormat,
    /// Access token to send instead of the saved login (`plant auth login`).
    #[arg(long, global = true, env = "PLANTD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// The `plant` commands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Send a message to the echo module and print what comes back.
    Echo(echo::EchoArgs),
    /// Send a request to any service and print the reply frames.
    Request(request::RequestArgs),
    /// List the services the broker knows (MMI); with --all, of every broker --endpoint lists.
    Services(mmi::ServicesArgs),
    /// Check whether a service has a registered worker (exit 1 if not).
    Service(mmi::ServiceArgs),
    /// List the workers registered for a service (MMI).
    Workers(mmi::WorkersArgs),
    /// Show the broker's version, uptime, counters and buses (MMI).
    Broker,
    /// Read and write the state service's scoped key/value store.
    State(state::StateArgs),
    /// Publish to and subscribe on the broker's pub/sub buses (see docs/buses.md).
    #[command(subcommand)]
    Bus(bus::BusCommand),
    /// Query the metrics the logger stored (see docs/logger.md).
    #[command(subcommand)]
    Metrics(logger::MetricsCommand),
    /// Query the events the logger stored (see docs/logger.md).
    #[command(subcommand)]
    Events(logger::EventsCommand),
    /// Ask the logger about its database.
    #[command(subcommand)]
    Logger(logger::LoggerCommand),
    /// CURVE keys (see docs/security.md).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Log in to identity, log out, show who you are (see docs/identity.md).
    Auth(auth::AuthArgs),
    /// Any identity operation: users, organizations, roles, API keys (see docs/identity.md).
    Identity(identity::IdentityArgs),
    /// Identity's audit log.
    Audit(identity::AuditArgs),
    /// Measure throughput and latency (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Runs one command.
fn dispatch(ctx: &Context, command: Command) -> Result<(), CliError> {
    match command {
        Command::Echo(args) => echo::run(ctx, args),
        Command::Request(args) => request::run(ctx, args),
        Command::Services(args) => mmi::services(ctx, args),
        Command::Service(args) => mmi::service(ctx, args),
        Command::Workers(args) => mmi::workers(ctx, args),
        Command::Broker => mmi::broker(ctx),
        Command::State(args) => state::run(ctx, args),
        Command::Bus(command) => bus::run(ctx, command),
        Command::Metrics(command) => logger::run_metrics(ctx, command),
        Command::Events(command) => logger::run_events(ctx, command),
        Command::Logger(command) => logger::run_logger(ctx, command),
        Command::Keys(command) => keys::run(ctx, command),
        Command::Auth(args) => auth::run(ctx, args),
        Command::Identity(args) => identity::run(ctx, args),
        Command::Audit(args) => identity::run_audit(ctx, args),
        Command::Bench(command) => Ok(bench::run(
            command,
            ctx.protocol,
            ctx.output == OutputFormat::Json,
        )?),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Context {
        endpoint: cli.endpoint,
        timeout: cli.timeout,
        retries: cli.retries,
        protocol: cli.protocol,
        output: cli.output,
        server_key: cli.server_key,
        key: cli.key,
        token: cli.token,
    };
    match dispatch(&ctx, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_z85_server_key_beginning_with_a_hyphen_is_a_value_not_a_flag() {
        // Z85's alphabet has '-' and '+': one key in 85 starts with '-'.
        let key = "-+7rRwn&Nx=3lIWb4}SnAnD0L(1[Ia%F-c*d^6O?";
        let cli = Cli::try_parse_from(["plant", "--server-key", key, "echo", "hi"]).unwrap();
        assert_eq!(cli.server_key.as_deref(), Some(key));
    }
}
