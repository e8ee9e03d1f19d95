//! The notice log: every revocation and permission change, written in the transaction of the
//! change itself and kept for [`RETENTION_SECS`], longer than any access token it could affect.
//!
//! The `event` bus carries the same news at once but may lose it (a verifier not yet subscribed,
//! disconnected or restarted, a message dropped at a high-water mark); verifiers read this log
//! with `auth/notices` to catch up, so a revocation never depends on the bus alone.

use plantd_worker_sdk::auth::events::{Changed, Revoked, CHANGED_TOPIC, REVOKED_TOPIC};
use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::Value;

use super::{now_ms, StoreError};

/// How long a notice is kept. Identity refuses an access token lifetime over half of it.
pub const RETENTION_SECS: i64 = 24 * 3600;

/// One notice, as `auth/notices` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notice {
    /// Its place in the log; later notices have higher numbers.
    pub seq: i64,
    /// The bus topic the same news went out on.
    pub topic: String,
    /// When it was written (Unix ms).
    pub time_ms: i64,
    /// The event's `data`: a `Revoked` or a `Changed`.
    pub data: Value,
}

/// Records that `sessions` of `user_id` ended for `reason`. Nothing when `sessions` is empty.
pub fn revoked(
    conn: &Connection,
    sessions: &[String],
    user_id: i64,
    reason: &str,
) -> Result<(), StoreError> {
    if sessions.is_empty() {
        return Ok(());
    }
    let data = Revoked {
        sessions: sessions.to_vec(),
        user_id: u64::try_from(user_id).ok(),
        reason: reason.to_owned(),
    };
    append(
        conn,
        REVOKED_TOPIC,
        serde_json::to_value(data).unwrap_or_default(),
    )
}

/// Records that the grants of `user_ids` changed. Nothing when `user_ids` is empty.
pub fn changed(conn: &Connection, user_ids: &[i64]) -> Result<(), StoreError> {
    let user_ids: Vec<u64> = user_ids
        .iter()
        .filter_map(|&id| u64::try_from(id).ok())
        .collect();
    if user_ids.is_empty() {
        return Ok(());
    }
    append(
        conn,
        CHANGED_TOPIC,
        serde_json::to_value(Changed { user_ids }).unwrap_or_default(),
    )
}

/// Appends one notice and forgets those past [`RETENTION_SECS`].
fn append(conn: &Connection, topic: &str, data: Value) -> Result<(), StoreError> {
    let now = now_ms();
    conn.prepare_cached("INSERT INTO notices (time_ms, topic, data) VALUES (?1, ?2, ?3)")?
        .execute(params![now, topic, data.to_string()])?;
    conn.prepare_cached("DELETE FROM notices WHERE time_ms < ?1")?
        .execute(params![now - RETENTION_SECS * 1000])?;
    Ok(())
}

/// At most `limit` notices after `seq`, oldest first.
pub fn after(conn: &Connection, seq: i64, limit: i64) -> Result<Vec<Notice>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT seq, topic, time_ms, data FROM notices WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = statement
        .query_map(params![seq, limit], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get::<_, String>(3)?,
            ))
        })?
        .collect::<Result<Vec<(i64, String, i64, String)>, _>>()?;
    rows.into_iter()
        .map(|(seq, topic, time_ms, data)| {
            let data = serde_json::from_str(&data)
                .map_err(|e| StoreError::Corrupt(format!("notice {seq}: {e}")))?;
            Ok(Notice {
                seq,
                topic,
                time_ms,
                data,
            })
        })
        .collect()
}

/// The newest notice's number (0 when the log is empty).
pub fn last_seq(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM notices")?
        .query_row([], |row| row.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::migrations::migrate(&mut conn).unwrap();
        conn
    }

    #[test]
    fn notices_are_listed_in_order_after_a_number() {
        let conn = db();
        assert_eq!(last_seq(&conn).unwrap(), 0);
        revoked(&conn, &["s1".into(), "s2".into()], 7, "logout").unwrap();
        changed(&conn, &[3, -1]).unwrap();
        revoked(&conn, &[], 7, "logout").unwrap();
        changed(&conn, &[]).unwrap();
        let all = after(&conn, 0, 100).unwrap();
        assert_eq!(all.len(), 2, "empty changes write nothing");
        assert_eq!(all[0].topic, REVOKED_TOPIC);
        assert_eq!(all[0].data["sessions"], serde_json::json!(["s1", "s2"]));
        assert_eq!(all[0].data["user_id"], 7);
        assert_eq!(all[1].topic, CHANGED_TOPIC);
        assert_eq!(all[1].data["user_ids"], serde_json::json!([3]));
        assert_eq!(last_seq(&conn).unwrap(), all[1].seq);
        assert_eq!(after(&conn, all[0].seq, 100).unwrap(), all[1..]);
        assert_eq!(after(&conn, 0, 1).unwrap(), all[..1]);
    }

    #[test]
    fn notices_past_the_retention_are_forgotten() {
        let conn = db();
        conn.execute(
            "INSERT INTO notices (time_ms, topic, data) VALUES (?1, 'old', '{}')",
            params![now_ms() - RETENTION_SECS * 1000 - 1],
        )
        .unwrap();
        changed(&conn, &[1]).unwrap();
        let left = after(&conn, 0, 100).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].topic, CHANGED_TOPIC);
    }
}
