//! The NATS connection: [`connect`] turns [`NatsSettings`] into an `async_nats::Client` with the
//! configured credentials and TLS, retrying the first connection and every reconnection
//! forever (async-nats does the reconnecting and resubscribing), and reports every state change
//! in the log and in [`BridgeMetrics`]. Credentials go to async-nats only, never to a log line.

use std::time::Duration;

use async_nats::{ConnectOptions, Event};

use crate::config::NatsSettings;
use crate::error::BridgeError;
use crate::metrics::BridgeMetrics;

/// Connects (in the background: the client is returned at once and is `Pending` until the first
/// connection succeeds) to the servers of `settings`, named `name` in the server's monitoring.
pub async fn connect(
    settings: &NatsSettings,
    name: &str,
    metrics: &BridgeMetrics,
) -> Result<async_nats::Client, BridgeError> {
    let mut options = ConnectOptions::new();
    if let Some(token) = &settings.token {
        options = options.token(token.expose().to_owned());
    }
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(seed) = &settings.nkey_seed {
        options = options.nkey(seed.expose().to_owned());
    }
    if let Some(path) = &settings.credentials_file {
        options = options.credentials_file(path).await.map_err(|e| {
            BridgeError::Nats(format!(
                "cannot read nats.credentials_file {}: {e}",
                path.display()
            ))
        })?;
    }
    let tls = &settings.tls;
    if tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let max_delay = Duration::from_millis(settings.reconnect_max_delay_ms.max(1));
    let events = metrics.clone();
    let servers: Vec<String> = settings
        .url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let shown = servers.join(",");
    let addrs: Vec<async_nats::ServerAddr> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // Not the text itself: it might carry a password.
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| BridgeError::Config(format!("nats.url, server #{}: {e}", i + 1)))
        })
        .collect::<Result<_, _>>()?;
    if addrs.iter().any(|a| a.has_user_pass()) {
        return Err(BridgeError::Config(
            "nats.url must not carry credentials (they would show in logs and --print-config): \
             use nats.user and nats.password"
                .into(),
        ));
    }
    let loopback = |host: &str| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    for addr in &addrs {
        if !tls.required && !addr.tls_required() && !loopback(addr.host()) {
            tracing::warn!(
                server = %addr.as_url_str(),
                "NATS connection beyond loopback without TLS: bus traffic and credentials travel \
                 in plaintext (set nats.tls.required or use a tls:// URL)"
            );
        }
    }
    let options = options
        .name(name)
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .ping_interval(Duration::from_millis(settings.ping_interval_ms))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| {
            // 0 ms, then doubling from 10 ms up to the configured maximum.
            let exp = attempts.saturating_sub(1).min(20) as u32;
            let delay = Duration::from_millis(if attempts <= 1 { 0 } else { 10 << exp });
            delay.min(max_delay)
        })
        .event_callback(move |event| {
            let metrics = events.clone();
            async move { on_event(&metrics, event) }
        });
    tracing::info!(servers = %shown, "connecting to NATS");
    options
        .connect(addrs)
        .await
        .map_err(|e| BridgeError::Nats(format!("cannot set up the connection to {shown}: {e}")))
}

fn on_event(metrics: &BridgeMetrics, event: Event) {
    let label = match &event {
        Event::Connected => {
            metrics.connected.set(1);
            tracing::info!("connected to NATS");
            "connected"
        }
        Event::Disconnected => {
            metrics.connected.set(0);
            tracing::warn!("disconnected from NATS; reconnecting");
            "disconnected"
        }
        Event::LameDuckMode => {
            tracing::warn!("NATS server entered lame duck mode");
            "lame_duck"
        }
        Event::Draining => "draining",
        Event::Closed => {
            metrics.connected.set(0);
            tracing::warn!("NATS connection closed");
            "closed"
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!(
                sid,
                "NATS subscription is a slow consumer: messages dropped"
            );
            "slow_consumer"
        }
        Event::ServerError(e) => {
            tracing::error!(error = %e, "NATS server error");
            "server_error"
        }
        Event::ClientError(e) => {
            tracing::error!(error = %e, "NATS client error");
            "client_error"
        }
    };
    metrics.connection_events.with_label_values(&[label]).inc();
}
