//! `audit/list {since, until, actor?, action?, limit}`: the audit trail, newest first. `since`
//! and `until` are RFC 3339 or Unix seconds (default: the last 24 hours); `action` ending in `*`
//! matches a prefix (`login.*`).

use serde_json::{json, Value};

use super::{Identity, Request};
use crate::codes::OpError;
use crate::permissions::AUDIT_READ;
use crate::store::audit::{self, AuditFilter};
use crate::store::now_ms;

/// Rows returned when no `limit` is given.
const DEFAULT_LIMIT: i64 = 100;
/// Most rows one request may ask for.
const MAX_LIMIT: i64 = 1000;

pub(super) fn run(id: &Identity, _operation: &str, req: &Request) -> Result<Value, OpError> {
    let caller = id.caller(req)?;
    id.require(req, &caller, AUDIT_READ, None)?;
    let now = now_ms();
    let since_ms = req
        .body
        .opt_time("since")?
        .unwrap_or(now - 24 * 3600 * 1000);
    // Exclusive bound: one millisecond past now includes what just happened.
    let until_ms = req.body.opt_time("until")?.unwrap_or(now + 1);
    if until_ms < since_ms {
        return Err(OpError::invalid("field `until` is before `since`"));
    }
    let limit = req.body.opt_int("limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(OpError::invalid(format!(
            "field `limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let filter = AuditFilter {
        since_ms,
        until_ms,
        actor: req.body.opt_str("actor", 255)?,
        action: req.body.opt_str("action", 100)?,
        limit,
    };
    let records = id.store.read(|conn| audit::list(conn, &filter))?;
    Ok(json!({"records": records, "count": records.len()}))
}
