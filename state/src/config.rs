//! `StateConfig`: everything `plantd-state` can be told, with the defaults of DESIGN.md §3.
//!
//! Loaded with `plantd_worker_sdk::config::load("state", ...)`, so every key is also an environment
//! variable: `PLANTD_STATE_DB`, `PLANTD_STATE_BROKER_ENDPOINT`, `PLANTD_STATE_HEALTH_PORT`,
//! `PLANTD_STATE_DURABILITY`, `PLANTD_STATE_LIMITS__MAX_VALUE_BYTES`,
//! `PLANTD_STATE_BACKUP__INTERVAL_SECS`, `PLANTD_STATE_INTEGRITY_CHECK_INTERVAL_SECS`,
//! `PLANTD_STATE_STORE=postgres`, `PLANTD_STATE_POSTGRES__DSN`,
//! `PLANTD_STATE_POSTGRES__PASSWORD_FILE`, ...

use std::path::PathBuf;

use plantd_worker_sdk::auth::AuthConfig;
use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

use crate::backup::BackupConfig;
use crate::ops::Limits;
use crate::store::{Backend, Durability};

/// Configuration of the state service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateConfig {
    /// Which database holds the state (`PLANTD_STATE_STORE`): `sqlite` (default, the `db` file)
    /// or `postgres` (the `postgres` block; several state services may share it).
    pub store: Backend,
    /// SQLite database file (`PLANTD_STATE_DB`), with `store: sqlite`.
    pub db: PathBuf,
    /// PostgreSQL connection, with `store: postgres` (`PLANTD_STATE_POSTGRES__DSN`,
    /// `PLANTD_STATE_POSTGRES__PASSWORD_FILE`, `PLANTD_STATE_POSTGRES__POOL_SIZE`). The password
    /// is never logged and `--print-config` shows it as `***`.
    pub postgres: plantd_pg_util::PostgresConfig,
    /// Broker MDP endpoint (`PLANTD_STATE_BROKER_ENDPOINT`).
    /// Several brokers, comma-separated, get one worker session set each (DESIGN.md §8).
    pub broker_endpoint: String,
    /// MDP version spoken to the broker (`PLANTD_STATE_PROTOCOL`): `0.2` (default), `0.1`
    /// (zguide brokers) or `go`.
    pub protocol: Dialect,
    /// Worker sessions per broker.
    pub concurrency: usize,
    /// Requests each session may hold at once (plantd's credit extension; 1 is plain MDP). Above
    /// 1, held requests run in parallel, so more writes share each group commit.
    pub credit: u32,
    /// Heartbeat interval towards the broker, in milliseconds.
    pub heartbeat_ms: u64,
    /// Missed heartbeats before the broker connection counts as lost.
    pub liveness: u32,
    /// Address of `/healthz` and `/metrics`.
    pub health_host: String,
    /// Port of `/healthz` and `/metrics` (`PLANTD_STATE_HEALTH_PORT`).
    pub health_port: u16,
    /// Seconds between database-writable probes for `/healthz`.
    pub probe_interval_secs: u64,
    /// Seconds between `PRAGMA quick_check` runs while serving (a damaged file turns the
    /// `database` check DOWN); `0` disables them. The file is always checked at startup.
    pub integrity_check_interval_secs: u64,
    /// Largest the database may grow to, in bytes; writes that need more fail with
    /// `STORAGE_ERROR` as on a full disk. `0` = no limit.
    pub max_db_bytes: u64,
    /// `normal` (`synchronous=NORMAL`) or `full` (`synchronous=FULL`).
    pub durability: Durability,
    /// Size limits.
    pub limits: Limits,
    /// Scheduled backups.
    pub backup: BackupConfig,
    /// Frontend of the `state` bus for change notifications; empty disables them.
    pub bus_endpoint: String,
    /// Token checks (`PLANTD_STATE_AUTH__MODE=required|off`, ...).
    pub auth: AuthConfig,
    /// CURVE keys (`curve.secret_key_file`, `curve.server_key` or `curve.server_key_file`;
    /// `PLANTD_STATE_CURVE__...`): with them every broker socket is a CURVE client. Unset: plain.
    pub curve: plantd_worker_sdk::curve::CurveConfig,
    /// Log filter (`info`, `plantd_state=debug`, ...).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            store: Backend::Sqlite,
            db: PathBuf::from("./plantd-state.db"),
            postgres: Default::default(),
            broker_endpoint: "tcp://127.0.0.1:9797".into(),
            protocol: Dialect::V02,
            concurrency: 4,
            credit: 1,
            heartbeat_ms: 2500,
            liveness: 3,
            health_host: "0.0.0.0".into(),
            health_port: 8082,
            probe_interval_secs: 5,
            integrity_check_interval_secs: 3600,
            max_db_bytes: 0,
            durability: Durability::Normal,
            limits: Limits::default(),
            backup: BackupConfig::default(),
            bus_endpoint: "tcp://127.0.0.1:11000".into(),
            auth: AuthConfig::default(),
            curve: Default::default(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

impl plantd_worker_sdk::service::ServiceConfig for StateConfig {
    fn log_level(&self) -> &str {
        &self.log_level
    }
    fn log_format(&self) -> plantd_worker_sdk::telemetry::LogFormat {
        self.log_format
    }
}
