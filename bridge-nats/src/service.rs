//! [`run`]: the bridge as a whole. Validates the configuration, serves `/healthz` (checks
//! `nats_connection` and one per bus socket, `bus_<name>_export` / `bus_<name>_import`) and
//! `/metrics`, connects to NATS (setting up the JetStream stream if configured), opens the bus
//! sockets and runs the export and import tasks of [`crate::bridge`] until shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use plantd_worker_sdk::bus::{Publisher, Subscriber, DEFAULT_HIGH_WATER_MARK};
use plantd_worker_sdk::health::{self, Health};
use prometheus::Registry;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::bridge::{self, ConsumerSpec, ExportMode, Shared};
use crate::config::{BridgeConfig, JetStreamSettings};
use crate::error::BridgeError;
use crate::mapping::{RecentImports, SubjectMap};
use crate::metrics::BridgeMetrics;
use crate::nats;
use crate::Shutdown;

/// How many NATS messages wait for one bus's publisher.
const IMPORT_QUEUE: usize = 1024;
/// How many bus messages the subscription thread hands over at once.
const SUBSCRIPTION_QUEUE: usize = 1024;

/// Runs the bridge until `shutdown` is cancelled.
pub async fn run(config: BridgeConfig, shutdown: Shutdown) -> Result<(), BridgeError> {
    config.validate()?;
    let origin = config.origin_id();
    let registry = Registry::new();
    let metrics = BridgeMetrics::register(&registry)?;
    let health = Health::new(env!("CARGO_PKG_VERSION"));
    let nats_check = health.check("nats_connection");
    let curve = config
        .curve
        .client()
        .map_err(|e| BridgeError::Config(format!("curve: {e}")))?;
    // Every task stops when this function returns, however it returns.
    let local = shutdown.child_token();
    let _stop = local.clone().drop_guard();
    let server = health::serve(
        config.health_addr()?,
        health.clone(),
        registry,
        local.clone(),
    )
    .await?;
    let mut tasks: JoinSet<Result<(), BridgeError>> = JoinSet::new();
    tasks.spawn(async move { server.await.map_err(BridgeError::from) });

    let client = nats::connect(
        &config.nats,
        &format!("plantd-bridge-nats {origin}"),
        &metrics,
    )
    .await?;
    {
        let client = client.clone();
        let metrics = metrics.clone();
        let stop = local.clone();
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(bridge::MONITOR_INTERVAL);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = ticker.tick() => {}
                }
                if client.connection_state() == async_nats::connection::State::Connected {
                    metrics.connected.set(1);
                    nats_check.up();
                } else {
                    metrics.connected.set(0);
                    nats_check.down("not connected to NATS");
                }
            }
        });
    }
    let context = match &config.jetstream {
        Some(js) => {
            let context = jetstream::ContextBuilder::new()
                .timeout(Duration::from_millis(js.ack_timeout_ms))
                .build(client.clone());
            let ready = setup_stream(&client, &context, js, &config, &local);
            tokio::select! {
                _ = local.cancelled() => return Ok(()),
                ready = ready => ready?,
            }
            Some(context)
        }
        None => None,
    };

    let shared = Shared {
        origin: origin.clone().into(),
        map: Arc::new(SubjectMap::new(
            &config.mapping.topic_prefix,
            &config.mapping.subject_prefix,
        )),
        metrics: metrics.clone(),
        max_hops: config.max_hops,
        shutdown: local.clone(),
    };
    let (export_tx, export_rx) = mpsc::channel(config.max_pending);
    for bus in &config.buses {
        let name: Arc<str> = bus.name.as_str().into();
        let recent = (!bus.export.is_empty() && !bus.import.is_empty()).then(|| {
            Arc::new(Mutex::new(RecentImports::new(
                config.loop_window(),
                config.loop_window_max,
            )))
        });
        if !bus.export.is_empty() {
            let (subscriber, monitor) =
                Subscriber::connect_with(&bus.backend, DEFAULT_HIGH_WATER_MARK, curve.as_ref())?;
            for prefix in &bus.export {
                subscriber.subscribe(prefix)?;
            }
            let check = health.check(&format!("bus_{}_export", bus.name));
            tasks.spawn(bridge::export_bus(
                shared.clone(),
                name.clone(),
                bus.backend.clone(),
                subscriber.into_stream(SUBSCRIPTION_QUEUE),
                monitor,
                check,
                recent.clone(),
                export_tx.clone(),
            ));
        }
        if !bus.import.is_empty() {
            let (publisher, monitor) =
                Publisher::connect_with(&bus.frontend, DEFAULT_HIGH_WATER_MARK, curve.as_ref())?;
            let (tx, rx) = mpsc::channel(IMPORT_QUEUE);
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let check = health.check(&format!("bus_{}_import", bus.name));
            tasks.spawn(bridge::import_bus(
                shared.clone(),
                name.clone(),
                bus.frontend.clone(),
                publisher,
                monitor,
                check,
                Duration::from_millis(config.bus_settle_ms),
                recent.map(|r| (r, bus.export.clone())),
                rx,
                ready_tx,
            ));
            // The sources start once the publisher can publish (below), so that nothing a
            // JetStream consumer replays is published into the void.
            let sources = sources(
                &config,
                &client,
                context.as_ref(),
                &bus.name,
                &bus.import,
                &origin,
            );
            let stop = local.clone();
            tasks.spawn(async move {
                if ready_rx.await.is_err() {
                    return Ok(());
                }
                let mut inner = JoinSet::new();
                for source in sources {
                    inner.spawn(source.start(tx.clone(), stop.clone()));
                }
                while inner.join_next().await.is_some() {}
                Ok(())
            });
        }
    }
    drop(export_tx);
    let mode = match context {
        Some(context) => ExportMode::JetStream(Box::new(context)),
        None => ExportMode::Core,
    };
    tasks.spawn(bridge::export_to_nats(
        shared.clone(),
        client.clone(),
        mode,
        export_rx,
    ));
    tracing::info!(
        bridge_id = %origin,
        jetstream = config.jetstream.is_some(),
        buses = config.buses.len(),
        "bridge running"
    );

    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "bridge task failed; stopping");
                result = Err(e);
                local.cancel();
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    // What was published last leaves before the process ends; a lost NATS must not hold it up.
    match tokio::time::timeout(Duration::from_secs(1), client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "NATS flush on shutdown"),
        Err(_) => tracing::debug!("NATS flush on shutdown timed out"),
    }
    tracing::info!("bridge stopped");
    result
}

