//! `auth/*`: login, refresh (with rotation and reuse detection), logout, validate,
//! change_password, public_keys, notices (the revocation and permission-change log verifiers catch
//! up from), token (API key exchange) and rotate_key.
//!
//! Access tokens are Ed25519 JWTs of the SDK's [`Claims`]; each login (or API key exchange) is a
//! session whose id every token of it carries as `sid`. A refresh token works once: presenting it
//! again revokes the whole session, since only a thief or a replaying client would (RFC 6749
//! §10.4, OAuth 2.0 Security BCP §4.14).

use plantd_worker_sdk::auth::{Claims, TokenKind, AUDIENCE, ISSUER};
use serde_json::{json, Value};

use super::caller::{key_grants, Caller, MAX_TOKEN_CHARS};
use super::{Identity, Request};
use crate::codes::{ErrorCode, OpError};
use crate::limits::ms;
use crate::password;
use crate::permissions::SYSTEM_ADMIN;
use crate::store::roles::{self, Grants};
use crate::store::users::rfc3339;
use crate::store::{api_keys, keys, notices, now_ms, now_secs, sessions, users};
use crate::tokens::{self, digest};

/// The longest identifier (username or email) accepted.
const MAX_IDENTIFIER: usize = 255;
/// The longest password read from a request (the policy's own cap applies to new passwords).
const MAX_PASSWORD: usize = 1024;
/// Extra seconds a retired key stays listed beyond the access token lifetime (verifier leeway).
const KEY_LISTING_SLACK: i64 = 60;
/// The one message of every failed login, whatever the reason.
const LOGIN_FAILED: &str = "the identifier or the password is wrong";

pub(super) fn run(id: &Identity, operation: &str, req: &Request) -> Result<Value, OpError> {
    match operation {
        "login" => login(id, req),
        "refresh" => refresh(id, req),
        "logout" => logout(id, req),
        "validate" => validate(id, req),
        "change_password" => change_password(id, req),
        "public_keys" => public_keys(id),
        "notices" => notices_after(id, req),
        "token" => exchange(id, req),
        _ => rotate_key(id, req),
    }
}

/// Refuses a source over its rate limit.
fn limit(id: &Identity, req: &Request, operation: &str) -> Result<(), OpError> {
    if id.limiter.allow(&req.source) {
        return Ok(());
    }
    // Counted, not audited: a flood of refused requests must not become a flood of writes.
    id.metrics
        .rate_limited
        .with_label_values(&[operation])
        .inc();
    Err(OpError::new(
        ErrorCode::RateLimited,
        "too many requests from this source; try again later",
    ))
}

impl Identity {
    fn ttl(&self) -> i64 {
        i64::try_from(self.settings.tokens.access_ttl_secs.max(1)).unwrap_or(900)
    }

    fn refresh_ttl(&self) -> i64 {
        i64::try_from(self.settings.tokens.refresh_ttl_secs.max(1)).unwrap_or(604_800)
    }

    /// A signed access token of session `sid` for `user_id`, valid from `now` until `exp`.
    #[allow(clippy::too_many_arguments)]
    fn access_token(
        &self,
        user_id: i64,
        username: &str,
        sid: &str,
        kind: TokenKind,
        akid: Option<i64>,
        grants: &Grants,
        now: i64,
        exp: i64,
    ) -> Result<String, OpError> {
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user_id.to_string(),
            username: username.to_owned(),
            sid: sid.to_owned(),
            jti: tokens::random_hex(),
            iat: now,
            exp,
            kind,
            akid: akid.and_then(|k| u64::try_from(k).ok()),
            roles: grants.roles.clone(),
            permissions: grants.permissions.clone(),
            org_permissions: grants.org_permissions.clone(),
            orgs: grants
                .organizations
                .iter()
                .filter_map(|&o| u64::try_from(o).ok())
                .collect(),
        };
        self.signer.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "cannot sign an access token");
            OpError::new(ErrorCode::StorageError, "cannot sign the access token")
        })
    }
}

