//! [`BridgeConfig`]: everything `plantd-bridge-nats` can be told (`docs/bridge-nats.md`).
//!
//! Loaded with `plantd_worker_sdk::service::load_config("bridge-nats", ..)`, so every key is also
//! an environment variable: `PLANTD_BRIDGE_NATS_BRIDGE_ID`, `PLANTD_BRIDGE_NATS_NATS__URL`,
//! `PLANTD_BRIDGE_NATS_NATS__PASSWORD`, `PLANTD_BRIDGE_NATS_JETSTREAM__STREAM`,
//! `PLANTD_BRIDGE_NATS_HEALTH_PORT`, ... and the file is `bridge-nats.yaml`. A key no setting
//! reads stops the bridge at startup, naming it (as for every plantd service).
//!
//! Credentials ([`Secret`]) are never printed: `--print-config` and `Debug` show `<redacted>`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use plantd_worker_sdk::curve::CurveConfig;
use plantd_worker_sdk::telemetry::LogFormat;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::BridgeError;
use crate::mapping;

/// The default health port (DESIGN.md §3 continues 8081-8087 with 8088).
pub const DEFAULT_HEALTH_PORT: u16 = 8088;

/// Configuration of the NATS bridge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BridgeConfig {
    /// This bridge's origin id, carried in the `plantd-origin` header of what it exports; it
    /// ignores NATS messages carrying its own id. `[A-Za-z0-9_-]`, at most 64 characters. Empty
    /// (the default): `<hostname>-<pid>`, unique among running bridges but new on every start,
    /// which is why JetStream, whose stream outlives a restart, needs it set explicitly.
    pub bridge_id: String,
    /// The NATS server(s) and credentials.
    pub nats: NatsSettings,
    /// How topics become subjects and back.
    pub mapping: SubjectMapping,
    /// The buses bridged, with what each one exports and imports.
    pub buses: Vec<BridgedBus>,
    /// JetStream (durable) instead of core NATS (at most once). Unset: core NATS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamSettings>,
    /// Most exported messages waiting for NATS; beyond it they are dropped and counted
    /// (`reason="buffer_full"`). With core NATS a message is dropped at once while NATS is down.
    pub max_pending: usize,
    /// NATS messages that went through this many bridges already are dropped
    /// (`reason="hop_limit"`).
    pub max_hops: u32,
    /// How long an imported message is remembered, in milliseconds, so that this bridge does not
    /// export it again when its own bus subscription hands it back.
    pub loop_window_ms: u64,
    /// Most imported messages remembered at once (oldest forgotten first).
    pub loop_window_max: usize,
    /// After a bus publisher connects, how long the bridge waits (milliseconds) before
    /// publishing on it, so the broker's subscriptions have reached it (PUB/SUB's slow joiner).
    pub bus_settle_ms: u64,
    /// Address of `/healthz` and `/metrics`.
    pub health_host: String,
    /// Port of `/healthz` and `/metrics` (`PLANTD_BRIDGE_NATS_HEALTH_PORT`).
    pub health_port: u16,
    /// CURVE keys for the bus sockets (`curve.secret_key_file`, `curve.server_key[_file]`).
    pub curve: CurveConfig,
    /// Log filter (`info`, `plantd_bridge_nats=debug`, ...).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

/// Where NATS is and how to authenticate. At most one of `token`, `user`/`password`,
/// `nkey_seed` and `credentials_file`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated: `nats://127.0.0.1:4222`, `tls://nats.example:4222`.
    pub url: String,
    /// User name (with `password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password (with `user`); never printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Token; never printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// NKey seed (`SU...`); never printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey_seed: Option<Secret>,
    /// A `.creds` file (JWT and NKey seed), as `nsc` writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// TLS to the server.
    pub tls: NatsTls,
    /// Connection timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest wait between reconnect attempts, milliseconds (attempts back off up to it).
    pub reconnect_max_delay_ms: u64,
    /// Interval of client pings, which notice a dead connection, milliseconds.
    pub ping_interval_ms: u64,
}

/// TLS settings towards NATS (`tls://` URLs use TLS too).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsTls {
    /// Refuse a connection without TLS.
    pub required: bool,
    /// PEM file of CA certificates to trust besides the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (with `key_file`), for servers that verify clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// The prefix rewrite between bus topics and NATS subjects: a topic starting with
