//! Single-key operations: `state-get` (`get`), `state-set` (`set`), `delete`, and `list-keys`.

use serde::Serialize;
use serde_json::value::RawValue;

use super::request::{check_value, Body};
use super::{reply, Dispatcher, Operation};
use crate::codes::{ErrorCode, OpError};
use crate::store::WriteOp;

#[derive(Serialize)]
struct Value<'a> {
    scope: &'a str,
    key: &'a str,
    value: &'a RawValue,
}

#[derive(Serialize)]
struct SetStatus<'a> {
    scope: &'a str,
    key: &'a str,
    value: &'a RawValue,
    status: &'a str,
}

#[derive(Serialize)]
struct KeyStatus<'a> {
    scope: &'a str,
    key: &'a str,
    status: &'a str,
}

#[derive(Serialize)]
struct KeyList<'a> {
    scope: &'a str,
    keys: &'a [String],
    count: usize,
}

/// Turns stored JSON text back into a raw JSON value for the reply.
pub(super) fn stored_json(text: String) -> Result<Box<RawValue>, OpError> {
    RawValue::from_string(text).map_err(|e| {
        OpError::new(
            ErrorCode::StorageError,
            format!("a stored value is not valid JSON: {e}"),
        )
    })
}

/// `state-get {service, key}` → `{"scope","key","value"}`; `KEY_NOT_FOUND` / `SCOPE_NOT_FOUND`.
pub(super) fn get(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    let scope = d.scope_field(body)?;
    d.authorize(Operation::Get, Some(&scope), body)?;
    let key = body.required_str("key", d.limits.max_key_bytes)?;
    let value = stored_json(d.store.get(&scope, &key)?)?;
    reply::data(&Value {
        scope: &scope,
        key: &key,
        value: &value,
    })
}

/// `state-set {service, key, value}` → `{"scope","key","value","status":"set"}`. Creates the scope
/// if needed, in the same transaction.
pub(super) fn set(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    let scope = d.scope_field(body)?;
    d.authorize(Operation::Set, Some(&scope), body)?;
    let key = body.required_str("key", d.limits.max_key_bytes)?;
    let value = body.required_value("value")?;
    check_value(&key, value, d.limits.max_value_bytes)?;
    d.store.write_blocking(WriteOp::Set {
        scope: scope.clone(),
        key: key.clone(),
        value: value.get().to_owned(),
    })?;
    reply::data(&SetStatus {
        scope: &scope,
        key: &key,
        value,
        status: "set",
    })
}

/// `delete {service, key}` → `{"scope","key","status":"deleted"}`; `KEY_NOT_FOUND` /
/// `SCOPE_NOT_FOUND` if there was nothing to delete.
pub(super) fn delete(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    let scope = d.scope_field(body)?;
    d.authorize(Operation::Delete, Some(&scope), body)?;
    let key = body.required_str("key", d.limits.max_key_bytes)?;
    d.store.write_blocking(WriteOp::Delete {
        scope: scope.clone(),
        key: key.clone(),
    })?;
    reply::data(&KeyStatus {
        scope: &scope,
        key: &key,
        status: "deleted",
    })
}

/// `list-keys {service}` → `{"scope","keys":[...],"count":N}`; `SCOPE_NOT_FOUND` if missing.
pub(super) fn list_keys(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    let scope = d.scope_field(body)?;
    d.authorize(Operation::ListKeys, Some(&scope), body)?;
    let keys = d.store.list_keys(&scope)?;
    reply::data(&KeyList {
        scope: &scope,
        keys: &keys,
        count: keys.len(),
    })
}
