//! `IdentityConfig`: everything `plantd-identity` can be told, with the defaults of DESIGN.md §3.
//!
//! Loaded with `plantd_worker_sdk::config::load("identity", ...)`, so every key is also an
//! environment variable: `PLANTD_IDENTITY_DB`, `PLANTD_IDENTITY_BROKER_ENDPOINT`,
//! `PLANTD_IDENTITY_HEALTH_PORT`, `PLANTD_IDENTITY_TOKENS__ACCESS_TTL_SECS`,
//! `PLANTD_IDENTITY_LOCKOUT__MAX_FAILURES`, `PLANTD_IDENTITY_RATE_LIMIT__PER_MINUTE`,
//! `PLANTD_IDENTITY_PASSWORD__MIN_LENGTH`, `PLANTD_IDENTITY_EVENT_ENDPOINT`,
//! `PLANTD_IDENTITY_BOOTSTRAP__ADMIN_PASSWORD_FILE`, ...
//!
//! Nothing here is a secret: the signing keys live in the database and the bootstrap password in
//! a file named here, so `--print-config` can show the whole struct.

use std::path::PathBuf;

use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

/// Configuration of the identity service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentityConfig {
    /// SQLite database file (`PLANTD_IDENTITY_DB`).
    pub db: PathBuf,
    /// Broker MDP endpoint (`PLANTD_IDENTITY_BROKER_ENDPOINT`).
    /// Several brokers, comma-separated, get one worker session set each (DESIGN.md §8).
    pub broker_endpoint: String,
    /// MDP version spoken to the broker: `0.2` (default), `0.1` or `go`.
    pub protocol: Dialect,
    /// Worker sessions, i.e. requests handled in parallel (each hashes passwords on its own
    /// handler thread).
    pub concurrency: usize,
    /// Heartbeat interval towards the broker, in milliseconds.
    pub heartbeat_ms: u64,
    /// Missed heartbeats before the broker connection counts as lost.
    pub liveness: u32,
    /// Address of `/healthz` and `/metrics`.
    pub health_host: String,
    /// Port of `/healthz` and `/metrics` (`PLANTD_IDENTITY_HEALTH_PORT`).
    pub health_port: u16,
    /// Seconds between database-writable probes for `/healthz`.
    pub probe_interval_secs: u64,
    /// Seconds between `PRAGMA quick_check` runs while serving; `0` disables them.
    pub integrity_check_interval_secs: u64,
    /// Frontend of the `event` bus where revocations, changes and audit events go; empty
    /// disables publishing.
    pub event_endpoint: String,
    /// CURVE keys (`curve.secret_key_file`, `curve.server_key` or `curve.server_key_file`;
    /// `PLANTD_IDENTITY_CURVE__...`): with them the worker and the event publisher are CURVE
    /// clients of the broker. Unset: plain.
    pub curve: plantd_worker_sdk::curve::CurveConfig,
    /// Token lifetimes.
    pub tokens: TokenConfig,
    /// Account lockout after failed logins.
    pub lockout: LockoutConfig,
    /// Per-source rate limit of `auth/login`, `auth/refresh` and `auth/token`.
    pub rate_limit: RateLimitConfig,
    /// Password policy (NIST SP 800-63B: length and a common-password list, no composition rules).
    pub password: PasswordPolicy,
    /// First-start bootstrap of the admin user.
    pub bootstrap: BootstrapConfig,
    /// Log filter (`info`, `plantd_identity=debug`, ...).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

/// Token lifetimes, in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// Access tokens (JWT), default 15 minutes.
    pub access_ttl_secs: u64,
    /// Refresh tokens, default 7 days; each refresh issues a new one with a fresh lifetime.
    pub refresh_ttl_secs: u64,
    /// Longest lifetime an API key may be given with `expires_in` (0 = no limit).
    pub max_api_key_ttl_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 7 * 24 * 3600,
            max_api_key_ttl_secs: 0,
        }
    }
}

/// `max_failures` failed logins within `window_secs` lock an account for `duration_secs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockoutConfig {
    /// Failures that lock the account (0 disables lockout).
    pub max_failures: u32,
    /// The window the failures are counted in.
    pub window_secs: u64,
    /// How long the account stays locked.
    pub duration_secs: u64,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            max_failures: 5,
            window_secs: 15 * 60,
            duration_secs: 15 * 60,
        }
    }
}

/// A token bucket per source: `burst` requests at once, refilled at `per_minute`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Sustained requests per minute per source (0 disables the limit).
    pub per_minute: u32,
    /// Requests a source may make at once.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_minute: 30,
            burst: 10,
        }
    }
}

/// What a password must be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PasswordPolicy {
    /// Fewest characters (NIST: at least 8).
    pub min_length: usize,
    /// Most characters (long passphrases are welcome; the cap bounds hashing work).
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_length: 8,
            max_length: 128,
        }
    }
}

/// The admin user created on first start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootstrapConfig {
    /// A file holding the admin's password (`PLANTD_IDENTITY_BOOTSTRAP__ADMIN_PASSWORD_FILE`).
    /// When unset, a random password is written once to `admin-password` beside the database.
    pub admin_password_file: Option<PathBuf>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            db: PathBuf::from("./plantd-identity.db"),
            broker_endpoint: "tcp://127.0.0.1:9797".into(),
            protocol: Dialect::V02,
            concurrency: 4,
            heartbeat_ms: 2500,
            liveness: 3,
            health_host: "0.0.0.0".into(),
            health_port: 8083,
            probe_interval_secs: 5,
            integrity_check_interval_secs: 3600,
            event_endpoint: "tcp://127.0.0.1:12000".into(),
            curve: Default::default(),
            tokens: TokenConfig::default(),
            lockout: LockoutConfig::default(),
            rate_limit: RateLimitConfig::default(),
            password: PasswordPolicy::default(),
            bootstrap: BootstrapConfig::default(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

impl plantd_worker_sdk::service::ServiceConfig for IdentityConfig {
    fn log_level(&self) -> &str {
        &self.log_level
    }
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}