/// `topic_prefix` becomes `subject_prefix` + the rest, and back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubjectMapping {
    /// Bus side, matched byte for byte (`org.plantd.`).
    pub topic_prefix: String,
    /// NATS side: empty or whole tokens ending in `.` (`plantd.`).
    pub subject_prefix: String,
}

/// One bus and what crosses it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BridgedBus {
    /// A name for logs, metrics and health checks (`metric`).
    pub name: String,
    /// Where the bridge publishes what it imports (the bus's XSUB side).
    pub frontend: String,
    /// Where the bridge subscribes to what it exports (the bus's XPUB side).
    pub backend: String,
    /// Topic prefixes exported to NATS (bus → NATS); each must start with
    /// `mapping.topic_prefix`.
    pub export: Vec<String>,
    /// Subject prefixes imported from NATS (NATS → bus): empty or whole tokens ending in `.`,
    /// starting with `mapping.subject_prefix`; the bridge subscribes to `<prefix>>`.
    pub import: Vec<String>,
}

/// JetStream: exports are published with acks into `stream`, imports read from a durable
/// consumer, so what was published while this bridge was down is delivered when it returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JetStreamSettings {
    /// The stream's name (no `.`, `*`, `>`, `/`, `\` or whitespace).
    pub stream: String,
    /// Subjects the stream stores when the bridge creates it; empty: `<subject_prefix>>`.
    pub subjects: Vec<String>,
    /// Create the stream if it does not exist (file storage), else require it.
    pub create: bool,
    /// Age limit of the stream's messages when the bridge creates it, seconds (0: none).
    pub max_age_secs: u64,
    /// Prefix of this bridge's durable consumer names; empty: `plantd-bridge-<bridge_id>`.
    pub durable: String,
    /// How long a publish waits for the stream's ack, milliseconds.
    pub ack_timeout_ms: u64,
}

/// A credential read from the configuration: usable by the code, shown as `<redacted>` by
/// `Serialize` (`--print-config`) and `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself, for the NATS connection only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What a [`Secret`] prints as.
pub const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        let metric = plantd_worker_sdk::bus::DEFAULT_BUSES[2];
        BridgeConfig {
            bridge_id: String::new(),
            nats: NatsSettings::default(),
            mapping: SubjectMapping::default(),
            buses: vec![BridgedBus {
                name: metric.0.to_owned(),
                frontend: format!("tcp://127.0.0.1:{}", metric.1),
                backend: format!("tcp://127.0.0.1:{}", metric.2),
                export: vec!["org.plantd.metric.".to_owned()],
                import: vec!["plantd.metric.".to_owned()],
            }],
            jetstream: None,
            max_pending: 10_000,
            max_hops: 8,
            loop_window_ms: 30_000,
            loop_window_max: 100_000,
            bus_settle_ms: 500,
            health_host: "0.0.0.0".into(),
            health_port: DEFAULT_HEALTH_PORT,
            curve: CurveConfig::default(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: "nats://127.0.0.1:4222".into(),
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            credentials_file: None,
            tls: NatsTls::default(),
            connect_timeout_ms: 5_000,
            reconnect_max_delay_ms: 4_000,
            ping_interval_ms: 20_000,
        }
    }
}

impl Default for SubjectMapping {
    fn default() -> Self {
        SubjectMapping {
            topic_prefix: "org.plantd.".into(),
            subject_prefix: "plantd.".into(),
        }
    }
}

impl Default for JetStreamSettings {
    fn default() -> Self {
        JetStreamSettings {
            stream: String::new(),
            subjects: Vec::new(),
            create: true,
            max_age_secs: 24 * 3600,
            durable: String::new(),
            ack_timeout_ms: 5_000,
        }
    }
}

