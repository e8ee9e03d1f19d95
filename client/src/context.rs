//! What every command shares: the global flags, a client built from them (retrying read-only
//! requests, never writes unless asked), and how request errors are explained (telling an
//! unreachable broker from a slow worker and from a broker that went away mid-request).

use std::time::Duration;

use std::path::PathBuf;

use plantd_worker_sdk::client::{Client, ClientError, RetryPolicy};
use plantd_worker_sdk::curve::{ClientCurve, CurveConfig, CurveProfiles};
use plantd_worker_sdk::protocol::Dialect;

use crate::error::CliError;
use crate::output::OutputFormat;

/// The global options, resolved.
#[derive(Clone, Debug)]
pub struct Context {
    /// Broker endpoint, or several separated by commas (the client fails over among them).
    pub endpoint: String,
    /// Timeout of each attempt of a request.
    pub timeout: Duration,
    /// Resends after a failed attempt, if `--retries` was given; else [`Access`] decides.
    pub retries: Option<u32>,
    /// MDP dialect every client speaks.
    pub protocol: Dialect,
    /// How results are printed.
    pub output: OutputFormat,
    /// `--server-key`: the broker's CURVE public key, Z85 or a file.
    pub server_key: Option<String>,
    /// `--key`: this client's CURVE secret key file.
    pub key: Option<PathBuf>,
    /// `--token`/`PLANTD_TOKEN`: sent instead of the saved login ([`crate::session`]).
    pub token: Option<String>,
}

/// Longest wait of the reachability probe made after a timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Resends of a read-only request after a timeout or a broker disconnect, unless `--retries`
/// says otherwise: enough to ride out a broker restart.
pub const READ_RETRIES: u32 = 2;

/// Whether a command's request may be sent twice without harm, which decides its retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Only reads (MMI, `state get`, logger queries, `echo`): resent [`READ_RETRIES`] times.
    Read,
    /// May change something (`state set`/`delete`/`create-scope`/`delete-scope`/`backup`, any
    /// `plant request`): never resent (unless `--retries` asks), so a broker that dies
    /// mid-request is reported instead of the write being repeated.
    Write,
}

impl Context {
    /// The retry policy of a command of kind `access`: `--retries` if given, else
    /// [`READ_RETRIES`] for reads and none for writes; each attempt waits `--timeout`.
    pub fn retry_policy(&self, access: Access) -> RetryPolicy {
        let retries = self.retries.unwrap_or(match access {
            Access::Read => READ_RETRIES,
            Access::Write => 0,
        });
        RetryPolicy::once(self.timeout).with_retries(retries)
    }

    /// The CURVE settings for `--endpoint`: `--server-key`/`--key` if given, else its entry in
    /// `curve.json` (written by `plantd up --secure`), else none (plain).
    pub fn curve(&self) -> Result<Option<ClientCurve>, CliError> {
        let config = if self.server_key.is_some() || self.key.is_some() {
            let (server_key, server_key_file) = match &self.server_key {
                Some(key) if std::path::Path::new(key).is_file() => (None, Some(key.into())),
                other => (other.clone(), None),
            };
            CurveConfig {
                secret_key_file: self.key.clone(),
                server_key,
                server_key_file,
            }
        } else {
            let profiles = match CurveProfiles::default_path() {
                Some(path) => CurveProfiles::load(&path)
                    .map_err(|e| CliError::Input(format!("cannot read CURVE settings: {e}")))?,
                None => CurveProfiles::default(),
            };
            // A list of brokers (`tcp://a:9797,tcp://b:9797`) shares one server key: the entry
            // of the whole list, else of its first broker.
            let first = self.endpoint.split(',').next().unwrap_or_default().trim();
            match profiles.get(&self.endpoint).or_else(|| profiles.get(first)) {
                Some(config) => config.clone(),
                None => return Ok(None),
            }
        };
        config
            .client()
            .map_err(|e| CliError::Input(format!("--server-key/--key: {e}")))
    }

