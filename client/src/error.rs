//! What can go wrong in a `plant` command, each worded as the one line the user sees.

use std::time::Duration;

use plantd_worker_sdk::client::ClientError;
use thiserror::Error;

use crate::context::format_duration;

/// A failed `plant` command. `main` prints it as `error: <message>` and exits non-zero.
#[derive(Debug, Error)]
pub enum CliError {
    /// Nothing came back from the broker at all, not even to an MMI probe.
    #[error("broker at {endpoint} is unreachable: no reply within {}", format_duration(*.timeout))]
    Unreachable {
        /// The broker endpoint.
        endpoint: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The broker is up but the service did not answer in time.
    #[error("no reply from {service} within {} (the broker is up; the worker is slow or stuck)", format_duration(*.timeout))]
    Timeout {
        /// The service called.
        service: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The broker or the worker answered with an error.
    #[error("{}", describe(service, source))]
    Request {
        /// The service called.
        service: String,
        /// The client error.
        source: ClientError,
    },
    /// The command line asked for something impossible (bad frame, unreadable file, ...).
    #[error("{0}")]
    Input(String),
    /// Writing the result failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// Anything else, from commands that report with `anyhow`.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

fn describe(service: &str, error: &ClientError) -> String {
    match error {
        ClientError::NotFound => {
            format!("service {service} not found: no worker is registered for it")
        }
        ClientError::QueueFull => {
            format!("service {service} is overloaded: the broker's queue for it is full")
        }
        ClientError::Expired => {
            format!("request to {service} expired in the broker queue: no worker was free in time")
        }
        ClientError::Worker(message) => format!("{service} failed: {message}"),
        ClientError::Broker { code, message } => {
            format!("broker error {code} for {service}: {message}")
        }
        ClientError::InvalidEndpoint(e) => format!("invalid broker endpoint {e}"),
        other => format!("request to {service} failed: {other}"),
    }
}