/// Whether `id` is a usable bridge id or NATS name token: `[A-Za-z0-9_-]{1,64}`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl BridgeConfig {
    /// Rejects settings the bridge cannot work with, naming the setting.
    pub fn validate(&self) -> Result<(), BridgeError> {
        let invalid = |reason: String| Err(BridgeError::Config(reason));
        if !self.bridge_id.is_empty() && !valid_id(&self.bridge_id) {
            return invalid(format!(
                "bridge_id {:?} must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
                self.bridge_id
            ));
        }
        if self.nats.url.trim().is_empty() {
            return invalid("nats.url must not be empty".into());
        }
        self.nats.validate()?;
        if let Err(why) = mapping::check_subject_prefix(&self.mapping.subject_prefix) {
            return invalid(format!(
                "mapping.subject_prefix {:?}: {why}",
                self.mapping.subject_prefix
            ));
        }
        if self.buses.is_empty() {
            return invalid("buses must list at least one bus to bridge".into());
        }
        for (i, bus) in self.buses.iter().enumerate() {
            if bus.name.is_empty() {
                return invalid(format!("bus #{i} needs a name"));
            }
            if self.buses[..i].iter().any(|b| b.name == bus.name) {
                return invalid(format!("bus {:?} is listed twice", bus.name));
            }
            if bus.export.is_empty() && bus.import.is_empty() {
                return invalid(format!(
                    "bus {:?} neither exports nor imports anything (set export and/or import)",
                    bus.name
                ));
            }
            if !bus.export.is_empty() && bus.backend.trim().is_empty() {
                return invalid(format!("bus {:?} exports, so it needs a backend", bus.name));
            }
            if !bus.import.is_empty() && bus.frontend.trim().is_empty() {
                return invalid(format!(
                    "bus {:?} imports, so it needs a frontend",
                    bus.name
                ));
            }
            for prefix in &bus.export {
                if !prefix.starts_with(&self.mapping.topic_prefix) {
                    return invalid(format!(
                        "bus {:?}: export prefix {prefix:?} does not start with \
                         mapping.topic_prefix {:?}, so none of its topics could become a subject",
                        bus.name, self.mapping.topic_prefix
                    ));
                }
            }
            for prefix in &bus.import {
                if let Err(why) = mapping::check_subject_prefix(prefix) {
                    return invalid(format!(
                        "bus {:?}: import prefix {prefix:?}: {why}",
                        bus.name
                    ));
                }
                if !prefix.starts_with(&self.mapping.subject_prefix) {
                    return invalid(format!(
                        "bus {:?}: import prefix {prefix:?} does not start with \
                         mapping.subject_prefix {:?}, so none of its subjects could become a topic",
                        bus.name, self.mapping.subject_prefix
                    ));
                }
            }
        }
        if let Some(js) = &self.jetstream {
            if self.bridge_id.is_empty() {
                return invalid(
                    "jetstream needs a fixed bridge_id: the stream outlives a restart, and a \
                     bridge must recognise what it exported before it restarted"
                        .into(),
                );
            }
            let bad_name = |s: &str| {
                s.is_empty()
                    || s.chars()
                        .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
            };
            if bad_name(&js.stream) {
                return invalid(format!(
                    "jetstream.stream {:?} must be a non-empty name without '.', '*', '>', \
                     '/', '\\' or whitespace",
                    js.stream
                ));
            }
            if !js.durable.is_empty() && !valid_id(&js.durable) {
                return invalid(format!(
                    "jetstream.durable {:?} must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
                    js.durable
                ));
            }
            if js.ack_timeout_ms == 0 {
                return invalid("jetstream.ack_timeout_ms must be at least 1".into());
            }
        }
        if self.max_pending == 0 {
            return invalid("max_pending must be at least 1".into());
        }
        if self.max_hops == 0 {
            return invalid("max_hops must be at least 1".into());
        }
        if self.loop_window_ms == 0 || self.loop_window_max == 0 {
            return invalid("loop_window_ms and loop_window_max must be at least 1".into());
        }
        self.health_addr().map(|_| ())
    }

    /// The origin id in use: `bridge_id`, or `<hostname>-<pid>`.
    pub fn origin_id(&self) -> String {
        if !self.bridge_id.is_empty() {
            return self.bridge_id.clone();
        }
        let host: String = sysinfo::System::host_name()
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect();
        let host = if host.is_empty() {
            "bridge".into()
        } else {
            host
        };
        format!("{host}-{}", std::process::id())
    }

    /// The `/healthz` and `/metrics` listen address.
    pub fn health_addr(&self) -> Result<SocketAddr, BridgeError> {
        let ip: IpAddr = self.health_host.parse().map_err(|_| {
            BridgeError::Config(format!(
                "health_host {:?} is not an IP address",
                self.health_host
            ))
        })?;
        Ok(SocketAddr::new(ip, self.health_port))
    }

    /// [`loop_window_ms`](Self::loop_window_ms) as a duration.
    pub fn loop_window(&self) -> Duration {
        Duration::from_millis(self.loop_window_ms)
    }
}

