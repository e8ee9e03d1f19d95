//! `plant metrics query|summary`, `plant events query` and `plant logger stats`: questions to the
//! logger service (`org.plantd.Logger`) about what it stored from the buses.
//!
//! Each command sends one `[operation, json]` request (docs/logger.md) with the flags mapped onto
//! the logger's fields: `--prefix` → `topic_prefix`, `--bus` → `bus`, `--since`/`--until` →
//! `since`/`until`, `--limit` → `limit`, `--bucket` → `bucket`, `--malformed` → `malformed`.
//! Times and durations that are plain numbers travel as JSON numbers (Unix seconds, seconds);
//! anything else (`2024-05-01T12:00:00Z`, `now`, `-15m`, `5m`) as a string the logger parses and,
//! if it cannot, rejects with `INVALID_REQUEST` naming the field. `--output json` prints the
//! reply's `data`; text prints a table (stats: the JSON).

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::context::{format_duration, Access, Context};
use crate::error::CliError;
use crate::output::{self, OutputFormat};

/// The logger's MDP service name.
pub const LOGGER_SERVICE: &str = "org.plantd.Logger";
/// Longest payload shown in a text row of `events query`, in characters.
const PAYLOAD_WIDTH: usize = 60;

/// Filters shared by every query.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Only topics starting with this.
    #[arg(long, value_name = "TOPIC")]
    pub prefix: Option<String>,
    /// Only what arrived on this bus (state, event, metric).
    #[arg(long)]
    pub bus: Option<String>,
    /// Not before this time: RFC 3339, Unix seconds, now, or -<duration> ago (-15m, -2h, -1d).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
}

/// `plant metrics` subcommands.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum MetricsCommand {
    /// List stored metrics, newest first.
    Query {
        #[command(flatten)]
        filters: Filters,
        /// Most rows to return (the logger caps it at its max_query_rows).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// Count, min, max and average per topic per time bucket (for plots).
    Summary {
        #[command(flatten)]
        filters: Filters,
        /// Bucket width: seconds or a duration (30s, 5m, 1h); the logger's default is 60 s.
        #[arg(long, value_name = "DURATION")]
        bucket: Option<String>,
    },
}

/// `plant events` subcommands.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum EventsCommand {
    /// List stored events (everything on a bus that is not a metric), newest first.
    Query {
        #[command(flatten)]
        filters: Filters,
        /// Most rows to return (the logger caps it at its max_query_rows).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Only events whose payload could not be decoded (stored as base64).
        #[arg(long)]
        malformed: bool,
    },
}

/// `plant logger` subcommands.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum LoggerCommand {
    /// Row counts, time span and per-bus counts of the logger's database.
    Stats,
}

/// A time or duration flag as the logger takes it: a number when it is one, else the string.
fn number_or_string(text: &str) -> Value {
    match text.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => json!(n),
        _ => json!(text),
    }
}

fn insert_filters(body: &mut Map<String, Value>, filters: &Filters) {
    if let Some(prefix) = &filters.prefix {
        body.insert("topic_prefix".into(), json!(prefix));
    }
    if let Some(bus) = &filters.bus {
        body.insert("bus".into(), json!(bus));
    }
    if let Some(since) = &filters.since {
        body.insert("since".into(), number_or_string(since));
    }
    if let Some(until) = &filters.until {
        body.insert("until".into(), number_or_string(until));
    }
}

/// The `(operation, body)` of a metrics command.
pub fn metrics_request(command: &MetricsCommand) -> (&'static str, Value) {
    let mut body = Map::new();
    let operation = match command {
        MetricsCommand::Query { filters, limit } => {
            insert_filters(&mut body, filters);
            if let Some(limit) = limit {
                body.insert("limit".into(), json!(limit));
            }
            "metrics-query"
        }
        MetricsCommand::Summary { filters, bucket } => {
            insert_filters(&mut body, filters);
            if let Some(bucket) = bucket {
                body.insert("bucket".into(), number_or_string(bucket));
            }
            "metrics-summary"
        }
    };
    (operation, Value::Object(body))
}

/// The `(operation, body)` of an events command.
pub fn events_request(command: &EventsCommand) -> (&'static str, Value) {
    let mut body = Map::new();
    match command {
        EventsCommand::Query {
            filters,
            limit,
            malformed,
        } => {
            insert_filters(&mut body, filters);
            if let Some(limit) = limit {
                body.insert("limit".into(), json!(limit));
            }
            if *malformed {
                body.insert("malformed".into(), json!(true));
            }
        }
    }
    ("events-query", Value::Object(body))
}

/// Sends one request to the logger and returns the reply's data.
fn call(ctx: &Context, operation: &str, body: &Value) -> Result<Value, CliError> {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        crate::session::attach(ctx, map)?;
    }
    let client = ctx.client(Access::Read)?;
    let reply = client
        .request(
            LOGGER_SERVICE,
            vec![operation.as_bytes().to_vec(), body.to_string().into_bytes()],
        )
        .map_err(|e| ctx.request_error(&client, LOGGER_SERVICE, e))?;
    super::reply::data(LOGGER_SERVICE, &reply)
}

