//! The broker's configuration: every key, its default and its validation.
//!
//! Loaded with [`plantd_worker_sdk::config::load`]`("broker", ..)`, so each key can be set with
//! `PLANTD_BROKER_<KEY>` (for example `PLANTD_BROKER_HEARTBEAT_INTERVAL_MS`), a `broker.yaml`, or a
//! command-line flag. No file is needed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use plantd_worker_sdk::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;

/// Longest interval or time to live accepted, in milliseconds (a day).
const MAX_DURATION_MS: u64 = 86_400_000;

/// Default MDP endpoint: loopback only (protected mode, DESIGN.md §9).
pub const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:9797";

/// Default largest frame a peer may send (16 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: i64 = 16 * 1024 * 1024;

/// The `ZMQ_MAXMSGSIZE` value for a configured frame limit: `0` and `-1` both mean unlimited
/// (libzmq's own `0` would refuse every non-empty frame).
pub fn zmq_max_message_size(limit: i64) -> i64 {
    if limit <= 0 {
        -1
    } else {
        limit
    }
}

/// Everything the broker can be told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerConfig {
    /// ZeroMQ endpoint the ROUTER binds, for clients and workers alike.
    pub endpoint: String,
    /// Address `/healthz` and `/metrics` listen on.
    pub health_host: String,
    /// Port `/healthz` and `/metrics` listen on.
    pub health_port: u16,
    /// Log filter (an `EnvFilter` directive such as `info` or `plantd_broker=debug`).
    pub log_level: String,
    /// Log line format: `text` or `json`.
    pub log_format: LogFormat,
    /// How often the broker sends HEARTBEAT to every worker, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// How many intervals a worker may stay silent before it is considered dead.
    pub heartbeat_liveness: u32,
    /// Most requests one service may have waiting for a worker; more get a `503` reply.
    /// `0` means requests never wait: with no idle worker the reply is `503` at once.
    pub queue_limit: usize,
    /// Most bytes (service name and body) of requests one service may have waiting; a request
    /// that would go past it gets a `503` reply. `0`: unlimited.
    pub queue_limit_bytes: u64,
    /// Most bytes of requests one client may have waiting or in flight at workers; more get a
    /// `503` reply. `0`: unlimited.
    pub client_queue_limit_bytes: u64,
    /// How long a request may wait for a worker before it gets a `404`/`504` reply, in milliseconds.
    pub queue_ttl_ms: u64,
    /// How many times a request whose worker died is dispatched again before the client gets `500`.
    pub max_retries: u32,
    /// How long a service whose last worker left is remembered (so late requests get `504`, not
    /// `404`) before it is forgotten with its metrics, in milliseconds.
    pub service_linger_ms: u64,
    /// ZeroMQ send and receive high-water mark of the ROUTER socket, per peer (messages).
    pub socket_hwm: i32,
    /// Largest frame (message part) a peer may send, on the MDP socket and the bus sockets, in
    /// bytes; libzmq disconnects a peer that announces a bigger one before reading it. `0` or
    /// `-1`: unlimited.
    pub max_message_size: i64,
    /// libzmq I/O threads of the MDP socket's context: they frame, and with CURVE encrypt and
    /// decrypt, every message, so a broker on a machine with cores to spare under CURVE load
    /// may use more than the default one (libzmq's `ZMQ_IO_THREADS`, 1 to 64).
    pub io_threads: i32,
    /// How often the broker hands freed memory back to the operating system (glibc `malloc_trim`),
    /// in milliseconds; `0` never does.
    pub memory_trim_interval_ms: u64,
    /// The pub/sub buses (`bus.enabled`, `bus.high_water_mark`, `bus.buses`; see `docs/buses.md`).
    pub bus: crate::bus::BusSettings,
    /// Most requests one client may have waiting or in flight at workers; more get a `503`
    /// reply. `0`: unlimited.
    pub client_queue_limit: u64,
    /// CURVE (`curve.secret_key_file`, `curve.authorized_keys`, `curve.reload_interval_ms`; see
    /// `docs/security.md`).
    pub curve: crate::security::CurveSettings,
    /// Protected mode (`security.insecure`).
    pub security: crate::security::SecuritySettings,
    /// Request rate limit per client key, or per connection without CURVE
    /// (`rate_limit.requests_per_second`, `rate_limit.burst`).
    pub rate_limit: crate::security::rate::RateLimitSettings,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            endpoint: DEFAULT_ENDPOINT.into(),
            health_host: "0.0.0.0".into(),
            health_port: 8081,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            heartbeat_interval_ms: 2500,
            heartbeat_liveness: 3,
            queue_limit: 10_000,
            queue_limit_bytes: 256 * 1024 * 1024,
            client_queue_limit_bytes: 64 * 1024 * 1024,
            queue_ttl_ms: 30_000,
            max_retries: 3,
            service_linger_ms: 300_000,
            socket_hwm: 100_000,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            io_threads: 1,
            memory_trim_interval_ms: 10_000,
            bus: crate::bus::BusSettings::default(),
            client_queue_limit: 10_000,
            curve: crate::security::CurveSettings::default(),
            security: crate::security::SecuritySettings::default(),
            rate_limit: crate::security::rate::RateLimitSettings::default(),
        }
    }
}

