//! Read queries over the stored metrics and events: newest-first listings, per-bucket summaries
//! and table statistics. Every filter is a bound parameter; only our own column names are pasted
//! into SQL.

use chrono::{DateTime, SecondsFormat};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};
use serde::Serialize;
use serde_json::{json, Value};

/// Filters shared by every query. Times are Unix microseconds; `since` is inclusive, `until`
/// exclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only topics starting with this (`""` = all).
    pub topic_prefix: String,
    /// Only this bus, if set.
    pub bus: Option<String>,
    /// Not before this time.
    pub since: Option<i64>,
    /// Before this time.
    pub until: Option<i64>,
}

impl Filter {
    /// The `WHERE` clause (possibly empty) and its parameters.
    fn sql(&self) -> (String, Vec<SqlValue>) {
        let mut clauses = Vec::new();
        let mut params = Vec::new();
        if !self.topic_prefix.is_empty() {
            // A range keeps the (topic, time) index usable, unlike LIKE or substr(). U+10FFFF is
            // the largest character, so every topic with the prefix sorts below prefix+U+10FFFF.
            clauses.push("topic >= ? AND topic < ?");
            params.push(SqlValue::Text(self.topic_prefix.clone()));
            params.push(SqlValue::Text(format!("{}\u{10FFFF}", self.topic_prefix)));
        }
        if let Some(bus) = &self.bus {
            clauses.push("bus = ?");
            params.push(SqlValue::Text(bus.clone()));
        }
        if let Some(since) = self.since {
            clauses.push("time >= ?");
            params.push(SqlValue::Integer(since));
        }
        if let Some(until) = self.until {
            clauses.push("time < ?");
            params.push(SqlValue::Integer(until));
        }
        let sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        (sql, params)
    }
}

/// A stored metric as queries return it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredMetric {
    /// RFC 3339.
    pub time: String,
    /// Bus it arrived on.
    pub bus: String,
    /// Topic.
    pub topic: String,
    /// Producer.
    pub source: String,
    /// Channel.
    pub channel: String,
    /// Reading (`null` for NaN).
    pub value: Option<f64>,
    /// Units.
    pub units: String,
    /// Tags.
    pub tags: Value,
}

/// A stored event as queries return it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredEvent {
    /// RFC 3339.
    pub time: String,
    /// Bus it arrived on.
    pub bus: String,
    /// Topic.
    pub topic: String,
    /// `msgpack`, `json`, `base64`, `multipart` or `none`.
    pub encoding: String,
    /// The payload (a base64 string when `encoding` is `base64`).
    pub payload: Value,
    /// True when the payload could not be decoded.
    pub malformed: bool,
}

/// One time bucket of one topic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    /// Bucket start, RFC 3339 (buckets are aligned to the Unix epoch).
    pub start: String,
    /// Readings with a value in the bucket.
    pub count: u64,
    /// Smallest reading.
    pub min: Option<f64>,
    /// Largest reading.
    pub max: Option<f64>,
    /// Mean reading.
    pub avg: Option<f64>,
}

/// The buckets of one topic, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    /// Topic.
    pub topic: String,
    /// Its buckets.
    pub buckets: Vec<Bucket>,
}

/// Formats Unix microseconds as RFC 3339 (UTC).
pub fn format_time(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| us.to_string())
}

/// Metrics matching `filter`, newest first, at most `limit`.
pub fn metrics(
    conn: &Connection,
    filter: &Filter,
    limit: usize,
) -> rusqlite::Result<Vec<StoredMetric>> {
    let (clause, mut params) = filter.sql();
    params.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT time, bus, topic, source, channel, value, units, tags FROM metrics {clause}
         ORDER BY time DESC, id DESC LIMIT ?"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params), |row| {
        let tags: String = row.get(7)?;
        Ok(StoredMetric {
            time: format_time(row.get(0)?),
            bus: row.get(1)?,
            topic: row.get(2)?,
            source: row.get(3)?,
            channel: row.get(4)?,
            value: row.get(5)?,
            units: row.get(6)?,
            tags: serde_json::from_str(&tags).unwrap_or(Value::String(tags)),
        })
    })?;
    rows.collect()
}

