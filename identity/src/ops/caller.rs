//! Who is calling: [`Caller`], from the request's `token`, checked by the SDK's
//! [`TokenVerifier`](plantd_worker_sdk::auth::TokenVerifier) (signature, `alg`, issuer, audience,
//! expiry, `kid`) and then against the database (session not revoked, user active, API key not
//! revoked), with the grants that hold *now*, not those frozen in the token.
//!
//! [`Identity::require`] checks one permission (globally, or within an organization) and audits a
//! refusal; [`Identity::require_grantable`] enforces "a caller can grant only what it holds".

use plantd_worker_sdk::auth::{grants, TokenKind};

use super::{Identity, Request};
use crate::codes::{ErrorCode, OpError};
use crate::permissions::first_not_held;
use crate::store::roles::{self, Grants};
use crate::store::{api_keys, now_secs, sessions, users};

/// Most characters a token field may have.
pub const MAX_TOKEN_CHARS: usize = 8 * 1024;

/// An authenticated caller and what it may do now.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user (for an API key token: the key's owner).
    pub user_id: i64,
    /// Their name.
    pub username: String,
    /// A login session or an API key exchange.
    pub kind: TokenKind,
    /// The session (`sid`).
    pub session_id: String,
    /// The API key, for `kind` `api_key`.
    pub api_key_id: Option<i64>,
    /// Current grants (for an API key: the key's permissions the owner still holds).
    pub grants: Grants,
    /// The token's expiry (Unix seconds).
    pub expires_at: i64,
}

impl Caller {
    /// The audit actor: `user:<id>` or `api_key:<id>`.
    pub fn actor(&self) -> String {
        match self.api_key_id {
            Some(key) => format!("api_key:{key}"),
            None => format!("user:{}", self.user_id),
        }
    }

    /// True if `permission` is granted globally, or within organization `org`.
    pub fn holds(&self, permission: &str, org: Option<i64>) -> bool {
        self.grants.holds(permission, org)
    }

    /// Permissions that hold within `org` (global ones included).
    pub fn held_in(&self, org: Option<i64>) -> Vec<String> {
        let mut held = self.grants.permissions.clone();
        if let Some(org) = org {
            if let Some(more) = self.grants.org_permissions.get(&org.to_string()) {
                held.extend(more.iter().cloned());
            }
        }
        held
    }
}

impl Identity {
    /// The caller behind the request's `token` (alias `access_token`, the Go field name).
    pub(crate) fn caller(&self, req: &Request) -> Result<Caller, OpError> {
        let token = match req.body.opt_str("token", MAX_TOKEN_CHARS)? {
            Some(token) => Some(token),
            None => req.body.opt_str("access_token", MAX_TOKEN_CHARS)?,
        };
        match token.filter(|t| !t.is_empty()) {
            Some(token) => self.authenticate(&token),
            None => Err(OpError::unauthenticated("a token is required")),
        }
    }

    /// Verifies `token` and loads the caller's current state.
    pub(crate) fn authenticate(&self, token: &str) -> Result<Caller, OpError> {
        let principal = self.verifier.verify(token)?;
        let revoked = || OpError::new(ErrorCode::TokenRevoked, "the token has been revoked");
        let user_id = i64::try_from(principal.user_id).map_err(|_| revoked())?;
        let sid = principal.session_id.clone();
        self.store.read(|conn| {
            let session = sessions::get(conn, &sid)?;
            let Some(session) = session.filter(|s| s.revoked_reason.is_none()) else {
                return Ok(Err(revoked()));
            };
            if session.user_id != user_id {
                return Ok(Err(revoked()));
            }
            let user = match users::get(conn, user_id) {
                Ok(user) if user.is_active => user,
                Ok(_) | Err(crate::store::StoreError::NotFound(_)) => return Ok(Err(revoked())),
                Err(e) => return Err(e),
            };
            let mut current = roles::grants(conn, user_id)?;
            if let Some(key_id) = session.api_key_id {
                let key = api_keys::get(conn, key_id);
                let key = match key {
                    Ok(key) if !key.revoked => key,
                    Ok(_) | Err(crate::store::StoreError::NotFound(_)) => {
                        return Ok(Err(revoked()))
                    }
                    Err(e) => return Err(e),
                };
                if key.expires_at_secs.is_some_and(|at| at <= now_secs()) {
                    return Ok(Err(OpError::new(
                        ErrorCode::TokenExpired,
                        "the API key has expired",
                    )));
                }
                current = key_grants(&key.permissions, &current);
            }
            Ok(Ok(Caller {
                user_id,
                username: user.username,
                kind: principal.kind,
                session_id: sid.clone(),
                api_key_id: session.api_key_id,
                grants: current,
                expires_at: principal.expires_at,
            }))
        })?
    }

    /// Refuses (and audits) a caller without `permission`, globally or within `org`.
    pub(crate) fn require(
        &self,
        req: &Request,
        caller: &Caller,
        permission: &str,
        org: Option<i64>,
    ) -> Result<(), OpError> {
        if caller.holds(permission, org) {
            return Ok(());
        }
        self.denied(req, caller, permission)
    }

    /// Refuses (and audits) a caller that does not hold every one of `wanted` (globally or
    /// within `org`): nobody grants more than they have.
    pub(crate) fn require_grantable(
        &self,
        req: &Request,
        caller: &Caller,
        wanted: &[String],
        org: Option<i64>,
    ) -> Result<(), OpError> {
        match first_not_held(&caller.held_in(org), wanted) {
            None => Ok(()),
            Some(missing) => self.denied(req, caller, missing),
        }
    }

    /// Audits a refusal and returns `PERMISSION_DENIED` naming `permission`.
    pub(crate) fn denied<T>(
        &self,
        req: &Request,
        caller: &Caller,
        permission: &str,
    ) -> Result<T, OpError> {
        self.audit(self.record(
            req,
            caller.actor(),
            "permission.denied",
            permission,
            "denied",
        ));
        Err(OpError::denied(permission))
    }
}

/// What a token exchanged for an API key may do: the key's permissions that the owner still
/// holds (a key never outlives its owner's rights), globally only.
pub fn key_grants(key_permissions: &[String], owner: &Grants) -> Grants {
    Grants {
        roles: Vec::new(),
        permissions: key_permissions
            .iter()
            .filter(|p| grants(&owner.permissions, p))
            .cloned()
            .collect(),
        org_permissions: Default::default(),
        organizations: owner.organizations.clone(),
    }
}
