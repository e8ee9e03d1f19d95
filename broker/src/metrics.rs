//! The broker's Prometheus metrics, shared between the broker loop (which updates them) and the HTTP
//! side (which renders `/metrics`).
//!
//! Everything the loop touches per message is a pre-resolved handle (an atomic), never a label
//! lookup: global counters live in [`Metrics`], per-service ones in a [`ServiceMetrics`] that each
//! service keeps for its lifetime.

use plantd_worker_sdk::protocol::ErrorCode;
use prometheus::{
    exponential_buckets, Counter, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use serde_json::{json, Value};

/// Why a worker left the broker's books (label `reason` of `plantd_broker_workers_removed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerRemoval {
    /// It sent DISCONNECT.
    Disconnected,
    /// It stayed silent past its expiry.
    Expired,
    /// ZeroMQ could no longer route to it (socket closed).
    Unreachable,
    /// It sent a command that was valid but unexpected, or a malformed one.
    ProtocolViolation,
}

/// Every broker-wide metric, plus the registry they are registered in.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Multipart messages received on the ROUTER socket.
    pub messages_received: IntCounter,
    /// Multipart messages sent on the ROUTER socket.
    pub messages_sent: IntCounter,
    /// Client requests for worker services (not MMI).
    pub requests: IntCounter,
    /// Client MMI queries.
    pub mmi_requests: IntCounter,
    /// FINAL replies relayed from workers to clients.
    pub replies: IntCounter,
    /// PARTIAL replies relayed from workers to clients.
    pub partials: IntCounter,
    /// PARTIAL replies not relayed because the client speaks MDP/0.1.
    pub partials_dropped: IntCounter,
    /// Messages dropped because they are not MDP.
    pub malformed: IntCounter,
    /// PARTIAL/FINAL commands sent by clients (dropped).
    pub client_replies_dropped: IntCounter,
    /// Replies (and error replies) dropped because the client was gone.
    pub unroutable: IntCounter,
    /// Requests dispatched again after their worker was lost.
    pub redispatches: IntCounter,
    /// Workers that registered.
    pub workers_registered: IntCounter,
    /// Worker commands (other than READY/DISCONNECT) from unregistered peers; each got DISCONNECT.
    pub unknown_worker_messages: IntCounter,
    /// Workers refused because they asked for an `mmi.*` name.
    pub reserved_name_refused: IntCounter,
    /// Open connections to the MDP socket.
    pub connections: IntGauge,
    /// Connections the MDP socket accepted.
    pub connections_accepted: IntCounter,
    /// Connections to the MDP socket that ended: closed by the peer, or dropped by libzmq (a frame
    /// above `max_message_size`, another ZMTP error).
    pub disconnects: IntCounter,
    /// Times freed memory was handed back to the operating system.
    pub memory_trims: IntCounter,
    /// Resident bytes those trims gave back.
    pub memory_trimmed_bytes: IntCounter,
    /// Seconds spent trimming.
    pub memory_trim_seconds: Counter,
    /// Registered workers across all services.
    pub active_workers: IntGauge,
    /// Requests waiting for a worker across all services.
    pub queued_requests: IntGauge,
    /// Bytes of requests waiting for a worker across all services.
    pub queued_bytes: IntGauge,
    /// The security counters (refusals, ZAP, allow-list reloads).
    pub security: SecurityMetrics,
    removed: [IntCounter; 4],
    errors: [IntCounter; ERROR_CODES.len()],
    service_requests: IntCounterVec,
    service_errors: IntCounterVec,
    service_workers: IntGaugeVec,
    service_queue_depth: IntGaugeVec,
    service_queue_bytes: IntGaugeVec,
    service_latency: HistogramVec,
}

/// The broker's security metrics (`docs/security.md`).
#[derive(Clone)]
pub struct SecurityMetrics {
    /// `security_refusals_total{action}`: handshakes, registrations, calls, bus publishes and
    /// subscriptions, takeovers refused.
    pub refusals: IntCounterVec,
    /// `audit_events_dropped_total`: audit events the full audit queue turned away (still
    /// counted in `refusals`).
    pub audit_dropped: IntCounter,
    /// `zap_requests_total{outcome}`: CURVE handshakes accepted or refused by the ZAP handler.
    pub zap: IntCounterVec,
    /// `allow_list_reloads_total{outcome}`: reloads of `curve.authorized_keys` (`ok`, `error`).
    pub reloads: IntCounterVec,
    /// `authorized_keys`: keys on the allow list now.
    pub authorized_keys: IntGauge,
}

