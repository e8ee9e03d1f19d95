//! Authorization hook: the [`Authorizer`] every operation consults, and the permission names.
//!
//! Permissions are granted globally (`state:data:read`) or for one scope
//! (`state:scope:<scope>:read|write|delete|admin`). `state:admin:full` grants everything, and a
//! permission ending in `:*` grants every permission it prefixes. Writing or deleting data implies
//! reading it. The default authorizer allows everything; the identity service plugs in a real one.

use std::collections::HashMap;

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
            g == self.as_str()
                || g == Permission::Admin.as_str()
                || implied_by_global.contains(&g)
                || scoped.iter().any(|s| s == g)
                || wildcard_covers(g, self.as_str())
                || scoped.iter().any(|s| wildcard_covers(g, s))
        })
    }
}

/// `state:data:*` covers `state:data:read`; `state:*` covers everything.
fn wildcard_covers(granted: &str, wanted: &str) -> bool {
    granted
        .strip_suffix('*')
        .is_some_and(|prefix| prefix.ends_with(':') && wanted.starts_with(prefix))
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

/// Why access was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or one that is not valid. Reply code `UNAUTHORIZED`.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token without the permission. Reply code `FORBIDDEN`.
    #[error("{0}")]
    Forbidden(String),
}

impl From<AuthError> for OpError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized(m) => OpError::new(ErrorCode::Unauthorized, m),
            AuthError::Forbidden(m) => OpError::new(ErrorCode::Forbidden, m),
        }
    }
}

/// Decides whether a request may run. Called for every operation, on the request's thread.
pub trait Authorizer: Send + Sync {
    /// `Ok(())` to allow.
    fn authorize(&self, request: &AccessRequest<'_>) -> Result<(), AuthError>;
}

/// Allows everything (the default until identity is wired in).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _request: &AccessRequest<'_>) -> Result<(), AuthError> {
        Ok(())
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
            .ok_or_else(|| AuthError::Unauthorized("a token is required".into()))?;
        let granted = self
            .tokens
            .get(token)
            .ok_or_else(|| AuthError::Unauthorized("invalid token".into()))?;
        if request.permission.is_granted(granted, request.scope) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(match request.scope {
                Some(scope) => format!(
                    "{} requires {} on scope '{scope}'",
                    request.operation,
                    request.permission.as_str()
                ),
                None => format!(
                    "{} requires {}",
                    request.operation,
                    request.permission.as_str()
                ),
            }))
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
    fn static_tokens_tell_unauthorized_from_forbidden() {
        let auth = StaticTokens::new().grant("reader", ["state:data:read"]);
        let req = |token, permission| AccessRequest {
            operation: "state-set",
            permission,
            scope: Some("s"),
            token,
        };
        assert!(matches!(
            auth.authorize(&req(None, Permission::DataRead)),
            Err(AuthError::Unauthorized(_))
        ));
        assert!(matches!(
            auth.authorize(&req(Some("nope"), Permission::DataRead)),
            Err(AuthError::Unauthorized(_))
        ));
        assert_eq!(
            auth.authorize(&req(Some("reader"), Permission::DataRead)),
            Ok(())
        );
        assert!(matches!(
            auth.authorize(&req(Some("reader"), Permission::DataWrite)),
            Err(AuthError::Forbidden(_))
        ));
    }
}
