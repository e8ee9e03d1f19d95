//! The logger's Prometheus metrics, rendered at `/metrics`.
//!
//! Ingest threads and the writer touch pre-resolved handles (atomics), never label lookups per
//! message.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

/// Every logger metric and the registry they live in.
#[derive(Clone)]
pub struct LoggerMetrics {
    registry: Registry,
    received: IntCounterVec,
    malformed: IntCounterVec,
    /// Rows committed to `metrics`.
    pub metric_rows: IntCounter,
    /// Rows committed to `events`.
    pub event_rows: IntCounter,
    /// Batches that failed to commit (their rows are lost).
    pub write_errors: IntCounter,
    /// Rows dropped because a batch failed.
    pub rows_dropped: IntCounter,
    /// Seconds to commit one batch.
    pub batch_seconds: Histogram,
    /// Rows deleted by retention, by table.
    retention_deleted: IntCounterVec,
    /// Buses whose subscriber is currently connected.
    pub connected_buses: IntGauge,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
}

/// Per-bus handles one ingest thread keeps.
#[derive(Clone)]
pub struct BusCounters {
    /// Messages received from this bus.
    pub received: IntCounter,
    /// Messages whose payload was neither MessagePack nor JSON.
    pub malformed: IntCounter,
}

impl LoggerMetrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        // Names, help texts and labels are constants: building and registering cannot fail
        // except by a programming error caught by the tests.
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let received = counter_vec(
            "plantd_logger_messages_received_total",
            "Bus messages received, by bus",
            &["bus"],
        );
        let malformed = counter_vec(
            "plantd_logger_malformed_total",
            "Bus messages whose payload was neither MessagePack nor JSON (stored raw), by bus",
            &["bus"],
        );
        let metric_rows = counter(
            "plantd_logger_metric_rows_total",
            "Rows committed to the metrics table",
        );
        let event_rows = counter(
            "plantd_logger_event_rows_total",
            "Rows committed to the events table",
        );
        let write_errors = counter(
            "plantd_logger_write_errors_total",
            "Batches that failed to commit",
        );
        let rows_dropped = counter(
            "plantd_logger_rows_dropped_total",
            "Rows lost because their batch failed to commit",
        );
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "plantd_logger_batch_seconds",
                "Seconds to commit one batch of rows",
            )
            .buckets(exponential_buckets(0.0001, 4.0, 9).expect("valid buckets")),
        )
        .expect("valid metric");
        registry
            .register(Box::new(batch_seconds.clone()))
            .expect("unique metric");
        let retention_deleted = counter_vec(
            "plantd_logger_retention_deleted_total",
            "Rows deleted by the retention policy, by table",
            &["table"],
        );
        let connected_buses = IntGauge::new(
            "plantd_logger_connected_buses",
            "Buses whose backend the logger is connected to",
        )
        .expect("valid metric");
        registry
            .register(Box::new(connected_buses.clone()))
            .expect("unique metric");
        let requests = counter_vec(
            "plantd_logger_requests_total",
            "Query requests by operation and outcome",
            &["operation", "outcome"],
        );
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "plantd_logger_request_seconds",
                "Query latency in seconds, by operation",
            )
            .buckets(exponential_buckets(0.0001, 4.0, 9).expect("valid buckets")),
            &["operation"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_seconds.clone()))
            .expect("unique metric");
        LoggerMetrics {
            registry,
            received,
            malformed,
            metric_rows,
            event_rows,
            write_errors,
            rows_dropped,
            batch_seconds,
            retention_deleted,
            connected_buses,
            requests,
            request_seconds,
        }
    }

    /// The registry `/metrics` renders.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The handles for one bus.
    pub fn bus(&self, bus: &str) -> BusCounters {
        BusCounters {
            received: self.received.with_label_values(&[bus]),
            malformed: self.malformed.with_label_values(&[bus]),
        }
    }

    /// Counts rows deleted by retention.
    pub fn retention_deleted(&self, metrics: u64, events: u64) {
        self.retention_deleted
            .with_label_values(&["metrics"])
            .inc_by(metrics);
        self.retention_deleted
            .with_label_values(&["events"])
            .inc_by(events);
    }

    /// Records one query: its operation (an unknown one is counted as `unknown`), outcome
    /// (`ok` or an error code) and latency.
    pub fn request(&self, operation: &str, outcome: &str, seconds: f64) {
        self.requests.with_label_values(&[operation, outcome]).inc();
        self.request_seconds
            .with_label_values(&[operation])
            .observe(seconds);
    }
}

impl Default for LoggerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