fn login(id: &Identity, req: &Request) -> Result<Value, OpError> {
    if let Err(e) = limit(id, req, "auth/login") {
        id.metrics.logins.with_label_values(&["rate_limited"]).inc();
        return Err(e);
    }
    let identifier = req.body.str("identifier", MAX_IDENTIFIER)?;
    let password = req.body.str("password", MAX_PASSWORD)?;
    let key = identifier.to_lowercase();
    let now = now_ms();
    let found = id
        .store
        .read(|conn| users::find_for_login(conn, &identifier))?;
    let locked = |until: i64| {
        id.metrics.logins.with_label_values(&["locked"]).inc();
        let secs = (until - now).div_euclid(1000) + 1;
        OpError::new(
            ErrorCode::AccountLocked,
            format!("too many failed logins: the account is locked for {secs} more seconds"),
        )
    };
    let failed = || {
        id.metrics.logins.with_label_values(&["failed"]).inc();
        OpError::new(ErrorCode::LoginFailed, LOGIN_FAILED)
    };

    let Some(record) = found else {
        let target = format!("identifier:{}", key.chars().take(64).collect::<String>());
        if let Some(until) = id.unknown.locked_until(&key, now) {
            id.audit(id.record(req, "anonymous", "login.locked", target, "denied"));
            return Err(locked(until));
        }
        // The same work as a wrong password, so the two cannot be told apart by timing.
        id.hasher.verify_dummy(&password);
        id.audit(id.record(req, "anonymous", "login.failed", target.clone(), "failed"));
        if id.unknown.failed(&key, now).is_some() {
            id.metrics.lockouts.inc();
            id.audit(id.record(req, "system", "account.locked", target, "ok"));
        }
        return Err(failed());
    };
    let user = record.user;
    let target = format!("user:{}", user.id);
    if let Some(until) = record.locked_until_ms.filter(|&until| until > now) {
        id.audit(id.record(req, "anonymous", "login.locked", target, "denied"));
        return Err(locked(until));
    }
    let matches = id.hasher.verify(&password, &record.password_hash);
    if !matches || !user.is_active {
        let (lockout, user_id) = (id.settings.lockout.clone(), user.id);
        let row = id.record(req, "anonymous", "login.failed", target.clone(), "failed");
        let locked_now = id.write_audited(row, move |conn, row| {
            if !matches {
                users::record_failure(
                    conn,
                    user_id,
                    row.time_ms,
                    lockout.max_failures,
                    ms(lockout.window_secs),
                    ms(lockout.duration_secs),
                )
            } else {
                Ok(None)
            }
        })?;
        if locked_now.is_some() {
            id.metrics.lockouts.inc();
            id.audit(id.record(req, "system", "account.locked", target, "ok"));
        }
        return Err(failed());
    }

    let grants = id.store.read(|conn| roles::grants(conn, user.id))?;
    let now_s = now / 1000;
    let exp = now_s + id.ttl();
    let sid = tokens::random_hex();
    let access = id.access_token(
        user.id,
        &user.username,
        &sid,
        TokenKind::User,
        None,
        &grants,
        now_s,
        exp,
    )?;
    let refresh = tokens::new_refresh_token();
    let refresh_exp = now_s + id.refresh_ttl();
    let row = id.record(req, format!("user:{}", user.id), "login.ok", target, "ok");
    let (user_id, session, hash) = (user.id, sid.clone(), digest(&refresh));
    id.write_audited(row, move |conn, _| {
        sessions::create(conn, &session, user_id, None, now_s, exp)?;
        sessions::add_refresh(conn, &hash, &session, now_s, refresh_exp)?;
        users::login_succeeded(conn, user_id, now_s)
    })?;
    id.metrics.logins.with_label_values(&["ok"]).inc();
    let user = id.store.read(|conn| users::get(conn, user_id))?;
    Ok(json!({
        "user": user,
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_at": rfc3339(exp),
        "expires_in": id.ttl(),
        "refresh_expires_at": rfc3339(refresh_exp),
    }))
}

/// What presenting a refresh token led to.
enum Refreshed {
    /// A new pair for session `sid` of `user_id`.
    Rotated {
        sid: String,
        user_id: i64,
        username: String,
    },
    /// Unknown token.
    Unknown,
    /// Expired token.
    Expired,
    /// The session was ended before.
    Revoked,
    /// A used token came back: the session is now revoked; these sessions ended.
    Reused { user_id: i64, sessions: Vec<String> },
}

