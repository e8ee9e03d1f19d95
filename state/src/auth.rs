//! Authorization: the [`Authorizer`] every operation consults, the permission names, and
//! [`TokenAuthorizer`], which checks identity's access tokens through `worker_sdk::auth`.
//!
//! Permissions are granted globally (`state:data:read`) or for one scope
//! (`state:scope:<scope>:read|write|delete|admin`). `state:admin:full` and `system:admin` grant
//! everything, and a permission ending in `:*` grants every permission it prefixes. Writing or
//! deleting data implies reading it. Each decision is for one operation on one scope: a token
//! allowed one operation on a scope is asked again for every other.

use std::collections::HashMap;

use plantd_worker_sdk::auth::{grant_covers, AuthError, TokenVerifier};

use crate::codes::{ErrorCode, OpError};

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// `state:scope:list`: list-scopes.
    ScopeList,
    /// `state:scope:create`: create-scope.
    ScopeCreate,
    /// `state:scope:delete`: delete-scope.
    ScopeDelete,
    /// `state:data:read`: state-get, state-get-many, list-keys.
    DataRead,
    /// `state:data:write`: state-set, state-set-many.
    DataWrite,
    /// `state:data:delete`: delete.
    DataDelete,
    /// `state:health:read`: the health operation.
    HealthRead,
    /// `state:admin:full`: backups, and everything else.
    Admin,
}

impl Permission {
    /// The global permission name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ScopeList => "state:scope:list",
            Permission::ScopeCreate => "state:scope:create",
            Permission::ScopeDelete => "state:scope:delete",
            Permission::DataRead => "state:data:read",
            Permission::DataWrite => "state:data:write",
            Permission::DataDelete => "state:data:delete",
            Permission::HealthRead => "state:health:read",
            Permission::Admin => "state:admin:full",
        }
    }

    /// The scope-level permission names that grant this permission on `scope`.
    pub fn scoped(self, scope: &str) -> Vec<String> {
        let admin = format!("state:scope:{scope}:admin");
        let mut names = match self {
            Permission::DataRead => vec![
                format!("state:scope:{scope}:read"),
                format!("state:scope:{scope}:write"),
                format!("state:scope:{scope}:delete"),
            ],
            Permission::DataWrite => vec![format!("state:scope:{scope}:write")],
            Permission::DataDelete => vec![format!("state:scope:{scope}:delete")],
            _ => Vec::new(),
        };
        names.push(admin);
        names
    }

    /// True if `granted` (permission names) allows this permission on `scope` (if any).
    pub fn is_granted(self, granted: &[String], scope: Option<&str>) -> bool {
        let implied_by_global: &[&str] = match self {
            Permission::DataRead => &["state:data:write", "state:data:delete"],
            _ => &[],
        };
        let scoped = scope.map(|s| self.scoped(s)).unwrap_or_default();
        granted.iter().any(|g| {
            let g = g.as_str();
            g == Permission::Admin.as_str()
                || implied_by_global.contains(&g)
                || grant_covers(g, self.as_str())
                || scoped.iter().any(|s| grant_covers(g, s))
        })
    }

    /// How a refusal names what was needed: the global name, and the scoped one if any.
    pub fn describe(self, scope: Option<&str>) -> String {
        match (scope, self.scoped(scope.unwrap_or_default()).first()) {
            (Some(_), Some(scoped)) if !scoped.ends_with(":admin") => {
                format!("{} or {scoped}", self.as_str())
            }
            (Some(scope), _) => format!("{} or state:scope:{scope}:admin", self.as_str()),
            (None, _) => self.as_str().to_owned(),
        }
    }
}

/// One authorization question.
#[derive(Clone, Copy, Debug)]
pub struct AccessRequest<'a> {
    /// Operation name as sent (`state-get`, `get`, ...).
    pub operation: &'a str,
    /// What the operation needs.
    pub permission: Permission,
    /// The scope it touches, if any.
    pub scope: Option<&'a str>,
    /// The request's `token` field, if any.
    pub token: Option<&'a str>,
}

impl From<AuthError> for OpError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            AuthError::TokenExpired => ErrorCode::TokenExpired,
            AuthError::TokenRevoked => ErrorCode::TokenRevoked,
            AuthError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            AuthError::Unavailable(_) => ErrorCode::Unavailable,
        };
        OpError::new(code, e.to_string())
    }
}

