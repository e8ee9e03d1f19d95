//! `plantd-broker`: runs the MDP broker until SIGINT or SIGTERM.

use clap::Parser;
use plantd_worker_sdk::service::{self, CommonArgs};
use serde::Serialize;

/// The plantd MDP broker (MDP/0.2, MDP/0.1 and the Go plantd dialect on one socket).
#[derive(Parser, Serialize)]
#[command(name = "plantd-broker", version)]
struct Cli {
    /// ZeroMQ endpoint to bind [default: tcp://127.0.0.1:9797; env PLANTD_BROKER_ENDPOINT].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[command(flatten)]
    #[serde(skip)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    let cli: Cli = service::parse_args("broker");
    match service::main(
        "broker",
        "plantd-broker",
        &cli.common,
        &cli,
        plantd_broker::run,
    ) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // One line (protected mode explains itself in it), without a backtrace.
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
