//! The `org.plantd.Logger` MDP operations: `[operation, json]` requests, DESIGN.md §5 replies.
//!
//! | operation | parameters | data |
//! |---|---|---|
//! | `metrics-query` | `topic_prefix`, `bus`, `since`, `until`, `limit` | `{"metrics":[...],"count"}`, newest first |
//! | `metrics-summary` | `topic_prefix`, `bus`, `since`, `until`, `bucket` | `{"bucket_secs","series":[{"topic","buckets":[{"start","count","min","max","avg"}]}]}` |
//! | `events-query` | `bus`, `topic_prefix`, `since`, `until`, `limit`, `malformed` | `{"events":[...],"count"}`, newest first |
//! | `stats` | — | rows, oldest, newest, per-table and per-bus counts |
//!
//! Times (`since` inclusive, `until` exclusive) are RFC 3339 strings, Unix seconds, `"now"`, or
//! `"-<duration>"` meaning that long ago (`"-15m"`). `bucket` is seconds or a duration (`"5m"`).

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use plantd_worker_sdk::auth::{AuthError, TokenVerifier};

use crate::metrics::LoggerMetrics;
use crate::store::query::Filter;
use crate::store::Queries;

/// Rows a listing returns when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Bucket width when `metrics-summary` names none: one minute.
pub const DEFAULT_BUCKET_US: i64 = 60_000_000;

/// A stable error code of the logger service (`{"success":false,"error":{"code":...}}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Bad JSON, or a parameter of the wrong type or out of range (the message names it).
    InvalidRequest,
    /// The operation frame names no known operation.
    UnknownOperation,
    /// The database failed.
    StorageError,
    /// No token, or one that is malformed, forged or signed by an unknown key.
    Unauthenticated,
    /// A genuine token past its expiry.
    TokenExpired,
    /// A genuine token whose session was ended.
    TokenRevoked,
    /// A valid token without `logger:read`.
    PermissionDenied,
    /// Tokens cannot be checked yet (identity's keys were never obtained).
    Unavailable,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::UnknownOperation => "UNKNOWN_OPERATION",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::TokenRevoked => "TOKEN_REVOKED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }
}

/// The failure of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

fn invalid(message: impl Into<String>) -> OpError {
    OpError {
        code: ErrorCode::InvalidRequest,
        message: message.into(),
    }
}

/// The permission every query needs.
pub const READ_PERMISSION: &str = "logger:read";

impl From<AuthError> for OpError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            AuthError::TokenExpired => ErrorCode::TokenExpired,
            AuthError::TokenRevoked => ErrorCode::TokenRevoked,
            AuthError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            AuthError::Unavailable(_) => ErrorCode::Unavailable,
        };
        OpError {
            code,
            message: e.to_string(),
        }
    }
}

/// Serves the query operations from read-only connections.
pub struct Ops {
    readers: Queries,
    metrics: LoggerMetrics,
    max_rows: usize,
    /// Checks each query's `token` for [`READ_PERMISSION`]; `None` under `auth.mode: off`.
    verifier: Option<TokenVerifier>,
}

impl Ops {
    /// Operations over `readers`; listings return at most `max_rows` rows.
    pub fn new(readers: Queries, metrics: LoggerMetrics, max_rows: usize) -> Self {
        Ops {
            readers,
            metrics,
            max_rows,
            verifier: None,
        }
    }

    /// These operations, each query needing a token granting [`READ_PERMISSION`].
    pub fn with_verifier(mut self, verifier: TokenVerifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Handles one request body and returns the one-frame reply. Never fails: every problem is an
    /// error envelope.
    pub fn handle(&self, request: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let started = Instant::now();
        let operation = request
            .first()
            .map(|op| String::from_utf8_lossy(op).into_owned())
            .unwrap_or_default();
        let result = self.dispatch(&operation, request.get(1).map(Vec::as_slice));
        let known = is_known(&operation);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.metrics.request(
            if known { &operation } else { "unknown" },
            outcome,
            started.elapsed().as_secs_f64(),
        );
        let reply = match result {
            Ok(data) => json!({"success": true, "data": data}),
            Err(e) => json!({
                "success": false,
                "error": {"code": e.code.as_str(), "message": e.message},
            }),
        };
        vec![reply.to_string().into_bytes()]
    }

    fn dispatch(&self, operation: &str, body: Option<&[u8]>) -> Result<Value, OpError> {
        let params = parse_params(body)?;
        if let Some(verifier) = &self.verifier {
            if is_known(operation) {
                let token = match params.get("token") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(t)) => Some(t.as_str()),
                    Some(_) => return Err(invalid("token must be a string")),
                };
                verifier.authorize(token, READ_PERMISSION)?;
            }
        }
        let storage = |e: crate::store::StoreError| OpError {
            code: ErrorCode::StorageError,
            message: e.to_string(),
        };
        match operation {
            "metrics-query" => {
                let filter = filter(&params)?;
                let limit = self.limit(&params)?;
                let rows = self
                    .readers
                    .metrics(&filter, limit)
                    .map_err(storage)?;
                Ok(json!({"count": rows.len(), "metrics": rows}))
            }
            "metrics-summary" => {
                let filter = filter(&params)?;
                let bucket_us = match params.get("bucket") {
                    None | Some(Value::Null) => DEFAULT_BUCKET_US,
                    Some(v) => duration_us(v).ok_or_else(|| {
                        invalid("bucket must be a positive number of seconds or a duration like \"5m\"")
                    })?,
                };
                if bucket_us <= 0 {
                    return Err(invalid("bucket must be positive"));
                }
                let series = self
                    .readers
                    .summary(&filter, bucket_us, self.max_rows)
                    .map_err(storage)?;
                Ok(json!({"bucket_secs": bucket_us as f64 / 1e6, "series": series}))
            }
            "events-query" => {
                let filter = filter(&params)?;
                let limit = self.limit(&params)?;
                let malformed = match params.get("malformed") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(invalid("malformed must be true or false")),
                };
                let rows = self
                    .readers
                    .events(&filter, malformed, limit)
                    .map_err(storage)?;
                Ok(json!({"count": rows.len(), "events": rows}))
            }
            "stats" => self.readers.stats().map_err(storage),
            "" => Err(invalid("missing operation frame")),
            other => Err(OpError {
                code: ErrorCode::UnknownOperation,
                message: format!(
                    "unknown operation {other:?} (expected metrics-query, metrics-summary, events-query or stats)"
                ),
            }),
        }
    }

    fn limit(&self, params: &Map<String, Value>) -> Result<usize, OpError> {
        match params.get("limit") {
            None | Some(Value::Null) => Ok(DEFAULT_LIMIT.min(self.max_rows)),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Ok((n as usize).min(self.max_rows)),
                _ => Err(invalid("limit must be a positive integer")),
            },
        }
    }
}

