//! The PostgreSQL backend of the logger: the same rows, queries and replies as on SQLite.
//!
//! The metrics table has the seed's TimescaleDB shape (`timestamp`, `service_name`, `metric_name`,
//! `value`, `tags` as `jsonb`), plus the columns plantd keeps on SQLite too (`bus`, `channel`,
//! `units`). It becomes a hypertable (`create_hypertable`) when the `timescaledb` extension can
//! be loaded, and stays a plain indexed table otherwise. Batches go in with binary `COPY`, one
//! transaction per batch. Topic and name columns sort bytewise (`COLLATE "C"`), as SQLite's do.
//!
//! PostgreSQL text cannot hold NUL characters: a NUL in a topic, source or payload from the bus is
//! stored as U+FFFD.

use std::pin::pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plantd_pg_util::deadpool_postgres::Transaction;
use plantd_pg_util::tokio_postgres::binary_copy::BinaryCopyInWriter;
use plantd_pg_util::tokio_postgres::types::{Json, ToSql, Type};
use plantd_pg_util::{migrations, BlockingRuntime, Pool, PostgresConfig};
use serde_json::{json, Value};

use super::query::{format_time, Bucket, Filter, Series, StoredEvent, StoredMetric};
use super::{Deleted, Record, Retention, StoreError};

/// Table recording the applied schema steps.
pub const MIGRATIONS_TABLE: &str = "plantd_logger_migrations";

/// The schema, one step per entry (see `plantd_pg_util::migrations`). Append; never edit.
pub const MIGRATIONS: &[migrations::Step] = &[
    // 1: metrics (TimescaleDB shape), events, bookkeeping.
    r#"CREATE TABLE metrics (
        id            BIGINT GENERATED ALWAYS AS IDENTITY,
        "timestamp"   TIMESTAMPTZ NOT NULL,
        bus           TEXT NOT NULL,
        metric_name   TEXT COLLATE "C" NOT NULL,
        service_name  TEXT NOT NULL,
        channel       TEXT NOT NULL,
        value         DOUBLE PRECISION,
        units         TEXT NOT NULL,
        tags          JSONB NOT NULL
    );
    CREATE INDEX metrics_time ON metrics ("timestamp");
    CREATE INDEX metrics_name_time ON metrics (metric_name, "timestamp");
    CREATE INDEX metrics_id ON metrics (id);
    CREATE TABLE events (
        id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        "timestamp"  TIMESTAMPTZ NOT NULL,
        bus          TEXT NOT NULL,
        topic        TEXT COLLATE "C" NOT NULL,
        encoding     TEXT NOT NULL,
        payload      TEXT NOT NULL,
        malformed    BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX events_time ON events ("timestamp");
    CREATE INDEX events_bus_time ON events (bus, "timestamp");
    CREATE INDEX events_malformed ON events (id) WHERE malformed;
    CREATE TABLE meta (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
            BEGIN
                CREATE EXTENSION IF NOT EXISTS timescaledb;
                PERFORM create_hypertable('metrics', 'timestamp', migrate_data => true);
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'timescaledb is installed but not usable (%); metrics stays a plain table', SQLERRM;
            END;
        END IF;
    END $$;"#,
];

/// `timestamp` as Unix microseconds (exact: `extract` returns numeric).
const US: &str = r#"(extract(epoch FROM "timestamp") * 1000000)::bigint"#;

/// Reading and writing the logger's PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PgLogStore {
    runtime: std::sync::Arc<BlockingRuntime>,
    pool: Pool,
    location: String,
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn system_time(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

/// NUL is the one character PostgreSQL text refuses.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

/// Tags as `jsonb`: JSON that PostgreSQL accepts (no `\u0000`), else the text as a JSON string.
fn tags(json: &str) -> Value {
    let value: Value =
        serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.to_owned()));
    if json.contains("\\u0000") || json.contains('\0') {
        // Re-serialized, NULs in strings become U+FFFD.
        serde_json::from_str(&value.to_string().replace("\\u0000", "\u{FFFD}"))
            .unwrap_or(Value::Null)
    } else {
        value
    }
}

