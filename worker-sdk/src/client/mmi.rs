//! MMI (8/MMI plus plantd's extensions): the queries the broker answers itself, and their replies.
//!
//! `mmi.service [name]` → `["200"]` or `["404"]`; `mmi.services`, `mmi.workers [name]` and
//! `mmi.broker` → `["200", json]` (or `["404"]` for an unknown service). Unknown JSON fields are
//! ignored and missing ones take defaults, so brokers can add fields without breaking clients.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ClientError;

/// `mmi.service`: does a service have workers?
pub(crate) const SERVICE: &str = "mmi.service";
/// `mmi.services`: all services.
pub(crate) const SERVICES: &str = "mmi.services";
/// `mmi.workers`: one service's workers.
pub(crate) const WORKERS: &str = "mmi.workers";
/// `mmi.broker`: broker facts and counters.
pub(crate) const BROKER: &str = "mmi.broker";

/// One service as `mmi.services` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// Registered workers.
    pub workers: u64,
    /// Workers that could take a request right now (idle, or with credit left).
    pub idle: u64,
    /// Requests waiting for a worker.
    pub queued: u64,
    /// Requests the broker received for the service (0 from a broker that does not report
    /// it). Counted while the broker remembers the service: a service forgotten after
    /// `service_linger_ms` starts again from 0.
    pub requests: u64,
    /// Of those, the ones answered with an error: by the broker (queue full, client over its
    /// limit, expired, re-dispatch given up) or by a worker (an error reply it relayed).
    pub errors: u64,
}

/// One worker as `mmi.workers` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerInfo {
    /// The worker's routing id, in hex.
    pub id: String,
    /// The service it serves.
    pub service: String,
    /// Its MDP dialect (`0.1`, `0.2`, `go`).
    pub dialect: String,
    /// `idle` (holds no request) or `busy`.
    pub state: String,
    /// Requests it may hold at once (1 for plain MDP; more with plantd's credit extension).
    pub credit: u32,
    /// Requests it holds now.
    pub in_flight: u32,
    /// Requests dispatched to it so far.
    pub requests: u64,
    /// Milliseconds since the broker last heard from it.
    pub last_seen_ms_ago: u64,
}

/// One pub/sub bus hosted by the broker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BusInfo {
    /// Bus name (`state`, `event`, `metric`).
    pub name: String,
    /// Where publishers connect.
    pub frontend: String,
    /// Where subscribers connect.
    pub backend: String,
    /// Capture endpoint, if any.
    pub capture: Option<String>,
}

/// The broker as `mmi.broker` reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerInfo {
    /// Broker version.
    pub version: String,
    /// Seconds since the broker started.
    pub uptime_secs: f64,
    /// The MDP endpoint it is bound to.
    pub endpoint: String,
    /// Number of services it knows.
    pub services: u64,
    /// Number of registered workers.
    pub workers: u64,
    /// Requests waiting for a worker, all services together.
    pub queued: u64,
    /// Requests held by workers, all services together.
    pub in_flight: u64,
    /// Named counters (requests routed, replies, errors, ...).
    pub counters: Map<String, Value>,
    /// Buses it hosts.
    pub buses: Vec<BusInfo>,
    /// Any other fields the broker sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Reads an `mmi.service` reply.
pub(crate) fn parse_service(body: &[Vec<u8>]) -> Result<bool, ClientError> {
    match body.first().map(Vec::as_slice) {
        Some(b"200") => Ok(true),
        Some(b"404") => Ok(false),
        _ => Err(unexpected(body)),
    }
}

/// Reads a `["200", json]` reply; `["404"]` is [`ClientError::NotFound`].
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[Vec<u8>]) -> Result<T, ClientError> {
    match body {
        [code, json, ..] if code.as_slice() == b"200" => serde_json::from_slice(json)
            .map_err(|e| ClientError::Protocol(format!("invalid MMI JSON: {e}"))),
        [code, ..] if code.as_slice() == b"404" => Err(ClientError::NotFound),
        _ => Err(unexpected(body)),
    }
}

fn unexpected(body: &[Vec<u8>]) -> ClientError {
    match body.first() {
        Some(code)
            if !code.is_empty() && code.len() <= 3 && code.iter().all(u8::is_ascii_digit) =>
        {
            ClientError::Broker {
                code: String::from_utf8_lossy(code).into_owned(),
                message: "unexpected MMI reply code".to_owned(),
            }
        }
        _ => ClientError::Protocol(format!("unexpected MMI reply of {} frames", body.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn service_reply_codes() {
        assert!(parse_service(&frames(&[b"200"])).unwrap());
        assert!(!parse_service(&frames(&[b"404"])).unwrap());
        assert!(matches!(
            parse_service(&frames(&[b"400"])),
            Err(ClientError::Broker { code, .. }) if code == "400"
        ));
        assert!(matches!(parse_service(&[]), Err(ClientError::Protocol(_))));
    }

    #[test]
    fn json_replies_tolerate_unknown_and_missing_fields() {
        let services: Vec<ServiceInfo> = parse_json(&frames(&[
            b"200",
            br#"[{"name":"echo","workers":2,"idle":1,"queued":0,"requests":7,"errors":1,"future":true},{"name":"x"}]"#,
        ]))
        .unwrap();
        assert_eq!(services.len(), 2);
        assert_eq!(services[0].workers, 2);
        assert_eq!((services[0].requests, services[0].errors), (7, 1));
        // An older broker reports neither.
        assert_eq!(
            (services[1].queued, services[1].requests, services[1].errors),
            (0, 0, 0)
        );

        let info: BrokerInfo = parse_json(&frames(&[
            b"200",
            br#"{"version":"0.1.0","uptime_secs":3,"endpoint":"tcp://*:9797","services":1,
                "workers":2,"counters":{"requests":5},"buses":[],"pid":42}"#,
        ]))
        .unwrap();
        assert_eq!(info.uptime_secs, 3.0);
        assert_eq!(info.counters["requests"], 5);
        assert_eq!(info.extra["pid"], 42);
    }

    #[test]
    fn json_reply_errors() {
        assert!(matches!(
            parse_json::<Vec<WorkerInfo>>(&frames(&[b"404"])),
            Err(ClientError::NotFound)
        ));
        assert!(matches!(
            parse_json::<Vec<WorkerInfo>>(&frames(&[b"200", b"not json"])),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            parse_json::<Vec<WorkerInfo>>(&frames(&[b"501"])),
            Err(ClientError::Broker { code, .. }) if code == "501"
        ));
    }
}
