//! plantd metric module: an example bus producer and consumer.
//!
//! - **Producer** (default): every interval, samples this host ([`sampler`]: load averages,
//!   memory used/available, CPU usage, per-interface network bytes) and publishes each reading as a
//!   [`Metric`](plantd_worker_sdk::bus::Metric) on `org.plantd.metric.<host>.<channel>` on the
//!   metric bus.
//! - **Consumer**: subscribes to a topic prefix and prints each metric as a JSON line.
//!
//! Both serve `/healthz` (check `bus_connection`, plus `sampling` for the producer) and
//! `/metrics`. Unlike the Go module there is no call to a service registry that does not exist.

pub mod config;
pub mod sampler;

use std::io::Write;

use plantd_worker_sdk::bus::{self, BusError, Metric, Publisher, Subscriber};
use plantd_worker_sdk::health::{self, Health, HealthError};
use plantd_worker_sdk::Shutdown;
use prometheus::{IntCounter, Registry};
use thiserror::Error;

pub use config::{MetricModuleConfig, Mode, SERVICE_NAME};
use sampler::Sampler;

/// How often the bus connection is re-checked for `/healthz`.
const CONNECTION_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Why the metric module could not run.
#[derive(Debug, Error)]
pub enum MetricModuleError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The bus socket could not be set up.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The health server could not start.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// Writing a JSON line failed (stdout closed).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Counters shown at `/metrics`.
#[derive(Clone)]
struct Counters {
    registry: Registry,
    samples: IntCounter,
    published: IntCounter,
    received: IntCounter,
    errors: IntCounter,
}

impl Counters {
    fn new() -> Self {
        let registry = Registry::new();
        // Constant names and help texts: these cannot fail.
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        Counters {
            samples: counter("plantd_module_metric_samples_total", "Host samples taken"),
            published: counter(
                "plantd_module_metric_published_total",
                "Metrics published on the bus",
            ),
            received: counter(
                "plantd_module_metric_received_total",
                "Metrics received from the bus (consumer mode)",
            ),
            errors: counter(
                "plantd_module_metric_errors_total",
                "Publish failures and undecodable messages",
            ),
            registry,
        }
    }
}

/// Runs the module in its configured mode until `shutdown` is cancelled. The consumer prints to
/// stdout.
pub async fn run(config: MetricModuleConfig, shutdown: Shutdown) -> Result<(), MetricModuleError> {
    match config.mode {
        Mode::Producer => run_with_output(config, shutdown, std::io::sink()).await,
        Mode::Consumer => run_with_output(config, shutdown, std::io::stdout()).await,
    }
}

/// Like [`run`], with the consumer's JSON lines going to `out` (tests read them back).
pub async fn run_with_output<W: Write + Send + 'static>(
    config: MetricModuleConfig,
    shutdown: Shutdown,
    out: W,
) -> Result<(), MetricModuleError> {
    config.validate()?;
    let counters = Counters::new();
    let health = Health::new(env!("CARGO_PKG_VERSION"));
    let local = shutdown.child_token();
    let server = health::serve(
        config.health_addr()?,
        health.clone(),
        counters.registry.clone(),
        local.clone(),
    )
    .await?;
    let server = tokio::spawn(server);
    let result = match config.mode {
        Mode::Producer => produce(&config, &health, &counters, &local).await,
        Mode::Consumer => consume(&config, &health, &counters, &local, out).await,
    };
    local.cancel();
    let served = server.await;
    result?;
    match served {
        Ok(served) => served.map_err(Into::into),
        Err(_) => Ok(()),
    }
}

/// The bus socket's CURVE keys, if the configuration names them.
fn curve(
    config: &MetricModuleConfig,
) -> Result<Option<plantd_worker_sdk::curve::ClientCurve>, MetricModuleError> {
    config
        .curve
        .client()
        .map_err(|e| MetricModuleError::Config(format!("curve: {e}")))
}