/// The per-service handles one service keeps (label `service`).
#[derive(Clone)]
pub struct ServiceMetrics {
    label: String,
    /// Requests received for this service.
    pub requests: IntCounter,
    /// Requests for this service answered with an error: by the broker (queue full, expired,
    /// no worker, re-dispatch given up, client over its limit) or by a worker (a relayed
    /// `plantd.error` FINAL).
    pub errors: IntCounter,
    /// Workers registered for this service.
    pub workers: IntGauge,
    /// Requests waiting for a worker of this service.
    pub queue_depth: IntGauge,
    /// Bytes of those requests.
    pub queue_bytes: IntGauge,
    /// Seconds from dispatch to a worker until its FINAL.
    pub latency: Histogram,
    all_workers: IntGauge,
    all_queued: IntGauge,
    all_queued_bytes: IntGauge,
}

impl ServiceMetrics {
    /// Records `delta` more (or fewer) workers for this service and in total.
    pub fn add_workers(&self, delta: i64) {
        self.workers.add(delta);
        self.all_workers.add(delta);
    }

    /// Records `delta` more (or fewer) waiting requests of `bytes` in all, for this service and
    /// in total.
    pub fn add_queued(&self, delta: i64, bytes: i64) {
        self.queue_depth.add(delta);
        self.all_queued.add(delta);
        self.queue_bytes.add(bytes);
        self.all_queued_bytes.add(bytes);
    }
}

const ERROR_CODES: [ErrorCode; 8] = [
    ErrorCode::BadRequest,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::RateLimited,
    ErrorCode::Internal,
    ErrorCode::NotImplemented,
    ErrorCode::QueueFull,
    ErrorCode::Expired,
];

