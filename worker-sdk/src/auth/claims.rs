//! [`Claims`]: the contents of an identity access token, and [`Principal`]: who a verified token
//! speaks for, with the permissions that currently apply.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `iss` of every access token.
pub const ISSUER: &str = "plantd-identity";
/// The `aud` of every access token.
pub const AUDIENCE: &str = "plantd";

/// What an access token was issued for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A user's login session.
    User,
    /// An API key exchanged for a token (machines: workers, modules).
    ApiKey,
}

/// The claims of an access token, exactly as identity signs them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Always [`ISSUER`].
    pub iss: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// The user id, as a decimal string.
    pub sub: String,
    /// The user's name.
    pub username: String,
    /// The login session; refreshing keeps it, logout and revocation end it.
    pub sid: String,
    /// This token's random id.
    pub jti: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// What the token was issued for.
    pub kind: TokenKind,
    /// The API key it was exchanged for, when `kind` is `api_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akid: Option<u64>,
    /// Role names at issue time.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Effective global permissions at issue time.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Permissions granted within one organization, keyed by organization id (decimal string).
    #[serde(default)]
    pub org_permissions: BTreeMap<String, Vec<String>>,
    /// Organizations the user belongs to.
    #[serde(default)]
    pub orgs: Vec<u64>,
}

/// Who a verified token speaks for, and what they may do now.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    /// The user id.
    pub user_id: u64,
    /// The user's name.
    pub username: String,
    /// What the token was issued for.
    pub kind: TokenKind,
    /// The session the token belongs to.
    pub session_id: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Global permissions.
    pub permissions: Vec<String>,
    /// Permissions per organization id.
    pub org_permissions: BTreeMap<String, Vec<String>>,
    /// Organizations the user belongs to.
    pub organizations: Vec<u64>,
    /// When the token expires (Unix seconds).
    pub expires_at: i64,
}

impl Principal {
    /// Built from the claims as signed.
    pub fn from_claims(claims: &Claims) -> Result<Self, std::num::ParseIntError> {
        Ok(Principal {
            user_id: claims.sub.parse()?,
            username: claims.username.clone(),
            kind: claims.kind,
            session_id: claims.sid.clone(),
            roles: claims.roles.clone(),
            permissions: claims.permissions.clone(),
            org_permissions: claims.org_permissions.clone(),
            organizations: claims.orgs.clone(),
            expires_at: claims.exp,
        })
    }

    /// True if a global permission allows `wanted` (see [`grants`](super::grants)).
    pub fn has(&self, wanted: &str) -> bool {
        super::grants(&self.permissions, wanted)
    }

    /// True if `wanted` is granted globally or within organization `org_id`.
    pub fn has_in_org(&self, wanted: &str, org_id: u64) -> bool {
        self.has(wanted)
            || self
                .org_permissions
                .get(&org_id.to_string())
                .is_some_and(|granted| super::grants(granted, wanted))
    }
}
