//! The Majordomo Management Interface: queries the broker answers itself (8/MMI plus plantd's own).
//!
//! | query | argument | reply body |
//! |---|---|---|
//! | `mmi.service` | service name | `["200"]` if it has a registered worker, else `["404"]` |
//! | `mmi.services` | — | `["200", json]`: `[{"name","workers","idle","queued","queued_bytes","requests","errors"}]` |
//! | `mmi.workers` | service name | `["200", json]`: `[{"id","service","dialect","state","credit","in_flight","requests","last_seen_ms_ago"}]`, or `["404"]` |
//! | `mmi.broker` | — | `["200", json]`: version, uptime, endpoint, counts, counters, buses |
//! | `mmi.service`/`mmi.workers` without argument | | `["400"]` |
//! | any other `mmi.*` | | `["501"]` |

use std::time::Instant;

use plantd_worker_sdk::protocol::Frame;
use serde::Serialize;
use serde_json::json;

use crate::id_map::IdMap;
use crate::metrics::Metrics;
use crate::service::ServiceQueue;
use crate::slots::Slots;
use crate::worker::WorkerRecord;

/// Prefix of every MMI service name; workers may not register these.
pub const MMI_PREFIX: &[u8] = b"mmi.";

/// The MMI queries this broker implements.
pub const QUERIES: [&str; 4] = ["mmi.service", "mmi.services", "mmi.workers", "mmi.broker"];

/// One pub/sub bus the broker hosts, as `mmi.broker` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BusSummary {
    /// Bus name (`state`, `event`, `metric`, ...).
    pub name: String,
    /// Endpoint publishers connect to (XSUB).
    pub frontend: String,
    /// Endpoint subscribers connect to (XPUB).
    pub backend: String,
    /// Capture endpoint, if any.
    pub capture: Option<String>,
}

/// Static facts about this broker.
#[derive(Clone, Debug)]
pub struct BrokerInfo {
    /// Crate version.
    pub version: &'static str,
    /// The MDP endpoint as configured.
    pub endpoint: String,
    /// When the broker started.
    pub started: Instant,
    /// The buses it hosts.
    pub buses: Vec<BusSummary>,
    /// False when buses are turned off in the configuration (then `buses` is empty).
    pub buses_enabled: bool,
}

/// Read-only access to the broker's state while answering a query.
pub struct View<'a> {
    /// Services by slot.
    pub services: &'a Slots<ServiceQueue>,
    /// Service slot by name.
    pub service_ids: &'a IdMap<usize>,
    /// Workers by slot.
    pub workers: &'a Slots<WorkerRecord>,
    /// Static facts.
    pub info: &'a BrokerInfo,
    /// Counters.
    pub metrics: &'a Metrics,
    /// The current time.
    pub now: Instant,
}

/// Answers MMI `query` with arguments `args`, returning the reply body.
pub fn answer(query: &[u8], args: &[Frame], view: &View<'_>) -> Vec<Frame> {
    let arg = args.first().map(|f| &f[..]);
    match query {
        b"mmi.service" => match arg {
            None => code("400"),
            Some(name) => {
                let known_query = QUERIES.iter().any(|q| q.as_bytes() == name);
                if known_query || service(view, name).is_some_and(|s| s.workers() > 0) {
                    code("200")
                } else {
                    code("404")
                }
            }
        },
        b"mmi.services" => {
            let mut list: Vec<_> = view
                .services
                .iter()
                .map(|(_, s)| {
                    json!({
                        "name": s.display_name(),
                        "workers": s.workers(),
                        "idle": s.idle(),
                        "queued": s.queued(),
                        "queued_bytes": s.queued_bytes(),
                        "requests": s.metrics().requests.get(),
                        "errors": s.metrics().errors.get(),
                    })
                })
                .collect();
            list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            ok_json(&serde_json::Value::Array(list))
        }
        b"mmi.workers" => match arg {
            None => code("400"),
            Some(name) => match view.service_ids.get(name) {
                Some(&slot) if service(view, name).is_some_and(|s| s.workers() > 0) => {
                    let service_name = String::from_utf8_lossy(name);
                    let list: Vec<_> = view
                        .workers
                        .iter()
                        .filter(|(_, w)| w.service == slot)
                        .map(|(_, w)| {
                            json!({
                                "id": w.hex_id(),
                                "service": service_name,
                                "dialect": w.dialect.name(),
                                "state": if w.jobs.is_empty() { "idle" } else { "busy" },
                                "credit": w.credit,
                                "in_flight": w.jobs.len(),
                                "requests": w.requests,
                                "last_seen_ms_ago":
                                    view.now.saturating_duration_since(w.last_seen).as_millis() as u64,
                            })
                        })
                        .collect();
                    ok_json(&serde_json::Value::Array(list))
                }
                _ => code("404"),
            },
        },
        b"mmi.broker" => {
            let queued: usize = view.services.iter().map(|(_, s)| s.queued()).sum();
            let in_flight: usize = view.workers.iter().map(|(_, w)| w.jobs.len()).sum();
            ok_json(&json!({
                "version": view.info.version,
                "uptime_secs": view.now.saturating_duration_since(view.info.started).as_secs(),
                "endpoint": view.info.endpoint,
                "services": view.services.len(),
                "workers": view.workers.len(),
                "queued": queued,
                "in_flight": in_flight,
                "connections": view.metrics.connections.get(),
                "counters": view.metrics.counters_json(),
                "buses": view.info.buses,
                "buses_enabled": view.info.buses_enabled,
            }))
        }
        _ => code("501"),
    }
}

fn service<'a>(view: &View<'a>, name: &[u8]) -> Option<&'a ServiceQueue> {
    let slot = *view.service_ids.get(name)?;
    view.services.get(slot)
}

fn code(code: &str) -> Vec<Frame> {
    vec![Frame::from(code)]
}

fn ok_json(value: &serde_json::Value) -> Vec<Frame> {
    vec![Frame::from("200"), Frame::from(value.to_string().as_str())]
}
