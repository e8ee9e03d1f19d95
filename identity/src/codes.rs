//! The stable error codes of the identity service and the error type every operation returns.
//!
//! Codes are part of the wire contract (DESIGN.md §5, issue 12): clients and the SDK verifier
//! match on them, so their spelling never changes. Messages are for humans; they never carry a
//! password, token, API key or hash.

use std::fmt;

/// A stable, SCREAMING_SNAKE error code carried in `{"success":false,"error":{"code":...}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bad JSON, a missing or mistyped field (the message names it), a bad value.
    InvalidRequest,
    /// The category/operation frames name no known operation.
    UnknownOperation,
    /// No token, or one that is garbled, forged or of an unknown key.
    Unauthenticated,
    /// A valid token without the permission the operation needs (the message names it).
    PermissionDenied,
    /// `auth/login` with an unknown user, a wrong password or an inactive account (one answer).
    LoginFailed,
    /// Too many failed logins: the account is locked for a while.
    AccountLocked,
    /// Too many login/refresh/token requests from one source.
    RateLimited,
    /// The user, role, organization, API key or assignment does not exist.
    NotFound,
    /// A unique name is taken, or an assignment already exists.
    Conflict,
    /// A new password fails the password policy.
    WeakPassword,
    /// The token (or refresh token, API key) has expired.
    TokenExpired,
    /// The token's session was revoked (logout, reuse, deactivation, ...), or the key revoked.
    TokenRevoked,
    /// The database failed.
    StorageError,
}

impl ErrorCode {
    /// Every code, for docs and tests.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidRequest,
        ErrorCode::UnknownOperation,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::LoginFailed,
        ErrorCode::AccountLocked,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::WeakPassword,
        ErrorCode::TokenExpired,
        ErrorCode::TokenRevoked,
        ErrorCode::StorageError,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::UnknownOperation => "UNKNOWN_OPERATION",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::LoginFailed => "LOGIN_FAILED",
            ErrorCode::AccountLocked => "ACCOUNT_LOCKED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::WeakPassword => "WEAK_PASSWORD",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::TokenRevoked => "TOKEN_REVOKED",
            ErrorCode::StorageError => "STORAGE_ERROR",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The failure of one operation: a code and a human message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct OpError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl OpError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        OpError {
            code,
            message: message.into(),
        }
    }

    /// `INVALID_REQUEST`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `CONFLICT`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// `PERMISSION_DENIED` naming the permission that is missing.
    pub fn denied(permission: &str) -> Self {
        Self::new(
            ErrorCode::PermissionDenied,
            format!("permission `{permission}` is required"),
        )
    }

    /// `UNAUTHENTICATED`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
}