impl NatsSettings {
    fn validate(&self) -> Result<(), BridgeError> {
        let invalid = |reason: &str| Err(BridgeError::Config(reason.to_owned()));
        let methods = [
            self.token.is_some(),
            self.user.is_some() || self.password.is_some(),
            self.nkey_seed.is_some(),
            self.credentials_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return invalid(
                "set at most one of nats.token, nats.user/nats.password, nats.nkey_seed and \
                 nats.credentials_file",
            );
        }
        if self.user.is_some() != self.password.is_some() {
            return invalid("nats.user and nats.password go together");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid("nats.tls.cert_file and nats.tls.key_file go together");
        }
        if self.connect_timeout_ms == 0 || self.ping_interval_ms == 0 {
            return invalid("nats.connect_timeout_ms and nats.ping_interval_ms must be at least 1");
        }
        Ok(())
    }
}

impl plantd_worker_sdk::service::ServiceConfig for BridgeConfig {
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
    fn defaults_bridge_the_metric_bus_both_ways() {
        let c = BridgeConfig::default();
        assert_eq!(c.health_port, 8088);
        assert_eq!(c.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(c.buses.len(), 1);
        assert_eq!(c.buses[0].backend, "tcp://127.0.0.1:13001");
        assert_eq!(c.buses[0].export, ["org.plantd.metric."]);
        assert_eq!(c.buses[0].import, ["plantd.metric."]);
        c.validate().unwrap();
        let id = c.origin_id();
        assert!(valid_id(&id), "{id}");
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
    }

    #[test]
    fn env_sets_nested_keys_and_secrets_stay_hidden() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PLANTD_BRIDGE_NATS_NATS__URL", "nats://10.0.0.1:4222");
            jail.set_env("PLANTD_BRIDGE_NATS_NATS__TOKEN", "s3cr3t-token");
            jail.set_env("PLANTD_BRIDGE_NATS_JETSTREAM__STREAM", "PLANTD");
            jail.set_env("PLANTD_BRIDGE_NATS_BRIDGE_ID", "site-a");
            let (c, _): (BridgeConfig, _) =
                plantd_worker_sdk::service::load_config(crate::SERVICE_NAME, None, NoFlags {})
                    .unwrap();
            assert_eq!(c.nats.url, "nats://10.0.0.1:4222");
            assert_eq!(c.nats.token.as_ref().unwrap().expose(), "s3cr3t-token");
            let js = c.jetstream.as_ref().unwrap();
            assert_eq!((js.stream.as_str(), js.create), ("PLANTD", true));
            c.validate().unwrap();
            let shown = serde_json::to_string(&c).unwrap() + &format!("{c:?}");
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
            Ok(())
        });
    }

    #[test]
    fn nonsense_is_rejected_by_name() {
        let refused = |tweak: &dyn Fn(&mut BridgeConfig), needle: &str| {
            let mut c = BridgeConfig::default();
            tweak(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{needle:?} not in {e}");
        };
        refused(&|c| c.bridge_id = "a b".into(), "bridge_id");
        refused(
            &|c| c.buses[0].import = vec!["plantd.metric".into()],
            "end with '.'",
        );
        refused(
            &|c| c.buses[0].import = vec!["plantd.*.".into()],
            "import prefix",
        );
        refused(
            &|c| c.buses[0].import = vec!["other.".into()],
            "subject_prefix",
        );
        refused(
            &|c| c.buses[0].export = vec!["com.example.".into()],
            "topic_prefix",
        );
        refused(&|c| c.buses.clear(), "at least one bus");
        refused(
            &|c| {
                c.buses[0].export.clear();
                c.buses[0].import.clear()
            },
            "neither exports nor imports",
        );
        refused(
            &|c| c.jetstream = Some(JetStreamSettings::default()),
            "fixed bridge_id",
        );
        refused(
            &|c| {
                c.bridge_id = "a".into();
                c.jetstream = Some(JetStreamSettings {
                    stream: "a.b".into(),
                    ..Default::default()
                })
            },
            "jetstream.stream",
        );
        refused(
            &|c| {
                c.nats.token = Some(Secret::new("t"));
                c.nats.nkey_seed = Some(Secret::new("s"));
            },
            "at most one",
        );
        refused(&|c| c.nats.user = Some("u".into()), "go together");
        refused(&|c| c.max_pending = 0, "max_pending");
        refused(
            &|c| c.mapping.subject_prefix = "plantd".into(),
            "subject_prefix",
        );
    }
}
