//! [`AuthError`]: why a token was refused, with the reply code each reason has on the wire.

/// Why a request was not allowed. [`code`](AuthError::code) gives the stable reply code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or one that is malformed, forged or signed by an unknown key.
    #[error("{0}")]
    Unauthenticated(String),
    /// A genuine token past its expiry.
    #[error("the token has expired")]
    TokenExpired,
    /// A genuine token whose session was ended (logout, revoked key, deactivated user).
    #[error("the token has been revoked")]
    TokenRevoked,
    /// A valid token without the permission, which the message names.
    #[error("permission denied: requires {permission}")]
    PermissionDenied {
        /// The permission that was needed.
        permission: String,
    },
    /// The verifier could not decide: it has never obtained identity's keys, or identity did not
    /// answer when current permissions were needed. Nothing is allowed meanwhile.
    #[error("authorization unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The reply code: `UNAUTHENTICATED`, `TOKEN_EXPIRED`, `TOKEN_REVOKED`, `PERMISSION_DENIED` or
    /// `UNAVAILABLE`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Unauthenticated(_) => "UNAUTHENTICATED",
            AuthError::TokenExpired => "TOKEN_EXPIRED",
            AuthError::TokenRevoked => "TOKEN_REVOKED",
            AuthError::PermissionDenied { .. } => "PERMISSION_DENIED",
            AuthError::Unavailable(_) => "UNAVAILABLE",
        }
    }

    /// The error a reply with `code` (as identity sends it) stands for.
    pub fn from_code(code: &str, message: &str) -> AuthError {
        match code {
            "TOKEN_EXPIRED" => AuthError::TokenExpired,
            "TOKEN_REVOKED" => AuthError::TokenRevoked,
            "UNAVAILABLE" => AuthError::Unavailable(message.to_owned()),
            "PERMISSION_DENIED" => AuthError::PermissionDenied {
                permission: message.to_owned(),
            },
            _ => AuthError::Unauthenticated(message.to_owned()),
        }
    }
}