/// A JSON scalar as a table cell (`-` for null or missing).
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The rows under `key` of a reply's data.
fn rows<'a>(data: &'a Value, key: &str) -> &'a [Value] {
    data.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Runs `plant metrics ...`.
pub fn run_metrics(ctx: &Context, command: MetricsCommand) -> Result<(), CliError> {
    let (operation, body) = metrics_request(&command);
    let data = call(ctx, operation, &body)?;
    if ctx.output == OutputFormat::Json {
        return output::print_json(&data);
    }
    match command {
        MetricsCommand::Query { .. } => {
            let table: Vec<Vec<String>> = rows(&data, "metrics")
                .iter()
                .map(|m| {
                    vec![
                        cell(&m["time"]),
                        cell(&m["topic"]),
                        cell(&m["value"]),
                        cell(&m["units"]),
                    ]
                })
                .collect();
            output::print_table(&["TIME", "TOPIC", "VALUE", "UNITS"], &table)
        }
        MetricsCommand::Summary { .. } => {
            let mut table = Vec::new();
            for series in rows(&data, "series") {
                for bucket in rows(series, "buckets") {
                    table.push(vec![
                        cell(&series["topic"]),
                        cell(&bucket["start"]),
                        cell(&bucket["count"]),
                        cell(&bucket["min"]),
                        cell(&bucket["max"]),
                        cell(&bucket["avg"]),
                    ]);
                }
            }
            let bucket = data["bucket_secs"]
                .as_f64()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .map_or_else(|| cell(&data["bucket_secs"]), format_duration);
            output::print_line(&format!("bucket {bucket}"))?;
            output::print_table(&["TOPIC", "START", "COUNT", "MIN", "MAX", "AVG"], &table)
        }
    }
}

/// Runs `plant events ...`.
pub fn run_events(ctx: &Context, command: EventsCommand) -> Result<(), CliError> {
    let (operation, body) = events_request(&command);
    let data = call(ctx, operation, &body)?;
    if ctx.output == OutputFormat::Json {
        return output::print_json(&data);
    }
    let table: Vec<Vec<String>> = rows(&data, "events")
        .iter()
        .map(|e| {
            let mut encoding = cell(&e["encoding"]);
            if e["malformed"] == json!(true) {
                encoding.push_str(" (malformed)");
            }
            let mut payload = e["payload"].to_string();
            if payload.chars().count() > PAYLOAD_WIDTH {
                payload = payload.chars().take(PAYLOAD_WIDTH - 3).collect::<String>() + "...";
            }
            vec![
                cell(&e["time"]),
                cell(&e["bus"]),
                cell(&e["topic"]),
                encoding,
                payload,
            ]
        })
        .collect();
    output::print_table(&["TIME", "BUS", "TOPIC", "ENCODING", "PAYLOAD"], &table)
}

/// Runs `plant logger ...`.
pub fn run_logger(ctx: &Context, command: LoggerCommand) -> Result<(), CliError> {
    match command {
        LoggerCommand::Stats => output::print_json(&call(ctx, "stats", &json!({}))?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_onto_the_logger_fields() {
        let filters = Filters {
            prefix: Some("org.plantd.metric.h1".into()),
            bus: Some("metric".into()),
            since: Some("-15m".into()),
            until: Some("1700000000.5".into()),
        };
        assert_eq!(
            metrics_request(&MetricsCommand::Query {
                filters: filters.clone(),
                limit: Some(5),
            }),
            (
                "metrics-query",
                json!({"topic_prefix": "org.plantd.metric.h1", "bus": "metric",
                       "since": "-15m", "until": 1700000000.5, "limit": 5})
            )
        );
        assert_eq!(
            metrics_request(&MetricsCommand::Summary {
                filters: Filters::default(),
                bucket: Some("60".into()),
            }),
            ("metrics-summary", json!({"bucket": 60.0}))
        );
        assert_eq!(
            metrics_request(&MetricsCommand::Summary {
                filters: Filters {
                    since: Some("2024-01-01T00:00:00Z".into()),
                    ..Filters::default()
                },
                bucket: Some("5m".into()),
            }),
            (
                "metrics-summary",
                json!({"since": "2024-01-01T00:00:00Z", "bucket": "5m"})
            )
        );
        assert_eq!(
            events_request(&EventsCommand::Query {
                filters: Filters {
                    bus: Some("event".into()),
                    ..Filters::default()
                },
                limit: None,
                malformed: true,
            }),
            ("events-query", json!({"bus": "event", "malformed": true}))
        );
        assert_eq!(
            events_request(&EventsCommand::Query {
                filters: Filters::default(),
                limit: None,
                malformed: false,
            }),
            ("events-query", json!({}))
        );
    }
}
