//! The logger's configuration: every key, its default and its validation.
//!
//! Loaded with [`plantd_worker_sdk::config::load`]`("logger", ..)`: each key can be set with
//! `PLANTD_LOGGER_<KEY>` (`PLANTD_LOGGER_DB`, `PLANTD_LOGGER_RETENTION_MAX_AGE_SECS`,
//! `PLANTD_LOGGER_STORE=postgres`, `PLANTD_LOGGER_POSTGRES__DSN`, ...), a
//! `logger.yaml`, or a command-line flag. No file is needed.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use plantd_worker_sdk::auth::AuthConfig;
use plantd_worker_sdk::bus::DEFAULT_HIGH_WATER_MARK;
use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

use crate::error::LoggerError;

/// Everything the logger can be told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggerConfig {
    /// Broker MDP endpoint the `org.plantd.Logger` worker registers with.
    /// Several brokers, comma-separated, get one worker session set each (DESIGN.md §8).
    pub broker_endpoint: String,
    /// MDP version spoken to the broker: `0.2` (default), `0.1` (zguide brokers) or `go`.
    pub protocol: Dialect,
    /// Which database holds the rows: `sqlite` (default, the `db` file) or `postgres` (the
    /// `postgres` block).
    pub store: crate::store::Backend,
    /// SQLite database file, with `store: sqlite`.
    pub db: PathBuf,
    /// PostgreSQL connection, with `store: postgres` (`PLANTD_LOGGER_POSTGRES__DSN`,
    /// `PLANTD_LOGGER_POSTGRES__PASSWORD_FILE`, ...). The password is never logged and
    /// `--print-config` shows it as `***`.
    pub postgres: plantd_pg_util::PostgresConfig,
    /// Bus backends to subscribe to (all three by default).
    pub buses: Vec<BusSubscription>,
    /// Topic prefix subscribed on every bus (`""` = every message).
    pub topic_prefix: String,
    /// Receive queue limit of each bus subscriber, in messages.
    pub high_water_mark: i32,
    /// Most rows written in one transaction.
    pub batch_size: usize,
    /// Longest a received message waits before its batch is committed, in milliseconds.
    pub flush_interval_ms: u64,
    /// Delete rows older than this many seconds (`0` = keep forever).
    pub retention_max_age_secs: u64,
    /// Keep at most this many rows per table, deleting the oldest (`0` = no limit).
    pub retention_max_rows: u64,
    /// How often retention runs, in seconds.
    pub retention_interval_secs: u64,
    /// Seconds between `PRAGMA quick_check` runs while the logger runs (a damaged file turns the
    /// `database` check DOWN); `0` disables them. The file is always checked at startup.
    pub integrity_check_interval_secs: u64,
    /// Largest `limit` a query may ask for (and the default).
    pub max_query_rows: usize,
    /// Worker sessions (concurrent queries) per broker.
    pub concurrency: usize,
    /// Address `/healthz` and `/metrics` listen on.
    pub health_host: String,
    /// Port `/healthz` and `/metrics` listen on.
    pub health_port: u16,
    /// Log filter (an `EnvFilter` directive).
    pub log_level: String,
    /// Log line format: `text` or `json`.
    pub log_format: LogFormat,
    /// Token checks on queries (`PLANTD_LOGGER_AUTH__MODE=required|off`, ...); queries need
    /// `logger:read`.
    pub auth: AuthConfig,
    /// CURVE keys (`curve.secret_key_file`, `curve.server_key` or `curve.server_key_file`;
    /// `PLANTD_LOGGER_CURVE__...`): with them every broker socket is a CURVE client. Unset: plain.
    pub curve: plantd_worker_sdk::curve::CurveConfig,
}

/// One bus the logger listens to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusSubscription {
    /// Bus name, stored with every row (`state`, `event`, `metric`).
    pub name: String,
    /// The bus backend (XPUB) endpoint.
    pub endpoint: String,
}

