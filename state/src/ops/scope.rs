//! Scope operations: `create-scope`, `delete-scope`, `list-scopes`.

use serde::Serialize;

use super::request::Body;
use super::{reply, Dispatcher, Operation};
use crate::codes::OpError;
use crate::store::WriteOp;

#[derive(Serialize)]
struct ScopeStatus<'a> {
    scope: &'a str,
    status: &'a str,
}

#[derive(Serialize)]
struct ScopeList<'a> {
    scopes: &'a [String],
    count: usize,
}

/// `create-scope {service}` → `{"scope","status":"created"}`; `SCOPE_EXISTS` if present.
pub(super) fn create(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    let scope = d.scope_field(body)?;
    d.authorize(Operation::CreateScope, Some(&scope), body)?;
    d.store.write_blocking(WriteOp::CreateScope {
        scope: scope.clone(),
    })?;
    reply::data(&ScopeStatus {
        scope: &scope,
        status: "created",
    })
}

/// `delete-scope {service}` → `{"scope","status":"deleted"}`; `SCOPE_NOT_FOUND` if missing.
pub(super) fn delete(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    let scope = d.scope_field(body)?;
    d.authorize(Operation::DeleteScope, Some(&scope), body)?;
    d.store.write_blocking(WriteOp::DeleteScope {
        scope: scope.clone(),
    })?;
    reply::data(&ScopeStatus {
        scope: &scope,
        status: "deleted",
    })
}

/// `list-scopes {}` → `{"scopes":[...],"count":N}` (never `null`).
pub(super) fn list(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    d.authorize(Operation::ListScopes, None, body)?;
    let scopes = d.store.list_scopes()?;
    reply::data(&ScopeList {
        scopes: &scopes,
        count: scopes.len(),
    })
}