impl BrokerConfig {
    /// Checks the values that would make the broker misbehave rather than fail to start.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let invalid = |reason: &str| Err(BrokerError::Config(reason.to_owned()));
        if self.endpoint.trim().is_empty() {
            return invalid("endpoint must not be empty");
        }
        // Upper bounds keep every deadline (`now + duration`) far from `Instant` overflow.
        if !(1..=MAX_DURATION_MS).contains(&self.heartbeat_interval_ms) {
            return invalid("heartbeat_interval_ms must be between 1 and 86400000 (a day)");
        }
        if !(1..=1000).contains(&self.heartbeat_liveness) {
            return invalid("heartbeat_liveness must be between 1 and 1000");
        }
        if !(1..=64).contains(&self.io_threads) {
            return invalid("io_threads must be between 1 and 64");
        }
        if !(1..=MAX_DURATION_MS).contains(&self.queue_ttl_ms) {
            return invalid("queue_ttl_ms must be between 1 and 86400000 (a day)");
        }
        if self.service_linger_ms > MAX_DURATION_MS {
            return invalid("service_linger_ms must be at most 86400000 (a day)");
        }
        if self.socket_hwm < 0 {
            return invalid("socket_hwm must not be negative (0 means unlimited)");
        }
        if self.memory_trim_interval_ms > MAX_DURATION_MS {
            return invalid("memory_trim_interval_ms must be at most 86400000 (a day)");
        }
        if self.max_message_size < -1 {
            return invalid("max_message_size must be a number of bytes, or 0 or -1 for unlimited");
        }
        self.bus.validate()?;
        self.curve.validate()?;
        self.health_addr().map(|_| ())
    }

    /// Every endpoint the broker binds for peers: the MDP endpoint and each active bus's.
    pub fn bound_endpoints(&self) -> Vec<&str> {
        let mut endpoints = vec![self.endpoint.as_str()];
        for bus in self.bus.active() {
            endpoints.extend([bus.frontend.as_str(), bus.backend.as_str()]);
            endpoints.extend(bus.capture.as_deref());
        }
        endpoints
    }

    /// Protected mode: without CURVE, the endpoints that would put plaintext on the network.
    /// Empty when CURVE is on or everything binds loopback.
    pub fn exposed_without_curve(&self) -> Vec<&str> {
        if self.curve.enabled() {
            return Vec::new();
        }
        crate::security::protected::exposed(self.bound_endpoints())
    }

    /// Refuses to start in protected mode (`exposed_without_curve` not empty, `security.insecure`
    /// not set), with a one-line explanation; with `insecure` returns the warning to report.
    pub fn check_protected_mode(&self) -> Result<Option<String>, BrokerError> {
        let exposed = self.exposed_without_curve();
        if exposed.is_empty() {
            return Ok(None);
        }
        let list = exposed.join(", ");
        if self.security.insecure {
            return Ok(Some(format!(
                "insecure: {list} bound without CURVE (security.insecure is set): anyone who can \
                 reach it can read the traffic and register any service"
            )));
        }
        Err(BrokerError::Config(format!(
            "protected mode: {list} is not a loopback address and CURVE is off; set \
             curve.secret_key_file and curve.authorized_keys (docs/security.md), bind \
             127.0.0.1, or set security.insecure: true to accept plaintext on the network"
        )))
    }

    /// The `/healthz` listen address.
    pub fn health_addr(&self) -> Result<SocketAddr, BrokerError> {
        let ip: IpAddr = self.health_host.parse().map_err(|_| {
            BrokerError::Config(format!(
                "health_host {:?} is not an IP address",
                self.health_host
            ))
        })?;
        Ok(SocketAddr::new(ip, self.health_port))
    }

    /// Interval between heartbeats.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// How long a silent worker lives: interval × liveness.
    pub fn worker_expiry(&self) -> Duration {
        self.heartbeat_interval()
            .saturating_mul(self.heartbeat_liveness)
    }

    /// How long a request may wait in a queue.
    pub fn queue_ttl(&self) -> Duration {
        Duration::from_millis(self.queue_ttl_ms)
    }

    /// How often freed memory is handed back, if at all.
    pub fn memory_trim_interval(&self) -> Option<Duration> {
        (self.memory_trim_interval_ms > 0)
            .then(|| Duration::from_millis(self.memory_trim_interval_ms))
    }

    /// How long a service is remembered after its last worker left.
    pub fn service_linger(&self) -> Duration {
        Duration::from_millis(self.service_linger_ms)
    }
}