/// Decides whether a request may run. Called for every operation, on the request's thread.
pub trait Authorizer: Send + Sync {
    /// `Ok(())` to allow.
    fn authorize(&self, request: &AccessRequest<'_>) -> Result<(), AuthError>;
}

/// Allows everything: what `auth.mode: off` means.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _request: &AccessRequest<'_>) -> Result<(), AuthError> {
        Ok(())
    }
}

/// Checks identity access tokens (`auth.mode: required`).
#[derive(Clone)]
pub struct TokenAuthorizer {
    verifier: TokenVerifier,
}

impl TokenAuthorizer {
    /// An authorizer verifying with `verifier`.
    pub fn new(verifier: TokenVerifier) -> Self {
        TokenAuthorizer { verifier }
    }
}

impl Authorizer for TokenAuthorizer {
    fn authorize(&self, request: &AccessRequest<'_>) -> Result<(), AuthError> {
        let needed = request.permission.describe(request.scope);
        self.verifier
            .authorize_with(request.token, &needed, |principal| {
                request
                    .permission
                    .is_granted(&principal.permissions, request.scope)
            })
            .map(drop)
    }
}

/// A fixed table of tokens and their permission names: for tests, demos and single-tenant setups.
#[derive(Clone, Debug, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, Vec<String>>,
}

impl StaticTokens {
    /// An empty table (every request is unauthorized).
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants `permissions` to `token`.
    pub fn grant<I, S>(mut self, token: &str, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tokens
            .entry(token.to_owned())
            .or_default()
            .extend(permissions.into_iter().map(Into::into));
        self
    }
}

impl Authorizer for StaticTokens {
    fn authorize(&self, request: &AccessRequest<'_>) -> Result<(), AuthError> {
        let token = request
            .token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::Unauthenticated("a token is required".into()))?;
        let granted = self
            .tokens
            .get(token)
            .ok_or_else(|| AuthError::Unauthenticated("the token is not valid".into()))?;
        if request.permission.is_granted(granted, request.scope) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied {
                permission: request.permission.describe(request.scope),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn global_scoped_admin_and_wildcard_grants() {
        let read = Permission::DataRead;
        assert!(read.is_granted(&granted(&["state:data:read"]), Some("a")));
        assert!(read.is_granted(&granted(&["state:data:write"]), Some("a")));
        assert!(read.is_granted(&granted(&["state:scope:a:read"]), Some("a")));
        assert!(!read.is_granted(&granted(&["state:scope:a:read"]), Some("b")));
        assert!(read.is_granted(&granted(&["state:scope:a:admin"]), Some("a")));
        assert!(read.is_granted(&granted(&["state:admin:full"]), None));
        assert!(read.is_granted(&granted(&["system:admin"]), Some("a")));
        assert!(read.is_granted(&granted(&["state:data:*"]), Some("x")));
        assert!(read.is_granted(&granted(&["state:*"]), Some("x")));
        assert!(!read.is_granted(&granted(&["state:scope:list"]), Some("x")));
        let write = Permission::DataWrite;
        assert!(!write.is_granted(&granted(&["state:data:read"]), Some("a")));
        assert!(!write.is_granted(&granted(&["state:scope:a:read"]), Some("a")));
        assert!(write.is_granted(&granted(&["state:scope:a:write"]), Some("a")));
        let delete_scope = Permission::ScopeDelete;
        assert!(delete_scope.is_granted(&granted(&["state:scope:a:admin"]), Some("a")));
        assert!(!delete_scope.is_granted(&granted(&["state:scope:b:admin"]), Some("a")));
        assert!(!delete_scope.is_granted(&granted(&["state:data:*"]), Some("a")));
    }

    #[test]
    fn static_tokens_tell_unauthenticated_from_denied() {
        let auth = StaticTokens::new().grant("reader", ["state:data:read"]);
        let req = |token, permission| AccessRequest {
            operation: "state-set",
            permission,
            scope: Some("s"),
            token,
        };
        assert!(matches!(
            auth.authorize(&req(None, Permission::DataRead)),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authorize(&req(Some("nope"), Permission::DataRead)),
            Err(AuthError::Unauthenticated(_))
        ));
        assert_eq!(
            auth.authorize(&req(Some("reader"), Permission::DataRead)),
            Ok(())
        );
        assert!(matches!(
            auth.authorize(&req(Some("reader"), Permission::DataWrite)),
            Err(AuthError::PermissionDenied { .. })
        ));
    }
}