async fn produce(
    config: &MetricModuleConfig,
    health: &Health,
    counters: &Counters,
    shutdown: &Shutdown,
) -> Result<(), MetricModuleError> {
    let connection = health.check("bus_connection");
    let sampling = health.check("sampling");
    let curve = curve(config)?;
    let (publisher, mut monitor) = Publisher::connect_with(
        &config.bus_frontend,
        bus::DEFAULT_HIGH_WATER_MARK,
        curve.as_ref(),
    )?;
    let source = config.source_name();
    let mut sampler = Sampler::new(source.clone());
    tracing::info!(
        bus = %config.bus_frontend,
        source = %source,
        interval_ms = config.interval_ms,
        "metric producer started"
    );
    // The first sample waits a little so the CPU usage covers a real span of time.
    let first =
        tokio::time::Instant::now() + config.interval().min(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
    let mut ticker = tokio::time::interval_at(first, config.interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(CONNECTION_CHECK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = check.tick() => set_connection(&connection, monitor.is_connected(), &config.bus_frontend),
            _ = ticker.tick() => {
                let readings = sampler.sample();
                counters.samples.inc();
                match publish_all(&publisher, &readings) {
                    Ok(()) => {
                        counters.published.inc_by(readings.len() as u64);
                        sampling.up();
                    }
                    Err(e) => {
                        counters.errors.inc();
                        sampling.down(e.to_string());
                        tracing::warn!(error = %e, "cannot publish metrics");
                    }
                }
            }
        }
    }
    tracing::info!("metric producer stopped");
    Ok(())
}

fn publish_all(publisher: &Publisher, readings: &[Metric]) -> Result<(), BusError> {
    readings
        .iter()
        .try_for_each(|m| publisher.publish_metric(m))
}

fn set_connection(check: &health::Check, connected: bool, endpoint: &str) {
    if connected {
        check.up();
    } else {
        check.down(format!("not connected to {endpoint}"));
    }
}

async fn consume<W: Write + Send + 'static>(
    config: &MetricModuleConfig,
    health: &Health,
    counters: &Counters,
    shutdown: &Shutdown,
    mut out: W,
) -> Result<(), MetricModuleError> {
    let connection = health.check("bus_connection");
    let curve = curve(config)?;
    let (subscriber, mut monitor) = Subscriber::connect_with(
        &config.bus_backend,
        bus::DEFAULT_HIGH_WATER_MARK,
        curve.as_ref(),
    )?;
    subscriber.subscribe(&config.topic_prefix)?;
    let mut messages = subscriber.into_stream(1024);
    tracing::info!(bus = %config.bus_backend, prefix = %config.topic_prefix, "metric consumer started");
    let mut check = tokio::time::interval(CONNECTION_CHECK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = check.tick() => set_connection(&connection, monitor.is_connected(), &config.bus_backend),
            next = messages.next() => {
                let msg = match next {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        counters.errors.inc();
                        tracing::warn!(error = %e, "bus receive failed");
                        continue;
                    }
                    None => break,
                };
                match msg.decode_body::<Metric>() {
                    Ok(metric) => {
                        counters.received.inc();
                        writeln!(out, "{}", metric_line(&msg.topic, &metric))?;
                        out.flush()?;
                    }
                    Err(e) => {
                        counters.errors.inc();
                        tracing::debug!(topic = %msg.topic, error = %e, "not a metric");
                    }
                }
            }
        }
    }
    tracing::info!("metric consumer stopped");
    Ok(())
}

/// `{"topic": ..., "time": ..., "source": ..., ...}`: the metric's fields plus its topic.
pub fn metric_line(topic: &str, metric: &Metric) -> serde_json::Value {
    let mut line = serde_json::json!({ "topic": topic });
    if let (Some(line), Ok(serde_json::Value::Object(fields))) =
        (line.as_object_mut(), serde_json::to_value(metric))
    {
        line.extend(fields);
    }
    line
}