impl Default for LoggerConfig {
    fn default() -> Self {
        LoggerConfig {
            broker_endpoint: "tcp://127.0.0.1:9797".into(),
            protocol: Dialect::V02,
            store: crate::store::Backend::Sqlite,
            db: PathBuf::from("./plantd-logger.db"),
            postgres: Default::default(),
            buses: plantd_worker_sdk::bus::DEFAULT_BUSES
                .iter()
                .map(|(name, _, backend)| BusSubscription {
                    name: (*name).to_owned(),
                    endpoint: format!("tcp://127.0.0.1:{backend}"),
                })
                .collect(),
            topic_prefix: String::new(),
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
            batch_size: 5000,
            flush_interval_ms: 100,
            retention_max_age_secs: 30 * 24 * 3600,
            retention_max_rows: 0,
            retention_interval_secs: 60,
            integrity_check_interval_secs: 3600,
            max_query_rows: 10_000,
            concurrency: 2,
            health_host: "0.0.0.0".into(),
            health_port: 8084,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            auth: AuthConfig::default(),
            curve: Default::default(),
        }
    }
}

impl LoggerConfig {
    /// Rejects values that would make the logger misbehave.
    pub fn validate(&self) -> Result<(), LoggerError> {
        let invalid = |reason: String| Err(LoggerError::Config(reason));
        if self.broker_endpoint.trim().is_empty() {
            return invalid("broker_endpoint must not be empty".into());
        }
        match self.store {
            crate::store::Backend::Sqlite if self.db.as_os_str().is_empty() => {
                return invalid("db must not be empty".into());
            }
            crate::store::Backend::Postgres if self.postgres.dsn.trim().is_empty() => {
                return invalid("store is postgres but postgres.dsn is not set".into());
            }
            _ => {}
        }
        for (i, bus) in self.buses.iter().enumerate() {
            if bus.name.is_empty() || bus.endpoint.is_empty() {
                return invalid(format!("bus #{i} needs a name and an endpoint"));
            }
            if self.buses[..i].iter().any(|b| b.name == bus.name) {
                return invalid(format!("bus {:?} is listed twice", bus.name));
            }
        }
        if self.batch_size == 0 || self.flush_interval_ms == 0 || self.retention_interval_secs == 0
        {
            return invalid(
                "batch_size, flush_interval_ms and retention_interval_secs must be at least 1"
                    .into(),
            );
        }
        if self.max_query_rows == 0 || self.concurrency == 0 {
            return invalid("max_query_rows and concurrency must be at least 1".into());
        }
        if self.high_water_mark < 0 {
            return invalid("high_water_mark must not be negative (0 means unlimited)".into());
        }
        self.health_addr().map(|_| ())
    }

    /// The `/healthz` listen address.
    pub fn health_addr(&self) -> Result<SocketAddr, LoggerError> {
        let ip: IpAddr = self.health_host.parse().map_err(|_| {
            LoggerError::Config(format!(
                "health_host {:?} is not an IP address",
                self.health_host
            ))
        })?;
        Ok(SocketAddr::new(ip, self.health_port))
    }

    /// The retention policy these settings describe.
    pub fn retention(&self) -> crate::store::Retention {
        crate::store::Retention {
            max_age: (self.retention_max_age_secs > 0)
                .then(|| Duration::from_secs(self.retention_max_age_secs)),
            max_rows: (self.retention_max_rows > 0).then_some(self.retention_max_rows),
            interval: Duration::from_secs(self.retention_interval_secs),
        }
    }
}

impl plantd_worker_sdk::service::ServiceConfig for LoggerConfig {
    fn log_level(&self) -> &str {
        &self.log_level
    }
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

#[cfg(test)]
// figment's Jail closures return its own large error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct NoFlags {}

    #[test]
    fn defaults_are_documented_and_valid() {
        let c = LoggerConfig::default();
        assert_eq!(c.health_port, 8084);
        assert_eq!(c.db, PathBuf::from("./plantd-logger.db"));
        let names: Vec<_> = c.buses.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["state", "event", "metric"]);
        assert_eq!(c.buses[2].endpoint, "tcp://127.0.0.1:13001");
        c.validate().unwrap();
    }

    #[test]
    fn env_sets_the_database_and_nested_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PLANTD_LOGGER_DB", "/tmp/x.db");
            jail.set_env("PLANTD_LOGGER_RETENTION_MAX_ROWS", "5");
            let c: LoggerConfig =
                plantd_worker_sdk::config::load("logger", None, NoFlags {}).unwrap();
            assert_eq!(c.db, PathBuf::from("/tmp/x.db"));
            assert_eq!(c.retention().max_rows, Some(5));
            Ok(())
        });
    }

    #[test]
    fn nonsense_is_rejected() {
        let mut c = LoggerConfig::default();
        c.buses.push(c.buses[0].clone());
        assert!(c.validate().is_err());
        let c = LoggerConfig {
            batch_size: 0,
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }
}
