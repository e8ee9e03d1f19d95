//! Service operations: `health` and `backup`.

use std::path::PathBuf;

use serde::Serialize;

use super::request::Body;
use super::{reply, Dispatcher, Operation, SERVICE_NAME};
use crate::codes::OpError;

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    service: &'a str,
    store_available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope_exists: Option<bool>,
}

#[derive(Serialize)]
struct BackupDone<'a> {
    path: &'a str,
    bytes: u64,
    status: &'a str,
}

/// `health {[service]}` → `{"status","service","store_available"[,"scope","scope_exists"]}`, the
/// Go reply shape. A failing store reports `"unhealthy"` rather than an error.
pub(super) fn health(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    let scope = body.optional_str("service")?.filter(|s| !s.is_empty());
    d.authorize(Operation::Health, scope.as_deref(), body)?;
    let (available, exists) = match &scope {
        Some(scope) => match d.store.scope_exists(scope) {
            Ok(exists) => (true, Some(exists)),
            Err(_) => (false, None),
        },
        None => (d.store.list_scopes().is_ok(), None),
    };
    reply::data(&Health {
        status: if available { "healthy" } else { "unhealthy" },
        service: SERVICE_NAME,
        store_available: available,
        scope: scope.as_deref(),
        scope_exists: exists,
    })
}

/// `backup {path}` → `{"path","bytes","status":"completed"}`. A relative path is taken inside the
/// backup directory; an existing file is never overwritten (`INVALID_REQUEST`).
pub(super) fn backup(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    d.authorize(Operation::Backup, None, body)?;
    let path = PathBuf::from(body.required_str("path", 4096)?);
    let dest = if path.is_absolute() {
        path
    } else {
        d.backup_dir.join(path)
    };
    let result = d.store.backup_to(&dest);
    let outcome = if result.is_ok() { "ok" } else { "error" };
    d.metrics.backups.with_label_values(&[outcome]).inc();
    let bytes = result?;
    reply::data(&BackupDone {
        path: &dest.to_string_lossy(),
        bytes,
        status: "completed",
    })
}