fn refresh(id: &Identity, req: &Request) -> Result<Value, OpError> {
    limit(id, req, "auth/refresh")?;
    let token = req.body.str("refresh_token", MAX_TOKEN_CHARS)?;
    let hash = digest(&token);
    let now = now_secs();
    let exp = now + id.ttl();
    let fresh = tokens::new_refresh_token();
    let (fresh_hash, fresh_exp) = (digest(&fresh), now + id.refresh_ttl());
    // Every outcome is audited; the row is completed inside the transaction.
    let row = id.record(req, "anonymous", "token.refresh", "", "failed");
    let outcome = id.write_audited(row, move |conn, row| {
        let Some(presented) = sessions::use_refresh(conn, &hash, now)? else {
            return Ok(Refreshed::Unknown);
        };
        let Some(session) = sessions::get(conn, &presented.session_id)? else {
            return Ok(Refreshed::Unknown);
        };
        row.actor = format!("user:{}", session.user_id);
        row.target = format!("session:{}", session.id);
        if session.revoked_reason.is_some() {
            return Ok(Refreshed::Revoked);
        }
        if presented.used {
            // Only a thief or a replaying client presents a used token: end the session.
            sessions::revoke(conn, &session.id, "refresh_reuse", now)?;
            let ended = std::slice::from_ref(&session.id);
            notices::revoked(conn, ended, session.user_id, "refresh_reuse")?;
            row.action = "token.reuse".into();
            row.outcome = "denied".into();
            return Ok(Refreshed::Reused {
                user_id: session.user_id,
                sessions: vec![session.id],
            });
        }
        if presented.expires_at <= now {
            return Ok(Refreshed::Expired);
        }
        let user = users::get(conn, session.user_id)?;
        if !user.is_active {
            return Ok(Refreshed::Revoked);
        }
        sessions::add_refresh(conn, &fresh_hash, &session.id, now, fresh_exp)?;
        sessions::extend_access(conn, &session.id, exp)?;
        row.outcome = "ok".into();
        Ok(Refreshed::Rotated {
            sid: session.id,
            user_id: user.id,
            username: user.username,
        })
    })?;
    match outcome {
        Refreshed::Rotated {
            sid,
            user_id,
            username,
        } => {
            // Current grants, not those of the old token: a role change shows at once.
            let grants = id.store.read(|conn| roles::grants(conn, user_id))?;
            let access = id.access_token(
                user_id,
                &username,
                &sid,
                TokenKind::User,
                None,
                &grants,
                now,
                exp,
            )?;
            Ok(json!({
                "access_token": access,
                "refresh_token": fresh,
                "token_type": "Bearer",
                "expires_at": rfc3339(exp),
                "expires_in": id.ttl(),
                "refresh_expires_at": rfc3339(fresh_exp),
            }))
        }
        Refreshed::Unknown => Err(OpError::unauthenticated("the refresh token is not valid")),
        Refreshed::Expired => Err(OpError::new(
            ErrorCode::TokenExpired,
            "the refresh token has expired",
        )),
        Refreshed::Revoked => Err(OpError::new(
            ErrorCode::TokenRevoked,
            "the session of this refresh token has ended",
        )),
        Refreshed::Reused { user_id, sessions } => {
            end_sessions(id, sessions, user_id, "refresh_reuse");
            Err(OpError::new(
                ErrorCode::TokenRevoked,
                "this refresh token was used before: the session has been revoked",
            ))
        }
    }
}

/// Revokes the caller's session (its access tokens and refresh token).
fn logout(id: &Identity, req: &Request) -> Result<Value, OpError> {
    let caller = id.caller(req)?;
    let row = id.record(
        req,
        caller.actor(),
        "logout",
        format!("session:{}", caller.session_id),
        "ok",
    );
    let (sid, user_id) = (caller.session_id.clone(), caller.user_id);
    id.write_audited(row, move |conn, _| {
        sessions::revoke(conn, &sid, "logout", now_secs())?;
        notices::revoked(conn, &[sid], user_id, "logout")
    })?;
    end_sessions(
        id,
        vec![caller.session_id.clone()],
        caller.user_id,
        "logout",
    );
    Ok(json!({"revoked": true, "session": caller.session_id}))
}