    /// A blocking client for the broker speaking `--protocol`, with the retry policy of `access`.
    pub fn client(&self, access: Access) -> Result<Client, CliError> {
        Client::connect_with(&self.endpoint, self.curve()?)
            .map(|c| {
                c.with_retry_policy(self.retry_policy(access))
                    .with_dialect(self.protocol)
            })
            .map_err(|e| match e {
                ClientError::InvalidEndpoint(e) => {
                    CliError::Input(format!("invalid broker endpoint {e}"))
                }
                other => CliError::Input(format!("cannot create client: {other}")),
            })
    }

    /// Explains a failed request to `service`. On a timeout, a short MMI probe (`mmi.service`)
    /// tells an unreachable broker, a service without workers and a worker that did not answer
    /// apart.
    pub fn request_error(&self, client: &Client, service: &str, error: ClientError) -> CliError {
        let attempts = client.retry_policy().attempts();
        match error {
            ClientError::Timeout => {}
            ClientError::BrokerDisconnected => {
                return CliError::Disconnected {
                    endpoint: self.endpoint.clone(),
                    service: service.to_owned(),
                    attempts,
                }
            }
            error => {
                return CliError::Request {
                    service: service.to_owned(),
                    source: error,
                }
            }
        }
        let unreachable = CliError::Unreachable {
            endpoint: self.endpoint.clone(),
            timeout: self.timeout,
            attempts,
        };
        if service.starts_with("mmi.") {
            return unreachable;
        }
        let probe = client
            .clone()
            .with_timeout(self.timeout.min(PROBE_TIMEOUT))
            .with_retries(0);
        // Asking about the service itself also tells "no worker registered" (the request sat in
        // the broker's queue, whose time limit may be far longer than ours) from a slow worker.
        match probe.service_available(service) {
            Err(ClientError::Timeout | ClientError::BrokerDisconnected) => unreachable,
            Ok(false) => CliError::NoWorker {
                service: service.to_owned(),
            },
            _ => CliError::Timeout {
                service: service.to_owned(),
                timeout: self.timeout,
                attempts,
            },
        }
    }
}

/// Parses a `--timeout`: `500ms`, `5s`, `1.5s`, `2m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (try 500ms, 5s or 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s or m)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("duration {text:?} must be positive"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// How long a failed request waited: `within 5s`, or `to 3 attempts of 5s each`.
pub fn waited(timeout: Duration, attempts: u32) -> String {
    if attempts > 1 {
        format!(
            "to {attempts} attempts of {} each",
            format_duration(timeout)
        )
    } else {
        format!("within {}", format_duration(timeout))
    }
}

/// Shows a duration the way `--timeout` takes it (`500ms`, `5s`, `1.5s`).
pub fn format_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        for bad in ["", "x", "5h", "0", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(waited(Duration::from_secs(5), 1), "within 5s");
        assert_eq!(
            waited(Duration::from_millis(500), 3),
            "to 3 attempts of 500ms each"
        );
    }

    #[test]
    fn reads_retry_by_default_writes_only_when_asked() {
        let mut ctx = Context {
            endpoint: "tcp://127.0.0.1:1".into(),
            timeout: Duration::from_secs(2),
            retries: None,
            protocol: Dialect::V02,
            output: OutputFormat::Text,
            server_key: None,
            key: None,
            token: None,
        };
        let read = ctx.retry_policy(Access::Read);
        assert_eq!(read.attempts(), 1 + READ_RETRIES);
        assert_eq!(read.attempt_timeout(), Duration::from_secs(2));
        assert_eq!(ctx.retry_policy(Access::Write).attempts(), 1);
        ctx.retries = Some(0);
        assert_eq!(ctx.retry_policy(Access::Read).attempts(), 1);
        ctx.retries = Some(4);
        assert_eq!(ctx.retry_policy(Access::Write).attempts(), 5);
    }
}