/// True for the operations this service has.
fn is_known(operation: &str) -> bool {
    matches!(
        operation,
        "metrics-query" | "metrics-summary" | "events-query" | "stats"
    )
}

/// The JSON object frame; a missing or empty frame means `{}`.
fn parse_params(body: Option<&[u8]>) -> Result<Map<String, Value>, OpError> {
    let body = match body {
        None => return Ok(Map::new()),
        Some(b) if b.iter().all(u8::is_ascii_whitespace) => return Ok(Map::new()),
        Some(b) => b,
    };
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("the request body must be a JSON object")),
        Err(e) => Err(invalid(format!("the request body is not valid JSON: {e}"))),
    }
}

fn filter(params: &Map<String, Value>) -> Result<Filter, OpError> {
    let text = |key: &str| -> Result<Option<String>, OpError> {
        match params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("{key} must be a string"))),
        }
    };
    let time = |key: &str| -> Result<Option<i64>, OpError> {
        match params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse_time(v, Utc::now()).map(Some).ok_or_else(|| {
                invalid(format!(
                    "{key} must be an RFC 3339 time, Unix seconds, \"now\" or \"-<duration>\" such as \"-1h\""
                ))
            }),
        }
    };
    Ok(Filter {
        topic_prefix: text("topic_prefix")?.unwrap_or_default(),
        bus: text("bus")?.filter(|b| !b.is_empty()),
        since: time("since")?,
        until: time("until")?,
    })
}

/// A time parameter in Unix microseconds.
fn parse_time(value: &Value, now: DateTime<Utc>) -> Option<i64> {
    match value {
        Value::Number(n) => {
            let secs = n.as_f64().filter(|s| s.is_finite() && s.abs() < 1e11)?;
            Some((secs * 1e6).round() as i64)
        }
        Value::String(s) if s == "now" => Some(now.timestamp_micros()),
        Value::String(s) if s.starts_with('-') => {
            let ago = duration_us(&Value::String(s[1..].to_owned()))?;
            Some(now.timestamp_micros() - ago)
        }
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_micros()),
        _ => None,
    }
}

/// A duration in microseconds: a number of seconds, or `<number><unit>` with unit `us`, `ms`,
/// `s`, `m`, `h` or `d`.
fn duration_us(value: &Value) -> Option<i64> {
    let (number, scale) = match value {
        Value::Number(n) => (n.as_f64()?, 1e6),
        Value::String(s) => {
            let s = s.trim();
            let split = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let scale = match unit {
                "us" => 1.0,
                "ms" => 1e3,
                "" | "s" => 1e6,
                "m" => 60e6,
                "h" => 3600e6,
                "d" => 86_400e6,
                _ => return None,
            };
            (digits.parse::<f64>().ok()?, scale)
        }
        _ => return None,
    };
    let us = (number * scale).round();
    (us.is_finite() && us > 0.0 && us < 1e18).then_some(us as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_parse() {
        assert_eq!(duration_us(&json!(60)), Some(60_000_000));
        assert_eq!(duration_us(&json!("5m")), Some(300_000_000));
        assert_eq!(duration_us(&json!("250ms")), Some(250_000));
        assert_eq!(duration_us(&json!("1.5h")), Some(5_400_000_000));
        assert_eq!(duration_us(&json!("5 parsecs")), None);
        assert_eq!(duration_us(&json!(0)), None);
        assert_eq!(duration_us(&json!(-3)), None);
        let now = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = now.timestamp_micros();
        assert_eq!(parse_time(&json!("now"), now), Some(t));
        assert_eq!(parse_time(&json!("-1h"), now), Some(t - 3_600_000_000));
        assert_eq!(
            parse_time(&json!("2024-01-01T00:00:01Z"), now),
            Some(t + 1_000_000)
        );
        assert_eq!(parse_time(&json!(1704067200.5), now), Some(t + 500_000));
        assert_eq!(parse_time(&json!("yesterday"), now), None);
        assert_eq!(parse_time(&json!(true), now), None);
    }

    #[test]
    fn params_must_be_an_object() {
        assert!(parse_params(None).unwrap().is_empty());
        assert!(parse_params(Some(b" ")).unwrap().is_empty());
        assert_eq!(
            parse_params(Some(b"[1]")).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            parse_params(Some(b"{nope")).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }
}
