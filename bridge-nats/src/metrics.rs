//! [`BridgeMetrics`]: the bridge's Prometheus metrics, served on the health port's `/metrics`.
//!
//! Labels carry only configured names (bus names) and fixed words (direction, reason, event),
//! never topics or subjects, so a flood of odd topics cannot become a flood of series.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, DEFAULT_BUCKETS,
};

/// Direction label: bus → NATS.
pub const EXPORT: &str = "export";
/// Direction label: NATS → bus.
pub const IMPORT: &str = "import";

/// Counters, lag histograms and connection state of one bridge.
#[derive(Clone)]
pub struct BridgeMetrics {
    /// `plantd_bridge_nats_messages_total{direction, bus}`: messages that crossed (export:
    /// accepted by NATS, or acked by JetStream; import: published on the bus).
    pub bridged: IntCounterVec,
    /// `plantd_bridge_nats_dropped_total{direction, reason}`: messages that did not cross.
    /// Export reasons: `unmapped`, `invalid_subject`, `buffer_full`, `nats_down`,
    /// `publish_error`. Import reasons: `unmapped`, `hop_limit`, `malformed`, `bus_error`.
    pub dropped: IntCounterVec,
    /// `plantd_bridge_nats_loop_suppressed_total{reason}`: `own_origin` (a NATS message this
    /// bridge exported itself) and `own_import` (a bus message this bridge imported itself).
    pub loop_suppressed: IntCounterVec,
    /// `plantd_bridge_nats_lag_seconds{direction}`: export, from bus receive to NATS accepting
    /// (core) or acking (JetStream) it; import, from the exporting bridge's bus receive
    /// (`plantd-time` header; across hosts this includes clock skew) to the bus publish.
    pub lag: HistogramVec,
    /// `plantd_bridge_nats_connected`: 1 while connected to a NATS server.
    pub connected: IntGauge,
    /// `plantd_bridge_nats_connection_events_total{event}`: `connected`, `disconnected`,
    /// `lame_duck`, `slow_consumer`, `server_error`, `client_error`, `closed`, `draining`.
    pub connection_events: IntCounterVec,
    /// `plantd_bridge_nats_pending`: exported messages waiting for NATS.
    pub pending: IntGauge,
}

impl BridgeMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let mut buckets = vec![0.000_1, 0.000_25, 0.000_5, 0.001, 0.002];
        buckets.extend_from_slice(DEFAULT_BUCKETS);
        let metrics = BridgeMetrics {
            bridged: IntCounterVec::new(
                Opts::new("plantd_bridge_nats_messages_total", "Messages bridged"),
                &["direction", "bus"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "plantd_bridge_nats_dropped_total",
                    "Messages that could not cross the bridge",
                ),
                &["direction", "reason"],
            )?,
            loop_suppressed: IntCounterVec::new(
                Opts::new(
                    "plantd_bridge_nats_loop_suppressed_total",
                    "Messages not bridged because they would loop",
                ),
                &["reason"],
            )?,
            lag: HistogramVec::new(
                HistogramOpts::new(
                    "plantd_bridge_nats_lag_seconds",
                    "Time for a message to cross the bridge",
                )
                .buckets(buckets),
                &["direction"],
            )?,
            connected: IntGauge::new("plantd_bridge_nats_connected", "1 while connected to NATS")?,
            connection_events: IntCounterVec::new(
                Opts::new(
                    "plantd_bridge_nats_connection_events_total",
                    "NATS connection state changes and errors",
                ),
                &["event"],
            )?,
            pending: IntGauge::new(
                "plantd_bridge_nats_pending",
                "Exported messages waiting for NATS",
            )?,
        };
        registry.register(Box::new(metrics.bridged.clone()))?;
        registry.register(Box::new(metrics.dropped.clone()))?;
        registry.register(Box::new(metrics.loop_suppressed.clone()))?;
        registry.register(Box::new(metrics.lag.clone()))?;
        registry.register(Box::new(metrics.connected.clone()))?;
        registry.register(Box::new(metrics.connection_events.clone()))?;
        registry.register(Box::new(metrics.pending.clone()))?;
        Ok(metrics)
    }

    /// Counts one message dropped in `direction` for `reason`.
    pub fn drop_one(&self, direction: &str, reason: &str) {
        self.dropped.with_label_values(&[direction, reason]).inc();
    }
}