impl plantd_worker_sdk::service::ServiceConfig for BrokerConfig {
    fn log_level(&self) -> &str {
        &self.log_level
    }
    fn log_format(&self) -> plantd_worker_sdk::telemetry::LogFormat {
        self.log_format
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        health_port: Option<u16>,
    }

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = BrokerConfig::default();
        assert_eq!(c.endpoint, "tcp://127.0.0.1:9797");
        assert_eq!(
            c.check_protected_mode().unwrap(),
            None,
            "loopback only by default"
        );
        assert_eq!(c.health_port, 8081);
        assert_eq!(c.worker_expiry(), Duration::from_millis(7500));
        assert_eq!(c.max_message_size, 16 * 1024 * 1024);
        c.validate().unwrap();
        for unlimited in [0, -1] {
            assert_eq!(zmq_max_message_size(unlimited), -1);
        }
        assert_eq!(zmq_max_message_size(1024), 1024);
        assert_eq!(
            c.memory_trim_interval(),
            Some(Duration::from_secs(10)),
            "trims by default"
        );
        let never = BrokerConfig {
            memory_trim_interval_ms: 0,
            ..Default::default()
        };
        assert_eq!(never.memory_trim_interval(), None);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn flag_beats_env_beats_file_beats_default() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "broker.yaml",
                "health_port: 1001\nqueue_limit: 7\nmax_retries: 9\n",
            )?;
            jail.set_env("PLANTD_BROKER_HEALTH_PORT", "1002");
            jail.set_env("PLANTD_BROKER_QUEUE_LIMIT", "8");
            jail.set_env("PLANTD_BROKER_MAX_MESSAGE_SIZE", "-1");
            jail.set_env("PLANTD_BROKER_CLIENT_QUEUE_LIMIT_BYTES", "4096");
            let c: BrokerConfig =
                plantd_worker_sdk::config::load("broker", None, Flags { health_port: None })
                    .unwrap();
            assert_eq!((c.health_port, c.queue_limit, c.max_retries), (1002, 8, 9));
            assert_eq!((c.max_message_size, c.client_queue_limit_bytes), (-1, 4096));
            c.validate().unwrap();
            assert_eq!(
                c.heartbeat_interval_ms, 2500,
                "untouched keys keep defaults"
            );
            let c: BrokerConfig = plantd_worker_sdk::config::load(
                "broker",
                None,
                Flags {
                    health_port: Some(1003),
                },
            )
            .unwrap();
            assert_eq!(c.health_port, 1003);
            Ok(())
        });
    }

    #[test]
    fn nonsense_values_are_rejected() {
        let bad = [
            BrokerConfig {
                heartbeat_interval_ms: 0,
                ..Default::default()
            },
            BrokerConfig {
                heartbeat_liveness: 0,
                ..Default::default()
            },
            BrokerConfig {
                queue_ttl_ms: 0,
                ..Default::default()
            },
            BrokerConfig {
                queue_ttl_ms: u64::MAX,
                ..Default::default()
            },
            BrokerConfig {
                heartbeat_liveness: u32::MAX,
                ..Default::default()
            },
            BrokerConfig {
                service_linger_ms: u64::MAX,
                ..Default::default()
            },
            BrokerConfig {
                max_message_size: -2,
                ..Default::default()
            },
            BrokerConfig {
                io_threads: 0,
                ..Default::default()
            },
            BrokerConfig {
                io_threads: 65,
                ..Default::default()
            },
            BrokerConfig {
                health_host: "not-an-ip".into(),
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(BrokerError::Config(_))), "{c:?}");
        }
    }
}