/// One NATS source of a bus.
enum Source {
    Core {
        client: async_nats::Client,
        prefix: String,
    },
    JetStream {
        client: async_nats::Client,
        context: Box<jetstream::Context>,
        spec: ConsumerSpec,
    },
}

impl Source {
    async fn start(self, tx: mpsc::Sender<bridge::Inbound>, stop: Shutdown) {
        match self {
            Source::Core { client, prefix } => bridge::core_source(client, prefix, tx, stop).await,
            Source::JetStream {
                client,
                context,
                spec,
            } => bridge::jetstream_source(client, *context, spec, tx, stop).await,
        }
    }
}

fn sources(
    config: &BridgeConfig,
    client: &async_nats::Client,
    context: Option<&jetstream::Context>,
    bus: &str,
    prefixes: &[String],
    origin: &str,
) -> Vec<Source> {
    prefixes
        .iter()
        .map(|prefix| match (context, &config.jetstream) {
            (Some(context), Some(js)) => Source::JetStream {
                client: client.clone(),
                context: Box::new(context.clone()),
                spec: ConsumerSpec {
                    stream: js.stream.clone(),
                    durable: durable_name(js, origin, bus, prefix),
                    filter: format!("{prefix}>"),
                    ack_wait: Duration::from_secs(30),
                },
            },
            _ => Source::Core {
                client: client.clone(),
                prefix: prefix.clone(),
            },
        })
        .collect()
}

/// `<durable or plantd-bridge-<id>>-<bus>-<prefix>`, with anything but `[A-Za-z0-9_-]` as `_`:
/// stable across restarts for the same configuration.
pub fn durable_name(js: &JetStreamSettings, origin: &str, bus: &str, prefix: &str) -> String {
    let base = if js.durable.is_empty() {
        format!("plantd-bridge-{origin}")
    } else {
        js.durable.clone()
    };
    format!("{base}-{bus}-{prefix}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Finds the stream, creating it if allowed. Waits for the connection; retries what a lost
/// connection made fail; returns an error for what the server refused.
async fn setup_stream(
    client: &async_nats::Client,
    context: &jetstream::Context,
    js: &JetStreamSettings,
    config: &BridgeConfig,
    stop: &Shutdown,
) -> Result<(), BridgeError> {
    let subjects = if js.subjects.is_empty() {
        vec![format!("{}>", config.mapping.subject_prefix)]
    } else {
        js.subjects.clone()
    };
    loop {
        bridge::wait_connected(client, stop).await;
        if stop.is_cancelled() {
            return Ok(());
        }
        let result = if js.create {
            context
                .get_or_create_stream(jetstream::stream::Config {
                    name: js.stream.clone(),
                    subjects: subjects.clone(),
                    max_age: Duration::from_secs(js.max_age_secs),
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| {
                    let answered = matches!(
                        e.kind(),
                        jetstream::context::CreateStreamErrorKind::JetStream(_)
                            | jetstream::context::CreateStreamErrorKind::JetStreamUnavailable
                    );
                    (answered, e.to_string())
                })
        } else {
            context
                .get_stream(&js.stream)
                .await
                .map(|_| ())
                .map_err(|e| {
                    let answered = matches!(
                        e.kind(),
                        jetstream::context::GetStreamErrorKind::JetStream(_)
                    );
                    (answered, e.to_string())
                })
        };
        match result {
            Ok(()) => {
                tracing::info!(stream = %js.stream, "JetStream stream ready");
                return Ok(());
            }
            Err((true, e)) => {
                return Err(BridgeError::JetStream(format!("stream {}: {e}", js.stream)))
            }
            Err((false, e)) => {
                tracing::warn!(stream = %js.stream, error = %e, "JetStream not reachable; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_names_are_stable_and_valid() {
        let js = JetStreamSettings::default();
        assert_eq!(
            durable_name(&js, "site-a", "metric", "plantd.metric."),
            "plantd-bridge-site-a-metric-plantd_metric_"
        );
        let js = JetStreamSettings {
            durable: "lab".into(),
            ..Default::default()
        };
        assert_eq!(durable_name(&js, "x", "my bus", ""), "lab-my_bus-");
    }
}
