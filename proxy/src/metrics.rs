//! [`ProxyMetrics`]: the proxy's Prometheus metrics, served on the health port's `/metrics`.
//!
//! Labels never carry tokens or bodies; the `service` label is only set for services that
//! answered (a flood of made-up names must not become a flood of series).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, DEFAULT_BUCKETS,
};

/// Request counters, latency, in-flight gauge and rate-limit refusals.
#[derive(Clone)]
pub struct ProxyMetrics {
    /// `plantd_proxy_requests_total{route, status, service}`.
    pub requests: IntCounterVec,
    /// `plantd_proxy_request_duration_seconds{route}`: until the response head (SSE: until the
    /// stream starts).
    pub latency: HistogramVec,
    /// `plantd_proxy_in_flight_requests`.
    pub in_flight: IntGauge,
    /// `plantd_proxy_rate_limited_total{limit}` (`address`, `token`, `in_flight`).
    pub rate_limited: IntCounterVec,
    /// `plantd_proxy_sse_streams{kind}`: open SSE responses (`call`, `bus`, `dashboard`).
    pub sse_streams: prometheus::IntGaugeVec,
    /// `plantd_proxy_dashboard_polls_total`: MMI polls of the dashboard (one per interval,
    /// whatever the number of open pages).
    pub dashboard_polls: prometheus::IntCounter,
    /// `plantd_proxy_dashboard_sessions`: logged-in dashboard sessions.
    pub dashboard_sessions: IntGauge,
}

impl ProxyMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let mut buckets = vec![0.000_25, 0.000_5, 0.001, 0.002];
        buckets.extend_from_slice(DEFAULT_BUCKETS);
        let metrics = ProxyMetrics {
            requests: IntCounterVec::new(
                Opts::new("plantd_proxy_requests_total", "HTTP requests answered"),
                &["route", "status", "service"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "plantd_proxy_request_duration_seconds",
                    "Time to the response head",
                )
                .buckets(buckets),
                &["route"],
            )?,
            in_flight: IntGauge::new(
                "plantd_proxy_in_flight_requests",
                "Requests being handled now",
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "plantd_proxy_rate_limited_total",
                    "Requests refused by a limit",
                ),
                &["limit"],
            )?,
            sse_streams: prometheus::IntGaugeVec::new(
                Opts::new("plantd_proxy_sse_streams", "Open SSE responses"),
                &["kind"],
            )?,
            dashboard_polls: prometheus::IntCounter::new(
                "plantd_proxy_dashboard_polls_total",
                "MMI polls made for the dashboard",
            )?,
            dashboard_sessions: IntGauge::new(
                "plantd_proxy_dashboard_sessions",
                "Logged-in dashboard sessions",
            )?,
        };
        registry.register(Box::new(metrics.dashboard_polls.clone()))?;
        registry.register(Box::new(metrics.dashboard_sessions.clone()))?;
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.latency.clone()))?;
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.rate_limited.clone()))?;
        registry.register(Box::new(metrics.sse_streams.clone()))?;
        Ok(metrics)
    }
}
