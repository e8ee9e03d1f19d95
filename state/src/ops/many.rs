//! Multi-key operations: `state-get-many` (one read snapshot) and `state-set-many` (one atomic
//! transaction).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use super::entry::stored_json;
use super::request::{check_name, check_value, Body};
use super::{reply, Dispatcher, Operation};
use crate::codes::OpError;
use crate::store::WriteOp;

#[derive(Serialize)]
struct Values<'a> {
    scope: &'a str,
    values: BTreeMap<&'a str, Box<RawValue>>,
    missing: Vec<&'a str>,
}

#[derive(Serialize)]
struct SetManyStatus<'a> {
    scope: &'a str,
    count: usize,
    status: &'a str,
}

/// `state-get-many {service, keys:[...]}` → `{"scope","values":{key:value},"missing":[keys]}`.
/// Missing keys are listed, not errors; a missing scope is `SCOPE_NOT_FOUND`.
pub(super) fn get_many(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    let scope = d.scope_field(body)?;
    d.authorize(Operation::GetMany, Some(&scope), body)?;
    let keys = body.string_list("keys", d.limits.max_key_bytes, d.limits.max_batch_entries)?;
    let found = d.store.get_many(&scope, &keys)?;
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for (key, value) in keys.iter().zip(found) {
        match value {
            Some(text) => {
                values.insert(key.as_str(), stored_json(text)?);
            }
            None => missing.push(key.as_str()),
        }
    }
    reply::data(&Values {
        scope: &scope,
        values,
        missing,
    })
}

/// `state-set-many {service, entries:{key:value,...}}` → `{"scope","count","status":"set"}`. All
/// entries are written in one transaction, or none.
pub(super) fn set_many(d: &Dispatcher, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
    let scope = d.scope_field(body)?;
    d.authorize(Operation::SetMany, Some(&scope), body)?;
    let members = body.object("entries", d.limits.max_batch_entries)?;
    let mut entries = Vec::with_capacity(members.len());
    for (key, value) in members {
        check_name("entries", &key, d.limits.max_key_bytes)?;
        check_value(&key, value, d.limits.max_value_bytes)?;
        entries.push((key, value.get().to_owned()));
    }
    let count = entries.len();
    d.store.write_blocking(WriteOp::SetMany {
        scope: scope.clone(),
        entries,
    })?;
    reply::data(&SetManyStatus {
        scope: &scope,
        count,
        status: "set",
    })
}
