//! Prometheus metrics of the state service: requests by operation and outcome, request latency,
//! commit batch sizes and commit latency, change notifications and backups.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};

/// Every metric the service exports. Cheap to clone (the collectors are shared handles).
#[derive(Clone, Debug)]
pub struct StateMetrics {
    /// `plantd_state_requests_total{operation,outcome}`; outcome is `ok` or an error code.
    pub requests: IntCounterVec,
    /// `plantd_state_request_duration_seconds{operation}`, time spent in the service.
    pub request_duration: HistogramVec,
    /// `plantd_state_commit_batch_size`: write requests committed per transaction.
    pub commit_batch_size: Histogram,
    /// `plantd_state_commit_duration_seconds`: time from BEGIN to COMMIT of one batch.
    pub commit_duration: Histogram,
    /// `plantd_state_changes_published_total`.
    pub changes_published: IntCounter,
    /// `plantd_state_changes_dropped_total`: notifications dropped because the bus was behind.
    pub changes_dropped: IntCounter,
    /// `plantd_state_backups_total{outcome}` (`ok` or `error`).
    pub backups: IntCounterVec,
}

impl StateMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "plantd_state_requests_total",
                "State requests by operation and outcome",
            ),
            &["operation", "outcome"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "plantd_state_request_duration_seconds",
                "Time to handle a state request, in seconds",
            )
            .buckets(exponential_buckets(0.000_01, 2.5, 14)?),
            &["operation"],
        )?;
        let commit_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "plantd_state_commit_batch_size",
                "Write requests committed together in one transaction",
            )
            .buckets(exponential_buckets(1.0, 2.0, 11)?),
        )?;
        let commit_duration = Histogram::with_opts(
            HistogramOpts::new(
                "plantd_state_commit_duration_seconds",
                "Time from BEGIN to COMMIT of one write batch, in seconds",
            )
            .buckets(exponential_buckets(0.000_01, 2.5, 14)?),
        )?;
        let changes_published = IntCounter::new(
            "plantd_state_changes_published_total",
            "Change notifications sent on the state bus",
        )?;
        let changes_dropped = IntCounter::new(
            "plantd_state_changes_dropped_total",
            "Change notifications dropped because the bus publisher was behind",
        )?;
        let backups = IntCounterVec::new(
            Opts::new("plantd_state_backups_total", "Online backups by outcome"),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(commit_batch_size.clone()))?;
        registry.register(Box::new(commit_duration.clone()))?;
        registry.register(Box::new(changes_published.clone()))?;
        registry.register(Box::new(changes_dropped.clone()))?;
        registry.register(Box::new(backups.clone()))?;
        Ok(StateMetrics {
            requests,
            request_duration,
            commit_batch_size,
            commit_duration,
            changes_published,
            changes_dropped,
            backups,
        })
    }

    /// Metrics registered in a private registry (tests, tools).
    pub fn unregistered() -> Self {
        // Registration into a fresh registry cannot collide.
        Self::register(&Registry::new()).expect("fresh registry")
    }
}