/// Count, min, max and average per topic per `bucket_us`-long bucket, at most `max_buckets`
/// buckets in all.
pub fn summary(
    conn: &Connection,
    filter: &Filter,
    bucket_us: i64,
    max_buckets: usize,
) -> rusqlite::Result<Vec<Series>> {
    let (clause, params) = filter.sql();
    let mut all = vec![SqlValue::Integer(bucket_us)];
    all.extend(params);
    all.push(SqlValue::Integer(
        i64::try_from(max_buckets).unwrap_or(i64::MAX),
    ));
    // Floor division that is also right for times before 1970.
    let sql = format!(
        "SELECT topic, time - (((time % ?1) + ?1) % ?1) AS bucket,
                count(value), min(value), max(value), avg(value)
         FROM metrics {clause}
         GROUP BY topic, bucket ORDER BY topic, bucket LIMIT ?"
    );
    // The filter's anonymous `?`s continue from 2: SQLite numbers each one past the largest
    // index used so far, and `?1` is the bucket width.
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut series: Vec<Series> = Vec::new();
    let mut rows = stmt.query(params_from_iter(all))?;
    while let Some(row) = rows.next()? {
        let topic: String = row.get(0)?;
        let bucket = Bucket {
            start: format_time(row.get(1)?),
            count: row.get::<_, i64>(2)?.max(0) as u64,
            min: row.get(3)?,
            max: row.get(4)?,
            avg: row.get(5)?,
        };
        match series.last_mut() {
            Some(s) if s.topic == topic => s.buckets.push(bucket),
            _ => series.push(Series {
                topic,
                buckets: vec![bucket],
            }),
        }
    }
    Ok(series)
}

/// Events matching `filter` (and only malformed ones if asked), newest first, at most `limit`.
pub fn events(
    conn: &Connection,
    filter: &Filter,
    malformed_only: bool,
    limit: usize,
) -> rusqlite::Result<Vec<StoredEvent>> {
    let (mut clause, mut params) = filter.sql();
    if malformed_only {
        clause = if clause.is_empty() {
            "WHERE malformed = 1".into()
        } else {
            format!("{clause} AND malformed = 1")
        };
    }
    params.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT time, bus, topic, encoding, payload, malformed FROM events {clause}
         ORDER BY time DESC, id DESC LIMIT ?"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params), |row| {
        let payload: String = row.get(4)?;
        Ok(StoredEvent {
            time: format_time(row.get(0)?),
            bus: row.get(1)?,
            topic: row.get(2)?,
            encoding: row.get(3)?,
            payload: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
            malformed: row.get(5)?,
        })
    })?;
    rows.collect()
}

/// Row counts, time span and per-bus counts of both tables.
pub fn stats(conn: &Connection) -> rusqlite::Result<Value> {
    let span = |table: &str| -> rusqlite::Result<(i64, Option<i64>, Option<i64>)> {
        // `table` is one of our two constants.
        conn.query_row(
            &format!("SELECT count(*), min(time), max(time) FROM {table}"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    };
    let (metric_rows, metric_oldest, metric_newest) = span("metrics")?;
    let (event_rows, event_oldest, event_newest) = span("events")?;
    let malformed: i64 =
        conn.query_row("SELECT count(*) FROM events WHERE malformed = 1", [], |r| {
            r.get(0)
        })?;
    let mut buses = serde_json::Map::new();
    for table in ["metrics", "events"] {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT bus, count(*) FROM {table} GROUP BY bus ORDER BY bus"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let bus: String = row.get(0)?;
            let count: i64 = row.get(1)?;
            let entry = buses
                .entry(bus)
                .or_insert_with(|| json!({"metrics": 0, "events": 0}));
            entry[table] = json!(count);
        }
    }
    let oldest = metric_oldest.into_iter().chain(event_oldest).min();
    let newest = metric_newest.into_iter().chain(event_newest).max();
    Ok(json!({
        "rows": metric_rows + event_rows,
        "oldest": oldest.map(format_time),
        "newest": newest.map(format_time),
        "metrics": {
            "rows": metric_rows,
            "oldest": metric_oldest.map(format_time),
            "newest": metric_newest.map(format_time),
        },
        "events": {
            "rows": event_rows,
            "oldest": event_oldest.map(format_time),
            "newest": event_newest.map(format_time),
            "malformed": malformed,
        },
        "buses": buses,
        "schema_version": super::migrations::current_version(conn)?,
    }))
}
