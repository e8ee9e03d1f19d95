//! [`ProxyConfig`]: everything `plantd-proxy` can be told, with the defaults of DESIGN.md §3.
//!
//! Loaded with `plantd_worker_sdk::service::load_config("proxy", ..)`, so every key is also an
//! environment variable: `PLANTD_PROXY_BROKER_ENDPOINT`, `PLANTD_PROXY_HTTP_PORT`,
//! `PLANTD_PROXY_HEALTH_PORT`, `PLANTD_PROXY_RATE_LIMIT__PER_ADDRESS_PER_SECOND`,
//! `PLANTD_PROXY_CURVE__SECRET_KEY_FILE`, ... No file is needed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use plantd_worker_sdk::auth::AuthConfig;
use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

use crate::error::ProxyError;

/// Configuration of the HTTP proxy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyConfig {
    /// Broker MDP endpoint every call goes to (`PLANTD_PROXY_BROKER_ENDPOINT`).
    pub broker_endpoint: String,
    /// MDP version spoken to the broker: `0.2` (default; needed for streamed PARTIALs), `0.1` or
    /// `go`.
    pub protocol: Dialect,
    /// Address the HTTP API listens on (`PLANTD_PROXY_HTTP_HOST`).
    pub http_host: String,
    /// Port of the HTTP API (`PLANTD_PROXY_HTTP_PORT`).
    pub http_port: u16,
    /// Address of `/healthz` and `/metrics`.
    pub health_host: String,
    /// Port of `/healthz` and `/metrics` (`PLANTD_PROXY_HEALTH_PORT`).
    pub health_port: u16,
    /// The service whose requests are `[category, operation, json]` (DESIGN.md §5), and which
    /// receives the client's address as `ip_address` on `auth/*` calls.
    pub identity_service: String,
    /// Buses the proxy tails (`GET /api/v1/buses/{bus}`) and publishes to (`POST`).
    pub buses: Vec<BusEndpoints>,
    /// Peers whose `X-Forwarded-For` is believed (exact IP addresses). Anyone else's client
    /// address is the socket's.
    pub trusted_proxies: Vec<IpAddr>,
    /// Largest request body, in bytes; larger ones get `413`.
    pub max_body_bytes: usize,
    /// Timeout of a call to a service, in milliseconds (each reply message of a stream).
    pub request_timeout_ms: u64,
    /// Largest timeout a client may ask for with `X-Request-Timeout` (milliseconds).
    pub max_request_timeout_ms: u64,
    /// Most requests handled at once; beyond it `503`. Bus tails count only until they start.
    pub max_in_flight: usize,
    /// Most open HTTP connections; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// Longest a connection may take to send a request's headers (also the keep-alive idle
    /// time), in milliseconds: what keeps slow or silent clients from holding connections.
    pub header_read_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests before closing them, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Per-address and per-token rate limits.
    pub rate_limit: RateLimitConfig,
    /// Cross-origin requests (off by default).
    pub cors: CorsConfig,
    /// Token checks the proxy does itself: `bus:publish` on `POST /api/v1/buses/...`. Calls to
    /// services are checked by the services, with the token the proxy passes on.
    pub auth: AuthConfig,
    /// CURVE keys (`curve.secret_key_file`, `curve.server_key` or `curve.server_key_file`;
    /// `PLANTD_PROXY_CURVE__...`): with them every broker socket is a CURVE client. Unset: plain.
    pub curve: plantd_worker_sdk::curve::CurveConfig,
    /// The web dashboard served at `/` (`docs/dashboard.md`).
    pub dashboard: DashboardConfig,
    /// Log filter (`info`, `plantd_proxy=debug`, ...).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

/// One bus as the proxy reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusEndpoints {
    /// Bus name in the URL (`state`, `event`, `metric`).
    pub name: String,
    /// Where publishers connect (XSUB); empty: publishing to this bus is refused.
    pub frontend: String,
    /// Where subscribers connect (XPUB).
    pub backend: String,
}

