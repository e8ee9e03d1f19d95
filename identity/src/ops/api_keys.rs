//! `api_key/*`: create (the key is shown once, stored as a hash, its permissions a subset of the
//! creator's), list, revoke (ends every session exchanged for the key). Tokens exchanged for an
//! API key cannot create keys: a machine cannot mint itself more credentials.

use plantd_worker_sdk::auth::TokenKind;
use serde_json::{json, Value};

use super::auth::end_sessions;
use super::caller::Caller;
use super::{Identity, Request};
use crate::codes::OpError;
use crate::permissions::{
    self, API_KEY_CREATE, API_KEY_READ, API_KEY_REVOKE, USER_READ, USER_UPDATE,
};
use crate::store::{api_keys, notices, now_secs, sessions};
use crate::tokens::{self, digest, API_KEY_PREFIX};

/// Longest key name.
const MAX_NAME: usize = 100;
/// Characters of the key kept (and shown) to tell keys apart.
const SHOWN_PREFIX: usize = 8;

pub(super) fn run(id: &Identity, operation: &str, req: &Request) -> Result<Value, OpError> {
    let caller = id.caller(req)?;
    match operation {
        "create" => create(id, req, &caller),
        "list" => list(id, req, &caller),
        _ => revoke(id, req, &caller),
    }
}

fn create(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, API_KEY_CREATE, None)?;
    if caller.kind != TokenKind::User {
        return id.denied(req, caller, "a user login (not an API key)");
    }
    let name = req.body.str("name", MAX_NAME)?;
    let permissions = permissions::validate_list(req.body.strings("permissions")?)
        .map_err(|e| OpError::invalid(format!("field `permissions`: {e}")))?;
    if permissions.is_empty() {
        return Err(OpError::invalid("field `permissions` must not be empty"));
    }
    id.require_grantable(req, caller, &permissions, None)?;
    let now = now_secs();
    let expires_at = match req.body.opt_int("expires_in")? {
        None => None,
        Some(secs) if secs <= 0 => {
            return Err(OpError::invalid(
                "field `expires_in` must be a positive number of seconds",
            ))
        }
        Some(secs) => {
            let max = i64::try_from(id.settings.tokens.max_api_key_ttl_secs).unwrap_or(i64::MAX);
            if max > 0 && secs > max {
                return Err(OpError::invalid(format!(
                    "field `expires_in` must be at most {max} seconds"
                )));
            }
            Some(now.saturating_add(secs))
        }
    };
    let key = tokens::new_api_key();
    let prefix: String = key
        .chars()
        .take(API_KEY_PREFIX.len() + SHOWN_PREFIX)
        .collect();
    let hash = digest(&key);
    let row = id.record(req, caller.actor(), "api_key.create", "", "ok");
    let user_id = caller.user_id;
    let created = id.write_audited(row, move |conn, row| {
        let created = api_keys::insert(
            conn,
            user_id,
            &name,
            &prefix,
            &hash,
            &permissions,
            now,
            expires_at,
        )?;
        row.target = format!("api_key:{}", created.id);
        Ok(created)
    })?;
    Ok(json!({
        "api_key": key,
        "key": created,
        "note": "the API key is shown only now; it is stored as a hash",
    }))
}

fn list(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, API_KEY_READ, None)?;
    let user_id = req.body.opt_id("user_id")?.unwrap_or(caller.user_id);
    if user_id != caller.user_id {
        id.require(req, caller, USER_READ, None)?;
    }
    let keys = id.store.read(|conn| api_keys::of_user(conn, user_id))?;
    Ok(json!({"user_id": user_id, "keys": keys, "total": keys.len()}))
}

fn revoke(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, API_KEY_REVOKE, None)?;
    let key_id = req.body.id("key_id")?;
    let key = id.store.read(|conn| api_keys::get(conn, key_id))?;
    if key.user_id != caller.user_id {
        id.require(req, caller, USER_UPDATE, None)?;
    }
    let row = id.record(
        req,
        caller.actor(),
        "api_key.revoke",
        format!("api_key:{key_id}"),
        "ok",
    );
    let user_id = key.user_id;
    let ended = id.write_audited(row, move |conn, _| {
        let now = now_secs();
        api_keys::revoke(conn, key_id, now)?;
        let ended = sessions::revoke_where(conn, None, Some(key_id), None, "api_key_revoked", now)?;
        notices::revoked(conn, &ended, user_id, "api_key_revoked")?;
        Ok(ended)
    })?;
    end_sessions(id, ended, key.user_id, "api_key_revoked");
    Ok(json!({"revoked": true, "key_id": key_id}))
}