const REMOVALS: [(WorkerRemoval, &str); 4] = [
    (WorkerRemoval::Disconnected, "disconnected"),
    (WorkerRemoval::Expired, "expired"),
    (WorkerRemoval::Unreachable, "unreachable"),
    (WorkerRemoval::ProtocolViolation, "protocol_violation"),
];

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(format!("plantd_broker_{name}"), help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(format!("plantd_broker_{name}"), help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };

        let errors_vec = IntCounterVec::new(
            Opts::new(
                "plantd_broker_error_replies_total",
                "Error replies the broker sent to clients, by code",
            ),
            &["code"],
        )?;
        registry.register(Box::new(errors_vec.clone()))?;
        let removed_vec = IntCounterVec::new(
            Opts::new(
                "plantd_broker_workers_removed_total",
                "Workers removed from the broker, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(removed_vec.clone()))?;
        let service_requests = IntCounterVec::new(
            Opts::new(
                "plantd_broker_service_requests_total",
                "Client requests received, by service",
            ),
            &["service"],
        )?;
        registry.register(Box::new(service_requests.clone()))?;
        let service_errors = IntCounterVec::new(
            Opts::new(
                "plantd_broker_service_errors_total",
                "Requests answered with an error, by service: the broker's own error replies \
                 (queue full, expired, no worker, re-dispatch given up, client over its limit) \
                 and workers' error replies it relayed",
            ),
            &["service"],
        )?;
        registry.register(Box::new(service_errors.clone()))?;
        let service_workers = IntGaugeVec::new(
            Opts::new(
                "plantd_broker_service_workers",
                "Workers registered, by service",
            ),
            &["service"],
        )?;
        registry.register(Box::new(service_workers.clone()))?;
        let service_queue_depth = IntGaugeVec::new(
            Opts::new(
                "plantd_broker_service_queue_depth",
                "Requests waiting for a worker, by service",
            ),
            &["service"],
        )?;
        registry.register(Box::new(service_queue_depth.clone()))?;
        let service_queue_bytes = IntGaugeVec::new(
            Opts::new(
                "plantd_broker_service_queue_bytes",
                "Bytes of requests waiting for a worker, by service",
            ),
            &["service"],
        )?;
        registry.register(Box::new(service_queue_bytes.clone()))?;
        let service_latency = HistogramVec::new(
            HistogramOpts::new(
                "plantd_broker_request_duration_seconds",
                "Time from dispatching a request to a worker until its FINAL reply, by service",
            )
            // 50 µs .. ~52 s
            .buckets(exponential_buckets(0.000_05, 2.0, 21)?),
            &["service"],
        )?;
        registry.register(Box::new(service_latency.clone()))?;

        let vec =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let v =
                    IntCounterVec::new(Opts::new(format!("plantd_broker_{name}"), help), &[label])?;
                registry.register(Box::new(v.clone()))?;
                Ok(v)
            };
        let security = SecurityMetrics {
            refusals: vec(
                "security_refusals_total",
                "Refused by the security policy: handshake, register, call, publish, \
                 subscribe, takeover",
                "action",
            )?,
            audit_dropped: counter(
                "audit_events_dropped_total",
                "Audit events dropped because the audit queue was full (refusals still counted)",
            )?,
            zap: vec(
                "zap_requests_total",
                "CURVE handshakes answered by the ZAP handler, by outcome",
                "outcome",
            )?,
            reloads: vec(
                "allow_list_reloads_total",
                "Reloads of curve.authorized_keys, by outcome (ok, error)",
                "outcome",
            )?,
            authorized_keys: gauge("authorized_keys", "Keys on the allow list")?,
        };
        for action in crate::security::audit::Action::ALL {
            security.refusals.with_label_values(&[action.name()]);
        }
        for outcome in ["accepted", "refused"] {
            security.zap.with_label_values(&[outcome]);
        }
        for outcome in ["ok", "error"] {
            security.reloads.with_label_values(&[outcome]);
        }

        let errors = ERROR_CODES.map(|code| errors_vec.with_label_values(&[code.as_str()]));
        let removed = REMOVALS.map(|(_, reason)| removed_vec.with_label_values(&[reason]));

        Ok(Metrics {
            messages_received: counter(
                "messages_received_total",
                "Messages received on the MDP socket",
            )?,
            messages_sent: counter("messages_sent_total", "Messages sent on the MDP socket")?,
            requests: counter(
                "requests_total",
                "Client requests for worker services (MMI excluded)",
            )?,
            mmi_requests: counter("mmi_requests_total", "MMI queries answered")?,
            replies: counter("replies_total", "FINAL replies relayed to clients")?,
            partials: counter("partials_total", "PARTIAL replies relayed to clients")?,
            partials_dropped: counter(
                "partials_dropped_total",
                "PARTIAL replies not relayed because the client speaks MDP/0.1",
            )?,
            malformed: counter(
                "malformed_messages_total",
                "Messages dropped because they are not valid MDP",
            )?,
            client_replies_dropped: counter(
                "client_replies_dropped_total",
                "PARTIAL/FINAL commands sent by clients (dropped)",
            )?,
            unroutable: counter(
                "unroutable_replies_total",
                "Replies dropped because the client had gone",
            )?,
            redispatches: counter(
                "redispatches_total",
                "Requests put back in their queue after their worker was lost",
            )?,
            workers_registered: counter("workers_registered_total", "Workers that registered")?,
            unknown_worker_messages: counter(
                "unknown_worker_messages_total",
                "Worker commands from unregistered peers, answered with DISCONNECT",
            )?,
            reserved_name_refused: counter(
                "reserved_name_refused_total",
                "Workers refused because they tried to register an mmi.* service",
            )?,
            connections: gauge("connections", "Open connections to the MDP socket")?,
            connections_accepted: counter(
                "connections_accepted_total",
                "Connections the MDP socket accepted",
            )?,
            disconnects: counter(
                "disconnects_total",
                "Connections to the MDP socket that ended: closed by the peer, or dropped by \
                 libzmq (a frame above max_message_size or another ZMTP error)",
            )?,
            memory_trims: counter(
                "memory_trims_total",
                "Times freed memory was handed back to the operating system (malloc_trim)",
            )?,
            memory_trimmed_bytes: counter(
                "memory_trimmed_bytes_total",
                "Resident bytes the memory trims gave back",
            )?,
            memory_trim_seconds: {
                let c = Counter::new(
                    "plantd_broker_memory_trim_seconds_total",
                    "Seconds spent handing freed memory back",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            active_workers: gauge("active_workers", "Registered workers")?,
            queued_requests: gauge("queued_requests", "Requests waiting for a worker")?,
            queued_bytes: gauge(
                "queued_bytes",
                "Bytes of requests waiting for a worker (service name and body)",
            )?,
            security,
            removed,
            errors,
            service_requests,
            service_errors,
            service_workers,
            service_queue_depth,
            service_queue_bytes,
            service_latency,
            registry,
        })
    }

    /// The registry to render on `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The counter of error replies with `code`.
    pub fn error(&self, code: ErrorCode) -> &IntCounter {
        let i = ERROR_CODES.iter().position(|c| *c == code).unwrap_or(0);
        &self.errors[i]
    }

    /// The counter of workers removed for `reason`.
    pub fn removed(&self, reason: WorkerRemoval) -> &IntCounter {
        let i = REMOVALS.iter().position(|(r, _)| *r == reason).unwrap_or(0);
        &self.removed[i]
    }

    /// The handles the MDP socket's connection monitor updates.
    pub fn connection_metrics(&self) -> crate::monitor::ConnectionMetrics {
        crate::monitor::ConnectionMetrics {
            open: self.connections.clone(),
            accepted: self.connections_accepted.clone(),
            disconnects: self.disconnects.clone(),
        }
    }

    /// The handles the memory trimming task updates.
    pub fn trim_metrics(&self) -> crate::trim::TrimMetrics {
        crate::trim::TrimMetrics {
            trims: self.memory_trims.clone(),
            trimmed_bytes: self.memory_trimmed_bytes.clone(),
            seconds: self.memory_trim_seconds.clone(),
        }
    }

    /// Resolves the per-service handles for `service` (done once, when the service appears).
    pub fn service(&self, service: &[u8]) -> ServiceMetrics {
        let label = String::from_utf8_lossy(service).into_owned();
        let labels = [label.as_str()];
        ServiceMetrics {
            requests: self.service_requests.with_label_values(&labels),
            errors: self.service_errors.with_label_values(&labels),
            workers: self.service_workers.with_label_values(&labels),
            queue_depth: self.service_queue_depth.with_label_values(&labels),
            queue_bytes: self.service_queue_bytes.with_label_values(&labels),
            latency: self.service_latency.with_label_values(&labels),
            all_workers: self.active_workers.clone(),
            all_queued: self.queued_requests.clone(),
            all_queued_bytes: self.queued_bytes.clone(),
            label,
        }
    }

    /// Drops the label sets of a service the broker forgot, so typos do not leak series.
    pub fn forget_service(&self, service: &ServiceMetrics) {
        let labels = [service.label.as_str()];
        let _ = self.service_requests.remove_label_values(&labels);
        let _ = self.service_errors.remove_label_values(&labels);
        let _ = self.service_workers.remove_label_values(&labels);
        let _ = self.service_queue_depth.remove_label_values(&labels);
        let _ = self.service_queue_bytes.remove_label_values(&labels);
        let _ = self.service_latency.remove_label_values(&labels);
    }

    /// The counters `mmi.broker` reports.
    pub fn counters_json(&self) -> Value {
        let errors: serde_json::Map<String, Value> = ERROR_CODES
            .iter()
            .zip(&self.errors)
            .map(|(code, c)| (code.as_str().to_owned(), json!(c.get())))
            .collect();
        let removed: serde_json::Map<String, Value> = REMOVALS
            .iter()
            .zip(&self.removed)
            .map(|((_, reason), c)| ((*reason).to_owned(), json!(c.get())))
            .collect();
        json!({
            "messages_received": self.messages_received.get(),
            "messages_sent": self.messages_sent.get(),
            "requests": self.requests.get(),
            "mmi_requests": self.mmi_requests.get(),
            "replies": self.replies.get(),
            "partials": self.partials.get(),
            "partials_dropped": self.partials_dropped.get(),
            "malformed": self.malformed.get(),
            "client_replies_dropped": self.client_replies_dropped.get(),
            "unroutable": self.unroutable.get(),
            "redispatches": self.redispatches.get(),
            "workers_registered": self.workers_registered.get(),
            "unknown_worker_messages": self.unknown_worker_messages.get(),
            "reserved_name_refused": self.reserved_name_refused.get(),
            "connections_accepted": self.connections_accepted.get(),
            "disconnects": self.disconnects.get(),
            "memory_trims": self.memory_trims.get(),
            "memory_trimmed_bytes": self.memory_trimmed_bytes.get(),
            "error_replies": errors,
            "workers_removed": removed,
            "security_refusals": crate::security::audit::Action::ALL
                .iter()
                .map(|a| (a.name().to_owned(), json!(self.security.refusals.with_label_values(&[a.name()]).get())))
                .collect::<serde_json::Map<String, Value>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_count_into_the_registry_and_forgotten_services_disappear() {
        let m = Metrics::new().unwrap();
        m.error(ErrorCode::Expired).inc();
        m.removed(WorkerRemoval::Unreachable).inc();
        let svc = m.service(b"echo");
        svc.requests.inc();
        svc.errors.inc();
        svc.add_queued(3, 30);
        let text = render(&m);
        assert!(text.contains("plantd_broker_error_replies_total{code=\"504\"} 1"));
        assert!(text.contains("plantd_broker_workers_removed_total{reason=\"unreachable\"} 1"));
        assert!(text.contains("plantd_broker_service_queue_depth{service=\"echo\"} 3"));
        assert!(text.contains("plantd_broker_service_errors_total{service=\"echo\"} 1"));
        assert!(text.contains("plantd_broker_queued_requests 3"));
        assert!(text.contains("plantd_broker_service_queue_bytes{service=\"echo\"} 30"));
        assert!(text.contains("plantd_broker_queued_bytes 30"));
        m.forget_service(&svc);
        assert!(!render(&m).contains("service=\"echo\""));
        assert_eq!(m.counters_json()["error_replies"]["504"], 1);
    }

    fn render(m: &Metrics) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&m.registry().gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }
}
