//! The single writer thread: batches records into one transaction each (group commit), runs the
//! retention policy and the health probe, and stops after draining once every sender is gone.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use plantd_sqlite_util::DatabaseCheck;
use rusqlite::{params, Connection};

use super::{Record, Retention, Sink};
use crate::metrics::LoggerMetrics;

/// How often the writer proves the database accepts writes, for `/healthz`.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How the writer batches and prunes.
#[derive(Clone, Copy, Debug)]
pub struct WriterSettings {
    /// Most rows per transaction.
    pub batch_size: usize,
    /// Longest a record waits before its batch is committed.
    pub flush_interval: Duration,
    /// The retention policy.
    pub retention: Retention,
}

/// Starts the writer thread on `sink` (the SQLite connection or the PostgreSQL store). It takes records from `records` until every sender is
/// dropped, commits what is left, and returns.
pub fn spawn_writer(
    sink: Sink,
    records: Receiver<Record>,
    settings: WriterSettings,
    metrics: LoggerMetrics,
    database_check: DatabaseCheck,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("logger-writer".into())
        .spawn(move || {
            Writer {
                sink,
                settings,
                metrics,
                database_check,
            }
            .run(records)
        })
}

struct Writer {
    sink: Sink,
    settings: WriterSettings,
    metrics: LoggerMetrics,
    database_check: DatabaseCheck,
}

impl Writer {
    fn run(mut self, records: Receiver<Record>) {
        let mut batch = Vec::with_capacity(self.settings.batch_size);
        let mut next_probe = Instant::now();
        let mut next_retention = Instant::now() + self.settings.retention.interval;
        let mut open = true;
        while open {
            // Wait for the first record of a batch, but wake up for the periodic chores.
            let chores = next_probe.min(next_retention);
            let wait = chores.saturating_duration_since(Instant::now());
            match records.recv_timeout(wait) {
                Ok(record) => {
                    batch.push(record);
                    let deadline = Instant::now() + self.settings.flush_interval;
                    // Fill the batch until it is full, the flush deadline passes, or senders go.
                    while batch.len() < self.settings.batch_size {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match records.recv_timeout(left) {
                            Ok(record) => batch.push(record),
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    self.commit(&mut batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            let now = Instant::now();
            if now >= next_probe {
                self.probe();
                next_probe = now + PROBE_INTERVAL;
            }
            if now >= next_retention {
                self.retain();
                next_retention = now + self.settings.retention.interval;
            }
        }
        tracing::debug!("logger writer stopped");
    }

    fn commit(&mut self, batch: &mut Vec<Record>) {
        let started = Instant::now();
        let rows = batch.len() as u64;
        match self.sink.insert_batch(batch) {
            Ok((metrics, events)) => {
                self.metrics.metric_rows.inc_by(metrics);
                self.metrics.event_rows.inc_by(events);
                self.database_check.write_succeeded();
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                self.metrics.rows_dropped.inc_by(rows);
                self.database_check
                    .write_failed(format!("cannot write batch: {e}"));
                tracing::warn!(error = %e, rows, "batch not stored");
            }
        }
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        batch.clear();
    }

    fn probe(&mut self) {
        match self.sink.probe() {
            Ok(_) => self.database_check.probe_succeeded(),
            Err(e) => self.database_check.write_failed(format!("probe: {e}")),
        }
    }

    fn retain(&mut self) {
        let now_us = chrono::Utc::now().timestamp_micros();
        match self.sink.apply_retention(&self.settings.retention, now_us) {
            Ok(deleted) => {
                self.metrics
                    .retention_deleted(deleted.metrics, deleted.events);
                if deleted.metrics + deleted.events > 0 {
                    tracing::info!(
                        metrics = deleted.metrics,
                        events = deleted.events,
                        "retention deleted old rows"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention failed"),
        }
    }
}

/// Inserts every record in one transaction. Returns (metric rows, event rows).
pub fn insert_batch(conn: &mut Connection, batch: &[Record]) -> rusqlite::Result<(u64, u64)> {
    let tx = conn.transaction()?;
    let (mut metrics, mut events) = (0, 0);
    {
        let mut insert_metric = tx.prepare_cached(
            "INSERT INTO metrics (time, bus, topic, source, channel, value, units, tags)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut insert_event = tx.prepare_cached(
            "INSERT INTO events (time, bus, topic, encoding, payload, malformed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for record in batch {
            match record {
                Record::Metric(m) => {
                    insert_metric.execute(params![
                        m.time_us,
                        m.bus,
                        m.topic,
                        m.source,
                        m.channel,
                        m.value,
                        m.units,
                        m.tags_json
                    ])?;
                    metrics += 1;
                }
                Record::Event(e) => {
                    insert_event.execute(params![
                        e.time_us,
                        e.bus,
                        e.topic,
                        e.encoding,
                        e.payload_json,
                        e.malformed
                    ])?;
                    events += 1;
                }
            }
        }
    }
    tx.commit()?;
    Ok((metrics, events))
}
