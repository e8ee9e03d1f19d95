//! Prometheus metrics of the identity service: requests by operation and outcome, latency, logins
//! by outcome, lockouts, rate-limited requests and bus events. Labels are operation names and
//! error codes only: never a user name, token or address.

use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// Every metric the service exports. Cheap to clone (the collectors are shared handles).
#[derive(Clone, Debug)]
pub struct IdentityMetrics {
    /// `plantd_identity_requests_total{operation,outcome}`; outcome is `ok` or an error code.
    pub requests: IntCounterVec,
    /// `plantd_identity_request_duration_seconds{operation}`.
    pub request_duration: HistogramVec,
    /// `plantd_identity_logins_total{outcome}`: `ok`, `failed`, `locked`, `rate_limited`.
    pub logins: IntCounterVec,
    /// `plantd_identity_lockouts_total`: accounts (or unknown identifiers) locked.
    pub lockouts: IntCounter,
    /// `plantd_identity_rate_limited_total{operation}`.
    pub rate_limited: IntCounterVec,
    /// `plantd_identity_events_published_total`.
    pub events_published: IntCounter,
    /// `plantd_identity_events_dropped_total`.
    pub events_dropped: IntCounter,
}

impl IdentityMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "plantd_identity_requests_total",
                "Identity requests by operation and outcome",
            ),
            &["operation", "outcome"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "plantd_identity_request_duration_seconds",
                "Time to handle an identity request, in seconds",
            )
            .buckets(exponential_buckets(0.000_01, 2.5, 14)?),
            &["operation"],
        )?;
        let logins = IntCounterVec::new(
            Opts::new("plantd_identity_logins_total", "Logins by outcome"),
            &["outcome"],
        )?;
        let lockouts = IntCounter::new(
            "plantd_identity_lockouts_total",
            "Accounts locked after repeated failed logins",
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "plantd_identity_rate_limited_total",
                "Requests refused by the per-source rate limit",
            ),
            &["operation"],
        )?;
        let events_published = IntCounter::new(
            "plantd_identity_events_published_total",
            "Revocation, change and audit events sent on the event bus",
        )?;
        let events_dropped = IntCounter::new(
            "plantd_identity_events_dropped_total",
            "Events dropped because the bus publisher was behind",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(lockouts.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(events_published.clone()))?;
        registry.register(Box::new(events_dropped.clone()))?;
        Ok(IdentityMetrics {
            requests,
            request_duration,
            logins,
            lockouts,
            rate_limited,
            events_published,
            events_dropped,
        })
    }
}
