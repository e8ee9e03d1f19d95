//! `health/check {}`: the same real checks as `/healthz` (broker session, database writable and
//! sound), plus uptime and the operations served. Needs no token.

use serde_json::{json, Value};

use super::{operation_names, Identity, Request};
use crate::codes::OpError;

pub(super) fn run(id: &Identity, _operation: &str, _req: &Request) -> Result<Value, OpError> {
    let report = id.health.to_json();
    Ok(json!({
        "status": if id.health.is_up() { "UP" } else { "DOWN" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": id.started.elapsed().as_secs(),
        "checks": report["checks"],
        "operations": operation_names(),
    }))
}