impl Filter {
    /// The `WHERE` clause for PostgreSQL, numbering parameters from `$first`, on a table whose
    /// topic column is `topic_column`.
    fn pg_sql(&self, first: usize, topic_column: &str) -> (String, Params) {
        let mut clauses = Vec::new();
        let mut params: Params = Vec::new();
        let mut n = first;
        let mut next = || {
            n += 1;
            n - 1
        };
        if !self.topic_prefix.is_empty() {
            // A range keeps the (name, timestamp) index usable; see the SQLite query.
            let (a, b) = (next(), next());
            clauses.push(format!("{topic_column} >= ${a} AND {topic_column} < ${b}"));
            params.push(Box::new(self.topic_prefix.clone()));
            params.push(Box::new(format!("{}\u{10FFFF}", self.topic_prefix)));
        }
        if let Some(bus) = &self.bus {
            clauses.push(format!("bus = ${}", next()));
            params.push(Box::new(bus.clone()));
        }
        if let Some(since) = self.since {
            clauses.push(format!(r#""timestamp" >= ${}"#, next()));
            params.push(Box::new(system_time(since)));
        }
        if let Some(until) = self.until {
            clauses.push(format!(r#""timestamp" < ${}"#, next()));
            params.push(Box::new(system_time(until)));
        }
        let sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        (sql, params)
    }
}

type MetricTuple = (
    SystemTime,
    String,
    String,
    String,
    String,
    Option<f64>,
    String,
    Value,
);
type EventTuple = (SystemTime, String, String, &'static str, String, bool);

/// Records in the form binary `COPY` takes.
pub struct CopyRows {
    metrics: Vec<MetricTuple>,
    events: Vec<EventTuple>,
}

impl From<&[Record]> for CopyRows {
    fn from(batch: &[Record]) -> Self {
        let mut metrics = Vec::new();
        let mut events = Vec::new();
        for record in batch {
            match record {
                Record::Metric(m) => metrics.push((
                    system_time(m.time_us),
                    text(&m.bus).into_owned(),
                    text(&m.topic).into_owned(),
                    text(&m.source).into_owned(),
                    text(&m.channel).into_owned(),
                    m.value,
                    text(&m.units).into_owned(),
                    tags(&m.tags_json),
                )),
                Record::Event(e) => events.push((
                    system_time(e.time_us),
                    text(&e.bus).into_owned(),
                    text(&e.topic).into_owned(),
                    e.encoding,
                    text(&e.payload_json).into_owned(),
                    e.malformed,
                )),
            }
        }
        CopyRows { metrics, events }
    }
}

impl CopyRows {
    /// `COPY`s the rows inside `tx` (which the caller commits). Returns (metric rows, event rows).
    pub async fn copy(&self, tx: &Transaction<'_>) -> Result<(u64, u64), StoreError> {
        if !self.metrics.is_empty() {
            let sink = tx
                .copy_in(
                    r#"COPY metrics ("timestamp", bus, metric_name, service_name, channel, value, units, tags) FROM STDIN BINARY"#,
                )
                .await?;
            let types = [
                Type::TIMESTAMPTZ,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::FLOAT8,
                Type::TEXT,
                Type::JSONB,
            ];
            let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
            for (t, bus, topic, source, channel, value, units, tags) in &self.metrics {
                writer
                    .as_mut()
                    .write(&[t, bus, topic, source, channel, value, units, &Json(tags)])
                    .await?;
            }
            writer.finish().await?;
        }
        if !self.events.is_empty() {
            let sink = tx
                .copy_in(
                    r#"COPY events ("timestamp", bus, topic, encoding, payload, malformed) FROM STDIN BINARY"#,
                )
                .await?;
            let types = [
                Type::TIMESTAMPTZ,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::BOOL,
            ];
            let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
            for (t, bus, topic, encoding, payload, malformed) in &self.events {
                writer
                    .as_mut()
                    .write(&[t, bus, topic, encoding, payload, malformed])
                    .await?;
            }
            writer.finish().await?;
        }
        Ok((self.metrics.len() as u64, self.events.len() as u64))
    }
}

impl PgLogStore {
    /// Connects, migrates (under an advisory lock) and returns the store. Blocks.
    pub fn open(config: &PostgresConfig) -> Result<Self, StoreError> {
        let runtime = BlockingRuntime::new("logger-postgres", 2).map_err(StoreError::Io)?;
        let pool = {
            let _guard = runtime.handle().enter();
            config.pool()?
        };
        let (p, c) = (pool.clone(), config.clone());
        runtime.run(async move {
            let mut client = c.connect(&p).await?;
            migrations::migrate(&mut client, MIGRATIONS_TABLE, MIGRATIONS).await?;
            Ok::<_, StoreError>(())
        })??;
        Ok(PgLogStore {
            runtime: std::sync::Arc::new(runtime),
            pool,
            location: config.redacted_dsn(),
        })
    }

    /// The redacted DSN.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.runtime.run(f)?
    }

    async fn client(pool: &Pool) -> Result<plantd_pg_util::PooledClient, StoreError> {
        pool.get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))
    }

    /// Inserts every record in one transaction (binary `COPY`). Returns (metric rows, event rows).
    pub fn insert_batch(&self, batch: &[Record]) -> Result<(u64, u64), StoreError> {
        let pool = self.pool.clone();
        // Built here, off the runtime: the rows in the form COPY takes.
        let rows = CopyRows::from(batch);
        self.run(async move {
            let mut client = Self::client(&pool).await?;
            let tx = client.transaction().await?;
            let counts = rows.copy(&tx).await?;
            tx.commit().await?;
            Ok(counts)
        })
    }

    /// Writes the health probe row.
    pub fn probe(&self) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = Self::client(&pool).await?;
            client
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('health_probe', $1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&chrono::Utc::now().to_rfc3339()],
                )
                .await?;
            Ok(())
        })
    }

    /// Deletes what `retention` says must go, given the current time.
    pub fn apply_retention(
        &self,
        retention: &Retention,
        now_us: i64,
    ) -> Result<Deleted, StoreError> {
        let pool = self.pool.clone();
        let retention = *retention;
        self.run(async move {
            let client = Self::client(&pool).await?;
            let mut deleted = Deleted::default();
            for table in ["metrics", "events"] {
                let mut n = 0;
                if let Some(max_age) = retention.max_age {
                    let cutoff = now_us
                        .saturating_sub(i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX));
                    // No global write lock to hold short here: one statement.
                    n += client
                        .execute(
                            &format!(r#"DELETE FROM {table} WHERE "timestamp" < $1"#),
                            &[&system_time(cutoff)],
                        )
                        .await?;
                }
                if let Some(max_rows) = retention.max_rows {
                    let offset = i64::try_from(max_rows).unwrap_or(i64::MAX);
                    n += client
                        .execute(
                            &format!(
                                "DELETE FROM {table} WHERE id <= \
                                 (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET $1)"
                            ),
                            &[&offset],
                        )
                        .await?;
                }
                match table {
                    "metrics" => deleted.metrics = n,
                    _ => deleted.events = n,
                }
            }
            Ok(deleted)
        })
    }

    /// Metrics matching `filter`, newest first, at most `limit`.
    pub fn metrics(&self, filter: &Filter, limit: usize) -> Result<Vec<StoredMetric>, StoreError> {
        let pool = self.pool.clone();
        let (clause, mut params) = filter.pg_sql(1, "metric_name");
        let n = params.len() + 1;
        params.push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT {US}, bus, metric_name, service_name, channel, value, units, tags::text
             FROM metrics {clause} ORDER BY \"timestamp\" DESC, id DESC LIMIT ${n}"
        );
        self.run(async move {
            let client = Self::client(&pool).await?;
            let rows = client.query(&sql, &refs(&params)).await?;
            Ok(rows
                .into_iter()
                .map(|row| {
                    let tags: String = row.get(7);
                    StoredMetric {
                        time: format_time(row.get(0)),
                        bus: row.get(1),
                        topic: row.get(2),
                        source: row.get(3),
                        channel: row.get(4),
                        value: row.get(5),
                        units: row.get(6),
                        tags: serde_json::from_str(&tags).unwrap_or(Value::String(tags)),
                    }
                })
                .collect())
        })
    }

    /// Count, min, max and average per topic per `bucket_us`-long bucket, at most `max_buckets`.
    pub fn summary(
        &self,
        filter: &Filter,
        bucket_us: i64,
        max_buckets: usize,
    ) -> Result<Vec<Series>, StoreError> {
        let pool = self.pool.clone();
        let (clause, filter_params) = filter.pg_sql(2, "metric_name");
        let mut params: Params = vec![Box::new(bucket_us)];
        params.extend(filter_params);
        let n = params.len() + 1;
        params.push(Box::new(i64::try_from(max_buckets).unwrap_or(i64::MAX)));
        // Floor division that is also right for times before 1970, as on SQLite.
        let sql = format!(
            "SELECT metric_name, us - (((us % $1) + $1) % $1) AS bucket,
                    count(value), min(value), max(value), avg(value)
             FROM (SELECT metric_name, value, {US} AS us FROM metrics {clause}) m
             GROUP BY 1, 2 ORDER BY 1, 2 LIMIT ${n}"
        );
        self.run(async move {
            let client = Self::client(&pool).await?;
            let rows = client.query(&sql, &refs(&params)).await?;
            let mut series: Vec<Series> = Vec::new();
            for row in rows {
                let topic: String = row.get(0);
                let bucket = Bucket {
                    start: format_time(row.get(1)),
                    count: row.get::<_, i64>(2).max(0) as u64,
                    min: row.get(3),
                    max: row.get(4),
                    avg: row.get(5),
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
        })
    }

    /// Events matching `filter` (and only malformed ones if asked), newest first, at most `limit`.
    pub fn events(
        &self,
        filter: &Filter,
        malformed_only: bool,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let pool = self.pool.clone();
        let (mut clause, mut params) = filter.pg_sql(1, "topic");
        if malformed_only {
            clause = if clause.is_empty() {
                "WHERE malformed".into()
            } else {
                format!("{clause} AND malformed")
            };
        }
        let n = params.len() + 1;
        params.push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT {US}, bus, topic, encoding, payload, malformed FROM events {clause}
             ORDER BY \"timestamp\" DESC, id DESC LIMIT ${n}"
        );
        self.run(async move {
            let client = Self::client(&pool).await?;
            let rows = client.query(&sql, &refs(&params)).await?;
            Ok(rows
                .into_iter()
                .map(|row| {
                    let payload: String = row.get(4);
                    StoredEvent {
                        time: format_time(row.get(0)),
                        bus: row.get(1),
                        topic: row.get(2),
                        encoding: row.get(3),
                        payload: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
                        malformed: row.get(5),
                    }
                })
                .collect())
        })
    }

    /// Row counts, time span and per-bus counts of both tables, in the SQLite reply's shape.
    pub fn stats(&self) -> Result<Value, StoreError> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = Self::client(&pool).await?;
            let mut spans = Vec::new();
            for table in ["metrics", "events"] {
                let row = client
                    .query_one(
                        &format!(
                            r#"SELECT count(*), min({US}), max({US}) FROM {table}"#
                        ),
                        &[],
                    )
                    .await?;
                spans.push((
                    row.get::<_, i64>(0),
                    row.get::<_, Option<i64>>(1),
                    row.get::<_, Option<i64>>(2),
                ));
            }
            let (metric_rows, metric_oldest, metric_newest) = spans[0];
            let (event_rows, event_oldest, event_newest) = spans[1];
            let malformed: i64 = client
                .query_one("SELECT count(*) FROM events WHERE malformed", &[])
                .await?
                .get(0);
            let mut buses = serde_json::Map::new();
            for table in ["metrics", "events"] {
                let rows = client
                    .query(
                        &format!(
                            r#"SELECT bus, count(*) FROM {table} GROUP BY bus ORDER BY bus COLLATE "C""#
                        ),
                        &[],
                    )
                    .await?;
                for row in rows {
                    let bus: String = row.get(0);
                    let count: i64 = row.get(1);
                    let entry = buses
                        .entry(bus)
                        .or_insert_with(|| json!({"metrics": 0, "events": 0}));
                    entry[table] = json!(count);
                }
            }
            let version = migrations::current_version(&client, MIGRATIONS_TABLE).await?;
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
                "schema_version": version,
            }))
        })
    }
}