/// Tells every verifier (ours at once, the others over the bus) that `sessions` ended. The caller
/// has written the notice (`notices::revoked`) in the transaction that ended them.
pub(super) fn end_sessions(id: &Identity, sessions: Vec<String>, user_id: i64, reason: &str) {
    if sessions.is_empty() {
        return;
    }
    id.verifier.revoke_sessions(&sessions);
    id.events.revoked(sessions, user_id, reason);
}

fn validate(id: &Identity, req: &Request) -> Result<Value, OpError> {
    let token = req.body.str("token", MAX_TOKEN_CHARS)?;
    match id.authenticate(&token) {
        Ok(caller) => Ok(validation(&caller)),
        Err(e) if e.code == ErrorCode::StorageError => Err(e),
        Err(e) => Ok(json!({"valid": false, "code": e.code.as_str(), "message": e.message})),
    }
}

/// The `auth/validate` answer for a valid token: current grants.
fn validation(caller: &Caller) -> Value {
    json!({
        "valid": true,
        "user_id": caller.user_id,
        "username": caller.username,
        "kind": caller.kind,
        "session": caller.session_id,
        "roles": caller.grants.roles,
        "permissions": caller.grants.permissions,
        "org_permissions": caller.grants.org_permissions,
        "organizations": caller.grants.organizations,
        "expires_at": rfc3339(caller.expires_at),
    })
}

fn change_password(id: &Identity, req: &Request) -> Result<Value, OpError> {
    let caller = id.caller(req)?;
    if caller.kind != TokenKind::User {
        return id.denied(req, &caller, "a user login (not an API key)");
    }
    let current = req.body.str("current_password", MAX_PASSWORD)?;
    let new = req.body.str("new_password", MAX_PASSWORD)?;
    let user = id.store.read(|conn| users::get(conn, caller.user_id))?;
    let phc = id
        .store
        .read(|conn| users::password_hash(conn, caller.user_id))?;
    let target = format!("user:{}", caller.user_id);
    if !id.hasher.verify(&current, &phc) {
        id.audit(id.record(req, caller.actor(), "password.change", target, "failed"));
        return Err(OpError::new(
            ErrorCode::LoginFailed,
            "the current password is wrong",
        ));
    }
    password::check(&id.settings.password, &new, &[&user.username, &user.email])
        .map_err(|e| OpError::new(ErrorCode::WeakPassword, e.to_string()))?;
    let hash = id
        .hasher
        .hash(&new)
        .map_err(|e| OpError::new(ErrorCode::StorageError, e.to_string()))?;
    let row = id.record(req, caller.actor(), "password.change", target, "ok");
    let (user_id, keep) = (caller.user_id, caller.session_id.clone());
    let ended = id.write_audited(row, move |conn, _| {
        let now = now_secs();
        users::set_password(conn, user_id, &hash, now)?;
        let ended = sessions::revoke_where(
            conn,
            Some(user_id),
            None,
            Some(&keep),
            "password_changed",
            now,
        )?;
        notices::revoked(conn, &ended, user_id, "password_changed")?;
        Ok(ended)
    })?;
    let count = ended.len();
    end_sessions(id, ended, caller.user_id, "password_changed");
    Ok(json!({"changed": true, "sessions_revoked": count}))
}

fn public_keys(id: &Identity) -> Result<Value, OpError> {
    let keys = tokens::public_keys(&id.store, id.settings.tokens.access_ttl_secs)?;
    Ok(serde_json::to_value(keys).unwrap_or_default())
}

/// Most notices in one `auth/notices` reply, and the default.
const MAX_NOTICES: i64 = 1000;

/// `auth/notices {after, limit}`: the notice log after `after` (default 0: every notice kept),
/// oldest first. Open like `public_keys`: it lists session ids and user ids, never a token, and
/// a verifier has no token of its own to present.
fn notices_after(id: &Identity, req: &Request) -> Result<Value, OpError> {
    let after = req.body.opt_int("after")?.unwrap_or(0);
    if after < 0 {
        return Err(OpError::invalid("field `after` must not be negative"));
    }
    let limit = req.body.opt_int("limit")?.unwrap_or(MAX_NOTICES);
    if !(1..=MAX_NOTICES).contains(&limit) {
        return Err(OpError::invalid(format!(
            "field `limit` must be between 1 and {MAX_NOTICES}"
        )));
    }
    let (mut listed, last_seq) = id.store.read(|conn| {
        Ok((
            notices::after(conn, after, limit + 1)?,
            notices::last_seq(conn)?,
        ))
    })?;
    let more = listed.len() as i64 > limit;
    listed.truncate(limit as usize);
    Ok(json!({"notices": listed, "last_seq": last_seq, "more": more}))
}

