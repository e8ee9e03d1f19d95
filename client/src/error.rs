//! What can go wrong in a `plant` command, each worded as the one line the user sees.

use std::time::Duration;

use plantd_worker_sdk::client::ClientError;
use thiserror::Error;

use crate::context::waited;

/// A failed `plant` command. `main` prints it as `error: <message>` and exits non-zero.
#[derive(Debug, Error)]
pub enum CliError {
    /// Nothing came back from the broker at all, not even to an MMI probe.
    #[error("broker at {endpoint} is unreachable: no reply {}", waited(*.timeout, *.attempts))]
    Unreachable {
        /// The broker endpoint.
        endpoint: String,
        /// How long each attempt waited.
        timeout: Duration,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The broker is up but the service did not answer in time.
    #[error("no reply from {service} {} (the broker is up; the worker is slow or stuck)", waited(*.timeout, *.attempts))]
    Timeout {
        /// The service called.
        service: String,
        /// How long each attempt waited.
        timeout: Duration,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The broker's connection dropped (it died or restarted) while the request was in flight,
    /// on the last attempt.
    #[error("broker disconnected: {endpoint} went away during the request to {service}{}", disconnected_outcome(*.attempts))]
    Disconnected {
        /// The broker endpoint.
        endpoint: String,
        /// The service called.
        service: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The request timed out and the broker has no worker for the service: the request may still
    /// be waiting in the broker's queue, where a worker that registers in time would serve it.
    #[error("no such service: {service} (no worker is registered for it; the request stays queued at the broker until its queue_ttl_ms, 30 s by default, and a worker registering meanwhile still carries it out)")]
    NoWorker {
        /// The service called.
        service: String,
    },
    /// The broker or the worker answered with an error.
    #[error("{}", describe(service, source))]
    Request {
        /// The service called.
        service: String,
        /// The client error.
        source: ClientError,
    },
    /// The service answered with a `{"success": false, "error": {...}}` reply.
    #[error("{code}: {message}")]
    Refused {
        /// The error code (`KEY_NOT_FOUND`, `UNKNOWN_OPERATION`, ...).
        code: String,
        /// The service's message.
        message: String,
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

/// What a disconnect means for the request: a single attempt (a write) may have been carried out.
fn disconnected_outcome(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        "; it may or may not have been carried out".to_owned()
    }
}

fn describe(service: &str, error: &ClientError) -> String {
    match error {
        ClientError::NotFound => {
            format!("no such service: {service} (no worker is registered for it)")
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