/// The web dashboard: browser sessions, the MMI poll, the health of the other processes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DashboardConfig {
    /// Serve the dashboard at `/` (`PLANTD_PROXY_DASHBOARD__ENABLED`).
    pub enabled: bool,
    /// How often the proxy asks the broker's MMI, once for every open page together
    /// (`PLANTD_PROXY_DASHBOARD__POLL_MS`).
    pub poll_ms: u64,
    /// How much throughput history the proxy keeps, in seconds.
    pub history_secs: u64,
    /// Add `Secure` to the session cookie: set it when browsers reach the proxy over TLS (a
    /// TLS-terminating reverse proxy in front).
    pub secure_cookie: bool,
    /// A session not used for this long ends, in seconds (it also ends with its refresh token).
    pub session_idle_secs: u64,
    /// Most sessions held at once; a login beyond it ends the least recently used one.
    pub max_sessions: usize,
    /// `/healthz` URLs shown on the overview, by process name (`plantd up` fills in its own).
    pub health: Vec<HealthTarget>,
}

/// One process whose `/healthz` the dashboard shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthTarget {
    /// The process's name (`broker`, `state`, ...).
    pub name: String,
    /// Its `/healthz` URL (`http://127.0.0.1:8081/healthz`).
    pub url: String,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            poll_ms: 1000,
            history_secs: 600,
            secure_cookie: false,
            session_idle_secs: 8 * 3600,
            max_sessions: 10_000,
            health: Vec::new(),
        }
    }
}

/// Token-bucket rate limits; `0` per second switches a limit off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Requests per second each client address may make.
    pub per_address_per_second: u32,
    /// Requests one address may make at once above the rate.
    pub per_address_burst: u32,
    /// Requests per second each bearer token may make.
    pub per_token_per_second: u32,
    /// Requests one token may make at once above the rate.
    pub per_token_burst: u32,
}