/// `auth/token {api_key}`: an access token for an API key (no refresh token: a machine exchanges
/// its key again).
fn exchange(id: &Identity, req: &Request) -> Result<Value, OpError> {
    limit(id, req, "auth/token")?;
    let key = req.body.str("api_key", MAX_TOKEN_CHARS)?;
    let hash = digest(&key);
    let now = now_secs();
    let found = id.store.read(|conn| api_keys::find_by_hash(conn, &hash))?;
    let Some(found) = found else {
        id.audit(id.record(req, "anonymous", "api_key.exchange", "", "failed"));
        return Err(OpError::unauthenticated("the API key is not valid"));
    };
    let target = format!("api_key:{}", found.id);
    let refuse = |code: ErrorCode, message: &str| {
        id.audit(id.record(
            req,
            "anonymous",
            "api_key.exchange",
            target.clone(),
            "failed",
        ));
        Err(OpError::new(code, message))
    };
    if found.revoked {
        return refuse(ErrorCode::TokenRevoked, "the API key has been revoked");
    }
    if found.expires_at_secs.is_some_and(|at| at <= now) {
        return refuse(ErrorCode::TokenExpired, "the API key has expired");
    }
    let owner = id.store.read(|conn| users::get(conn, found.user_id))?;
    if !owner.is_active {
        return refuse(
            ErrorCode::TokenRevoked,
            "the API key's owner is deactivated",
        );
    }
    let owner_grants = id.store.read(|conn| roles::grants(conn, owner.id))?;
    let grants = key_grants(&found.permissions, &owner_grants);
    let mut exp = now + id.ttl();
    if let Some(key_exp) = found.expires_at_secs {
        exp = exp.min(key_exp);
    }
    let sid = tokens::random_hex();
    let access = id.access_token(
        owner.id,
        &owner.username,
        &sid,
        TokenKind::ApiKey,
        Some(found.id),
        &grants,
        now,
        exp,
    )?;
    let row = id.record(req, target.clone(), "api_key.exchange", target, "ok");
    let (session, owner_id, key_id) = (sid.clone(), owner.id, found.id);
    id.write_audited(row, move |conn, _| {
        sessions::create(conn, &session, owner_id, Some(key_id), now, exp)?;
        api_keys::touch(conn, key_id, now)
    })?;
    Ok(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_at": rfc3339(exp),
        "expires_in": exp - now,
        "permissions": grants.permissions,
        "user_id": owner.id,
        "api_key_id": found.id,
    }))
}

/// `auth/rotate_key {}` (`system:admin`): a new signing key; the old one stays listed until the
/// last token it signed has expired.
fn rotate_key(id: &Identity, req: &Request) -> Result<Value, OpError> {
    let caller = id.caller(req)?;
    id.require(req, &caller, SYSTEM_ADMIN, None)?;
    let now = now_secs();
    let previous = id.signer.kid();
    let key = tokens::generate_key(now);
    let listed_until = now + id.ttl() + KEY_LISTING_SLACK;
    let row = id.record(
        req,
        caller.actor(),
        "key.rotate",
        format!("key:{}", key.kid),
        "ok",
    );
    let new_key = key.clone();
    id.write_audited(row, move |conn, _| {
        keys::rotate(conn, &new_key, now, listed_until)
    })?;
    id.signer.switch_to(&key).map_err(|e| {
        tracing::error!(error = %e, "cannot use the new signing key");
        OpError::new(ErrorCode::StorageError, "cannot use the new signing key")
    })?;
    // Our own verifier learns the new key now (others on their next fetch or unknown kid).
    if let Err(e) = id.verifier.refresh_keys() {
        tracing::warn!(error = %e, "cannot refresh identity's own verifier keys");
    }
    Ok(json!({
        "kid": key.kid,
        "previous_kid": previous,
        "previous_listed_until": rfc3339(listed_until),
    }))
}
