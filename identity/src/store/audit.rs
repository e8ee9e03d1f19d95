//! The audit trail: one row per security event (time, actor, action, target, outcome, source).
//! Rows never hold a password, token, refresh token, API key or hash: only names and ids.

use rusqlite::{params, Connection, Row};
use serde::Serialize;

use super::StoreError;

/// One audit row, as stored, listed and published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// RFC 3339 with milliseconds.
    pub time: String,
    /// Who acted: `user:<id>`, `api_key:<id>`, `anonymous`, `system`, or for failed logins the
    /// identifier tried (lowercased).
    pub actor: String,
    /// What happened (`login.ok`, `login.failed`, `token.reuse`, `user.create`, ...).
    pub action: String,
    /// What it happened to (`user:42`, `role:3`, `session:<sid>`, ...).
    pub target: String,
    /// `ok`, `failed` or `denied`.
    pub outcome: String,
    /// Where the request came from: the proxy's `ip_address`, or the MDP client address.
    pub source: String,
    /// Unix milliseconds (not shown; `time` is).
    #[serde(skip)]
    pub time_ms: i64,
}

/// `audit/list` filters.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Unix ms, inclusive.
    pub since_ms: i64,
    /// Unix ms, exclusive.
    pub until_ms: i64,
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact action, or a prefix when it ends in `*`.
    pub action: Option<String>,
    /// Most rows (newest first).
    pub limit: i64,
}

fn record_of(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let time_ms: i64 = row.get(0)?;
    Ok(AuditRecord {
        time: time_of(time_ms),
        actor: row.get(1)?,
        action: row.get(2)?,
        target: row.get(3)?,
        outcome: row.get(4)?,
        source: row.get(5)?,
        time_ms,
    })
}

/// RFC 3339 (milliseconds) of Unix ms.
pub fn time_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Appends `record`.
pub fn insert(conn: &Connection, record: &AuditRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit (time_ms, actor, action, target, outcome, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        record.time_ms,
        record.actor,
        record.action,
        record.target,
        record.outcome,
        record.source
    ])?;
    Ok(())
}

/// Rows matching `filter`, newest first.
pub fn list(conn: &Connection, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
    let (action_exact, action_prefix) = match filter.action.as_deref() {
        Some(a) => match a.strip_suffix('*') {
            Some(prefix) => (
                None,
                Some(format!("{}%", super::users::like_escape(prefix))),
            ),
            None => (Some(a.to_owned()), None),
        },
        None => (None, None),
    };
    Ok(conn
        .prepare_cached(
            "SELECT time_ms, actor, action, target, outcome, source FROM audit
             WHERE time_ms >= ?1 AND time_ms < ?2 AND (?3 IS NULL OR actor = ?3)
               AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR action LIKE ?5 ESCAPE '\\')
             ORDER BY time_ms DESC, id DESC LIMIT ?6",
        )?
        .query_map(
            params![
                filter.since_ms,
                filter.until_ms,
                filter.actor,
                action_exact,
                action_prefix,
                filter.limit
            ],
            record_of,
        )?
        .collect::<Result<Vec<_>, _>>()?)
}