/// Which browser origins may call the API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorsConfig {
    /// Allowed origins (`https://dash.example`), or `["*"]` for any. Empty: CORS off, browsers
    /// on other origins are refused by their own same-origin rules.
    pub allowed_origins: Vec<String>,
    /// Seconds a browser may cache a preflight answer.
    pub max_age_secs: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_address_per_second: 1000,
            per_address_burst: 2000,
            per_token_per_second: 1000,
            per_token_burst: 2000,
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            broker_endpoint: "tcp://127.0.0.1:9797".into(),
            protocol: Dialect::V02,
            http_host: "127.0.0.1".into(),
            http_port: 8080,
            health_host: "0.0.0.0".into(),
            health_port: 8085,
            identity_service: "org.plantd.Identity".into(),
            buses: plantd_worker_sdk::bus::DEFAULT_BUSES
                .iter()
                .map(|(name, frontend, backend)| BusEndpoints {
                    name: (*name).to_owned(),
                    frontend: format!("tcp://127.0.0.1:{frontend}"),
                    backend: format!("tcp://127.0.0.1:{backend}"),
                })
                .collect(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024 * 1024,
            request_timeout_ms: 5_000,
            max_request_timeout_ms: 60_000,
            max_in_flight: 1024,
            max_connections: 10_000,
            header_read_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            rate_limit: RateLimitConfig::default(),
            cors: CorsConfig::default(),
            auth: AuthConfig::default(),
            curve: Default::default(),
            dashboard: DashboardConfig::default(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

impl ProxyConfig {
    /// Rejects values that would make the proxy misbehave.
    pub fn validate(&self) -> Result<(), ProxyError> {
        let invalid = |reason: String| Err(ProxyError::Config(reason));
        if self.broker_endpoint.trim().is_empty() {
            return invalid("broker_endpoint must not be empty".into());
        }
        for (i, bus) in self.buses.iter().enumerate() {
            if bus.name.is_empty() || bus.backend.is_empty() {
                return invalid(format!("bus #{i} needs a name and a backend"));
            }
            if self.buses[..i].iter().any(|b| b.name == bus.name) {
                return invalid(format!("bus {:?} is listed twice", bus.name));
            }
        }
        if self.max_in_flight == 0 || self.max_connections == 0 || self.max_body_bytes == 0 {
            return invalid(
                "max_in_flight, max_connections and max_body_bytes must be at least 1".into(),
            );
        }
        if self.request_timeout_ms == 0 || self.max_request_timeout_ms < self.request_timeout_ms {
            return invalid(
                "request_timeout_ms must be at least 1 and at most max_request_timeout_ms".into(),
            );
        }
        let dashboard = &self.dashboard;
        if dashboard.poll_ms < 50 || dashboard.poll_ms > 60_000 {
            return invalid("dashboard.poll_ms must be between 50 and 60000".into());
        }
        if dashboard.history_secs == 0 || dashboard.history_secs > 86_400 {
            return invalid("dashboard.history_secs must be between 1 and 86400".into());
        }
        if dashboard.session_idle_secs == 0 || dashboard.max_sessions == 0 {
            return invalid(
                "dashboard.session_idle_secs and dashboard.max_sessions must be at least 1".into(),
            );
        }
        for target in &dashboard.health {
            if target.name.is_empty()
                || !(target.url.starts_with("http://") || target.url.starts_with("https://"))
            {
                return invalid(format!(
                    "dashboard.health entry {:?} needs a name and an http(s) URL",
                    target.name
                ));
            }
        }
        if self.header_read_timeout_ms == 0 {
            return invalid("header_read_timeout_ms must be at least 1".into());
        }
        self.http_addr()?;
        self.health_addr().map(|_| ())
    }

    /// The HTTP API's listen address.
    pub fn http_addr(&self) -> Result<SocketAddr, ProxyError> {
        socket_addr("http_host", &self.http_host, self.http_port)
    }

    /// The `/healthz` and `/metrics` listen address.
    pub fn health_addr(&self) -> Result<SocketAddr, ProxyError> {
        socket_addr("health_host", &self.health_host, self.health_port)
    }

    /// The default timeout of a call.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The largest timeout `X-Request-Timeout` may ask for.
    pub fn max_request_timeout(&self) -> Duration {
        Duration::from_millis(self.max_request_timeout_ms)
    }
}

fn socket_addr(key: &str, host: &str, port: u16) -> Result<SocketAddr, ProxyError> {
    let ip: IpAddr = host
        .parse()
        .map_err(|_| ProxyError::Config(format!("{key} {host:?} is not an IP address")))?;
    Ok(SocketAddr::new(ip, port))
}

impl plantd_worker_sdk::service::ServiceConfig for ProxyConfig {
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
    fn defaults_follow_the_design() {
        let c = ProxyConfig::default();
        assert_eq!(c.http_port, 8080);
        assert_eq!(c.health_port, 8085);
        assert_eq!(c.broker_endpoint, "tcp://127.0.0.1:9797");
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert!(c.cors.allowed_origins.is_empty(), "CORS is off by default");
        let names: Vec<_> = c.buses.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["state", "event", "metric"]);
        assert_eq!(c.buses[2].frontend, "tcp://127.0.0.1:13000");
        assert_eq!(c.buses[2].backend, "tcp://127.0.0.1:13001");
        c.validate().unwrap();
    }

    #[test]
    fn env_sets_ports_and_nested_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PLANTD_PROXY_HTTP_PORT", "9080");
            jail.set_env("PLANTD_PROXY_RATE_LIMIT__PER_TOKEN_PER_SECOND", "7");
            jail.set_env("PLANTD_PROXY_CURVE__SECRET_KEY_FILE", "/tmp/proxy.key");
            let (c, _): (ProxyConfig, _) =
                plantd_worker_sdk::service::load_config(crate::SERVICE_NAME, None, NoFlags {})
                    .unwrap();
            assert_eq!(c.http_port, 9080);
            assert_eq!(c.rate_limit.per_token_per_second, 7);
            assert_eq!(
                c.curve.secret_key_file.as_deref(),
                Some(std::path::Path::new("/tmp/proxy.key"))
            );
            Ok(())
        });
    }

    #[test]
    fn nonsense_is_rejected() {
        let mut c = ProxyConfig::default();
        c.buses.push(c.buses[0].clone());
        assert!(c.validate().is_err());
        let c = ProxyConfig {
            request_timeout_ms: 90_000,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = ProxyConfig {
            http_host: "localhost".into(),
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }
}
