//! The stable error codes of the state service and the error type every operation returns.
//!
//! Codes are part of the wire contract (DESIGN.md §5): clients match on them, so they never change
//! spelling. Messages are for humans and may change.

use std::fmt;

/// A stable, SCREAMING_SNAKE error code carried in `{"success":false,"error":{"code":...}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bad JSON, a missing, empty or mistyped field (the message names the field), a limit on a
    /// key or scope name.
    InvalidRequest,
    /// The operation frame names no known operation.
    UnknownOperation,
    /// The scope does not exist.
    ScopeNotFound,
    /// `create-scope` on a scope that already exists.
    ScopeExists,
    /// The key does not exist in the scope.
    KeyNotFound,
    /// The value is larger than the configured limit.
    ValueTooLarge,
    /// The database failed (I/O, corruption, full disk, shutting down).
    StorageError,
    /// No token, or one that is malformed, forged or signed by an unknown key.
    Unauthenticated,
    /// A genuine token past its expiry.
    TokenExpired,
    /// A genuine token whose session was ended (logout, revoked key, deactivated user).
    TokenRevoked,
    /// A valid token without the permission the operation needs (the message names it).
    PermissionDenied,
    /// Tokens cannot be checked yet (identity's keys were never obtained): nothing is allowed.
    Unavailable,
}

impl ErrorCode {
    /// Every code, for docs and tests.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidRequest,
        ErrorCode::UnknownOperation,
        ErrorCode::ScopeNotFound,
        ErrorCode::ScopeExists,
        ErrorCode::KeyNotFound,
        ErrorCode::ValueTooLarge,
        ErrorCode::StorageError,
        ErrorCode::Unauthenticated,
        ErrorCode::TokenExpired,
        ErrorCode::TokenRevoked,
        ErrorCode::PermissionDenied,
        ErrorCode::Unavailable,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::UnknownOperation => "UNKNOWN_OPERATION",
            ErrorCode::ScopeNotFound => "SCOPE_NOT_FOUND",
            ErrorCode::ScopeExists => "SCOPE_EXISTS",
            ErrorCode::KeyNotFound => "KEY_NOT_FOUND",
            ErrorCode::ValueTooLarge => "VALUE_TOO_LARGE",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::TokenRevoked => "TOKEN_REVOKED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The failure of one operation: a code and a human message.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for OpError {}
