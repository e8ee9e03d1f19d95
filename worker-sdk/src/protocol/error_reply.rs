//! Broker and worker error replies: a FINAL whose body is `["plantd.error", "<code>", "<message>"]`.
//!
//! Codes are HTTP-like (DESIGN.md §4, §9): `400` a client command the broker cannot use, `403`
//! outside the CURVE key's policy, `404` no such service, `429` rate limited, `503` queue full,
//! `504` expired, `500` internal or handler failure.

use super::Frame;

/// First body frame of every plantd error reply.
pub const ERROR_MARKER: &[u8] = b"plantd.error";

/// The error codes a plantd broker or worker sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `400`: the client sent a command the broker cannot use (PARTIAL or FINAL instead of
    /// REQUEST).
    BadRequest,
    /// `403`: the request is outside the policy of the client's CURVE key.
    Forbidden,
    /// `404`: the service never had a worker and the request expired.
    NotFound,
    /// `429`: the client sent requests faster than the broker's rate limit allows.
    RateLimited,
    /// `500`: the worker's handler failed, or the request exhausted its retries.
    Internal,
    /// `501`: an MMI query the broker does not implement.
    NotImplemented,
    /// `503`: the service's queue is full.
    QueueFull,
    /// `504`: the request waited in the queue past its time to live.
    Expired,
}

impl ErrorCode {
    /// The numeric code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "400",
            ErrorCode::Forbidden => "403",
            ErrorCode::NotFound => "404",
            ErrorCode::RateLimited => "429",
            ErrorCode::Internal => "500",
            ErrorCode::NotImplemented => "501",
            ErrorCode::QueueFull => "503",
            ErrorCode::Expired => "504",
        }
    }

    /// Parses a wire code; unknown codes are `None`.
    pub fn parse(code: &[u8]) -> Option<Self> {
        Some(match code {
            b"400" => ErrorCode::BadRequest,
            b"403" => ErrorCode::Forbidden,
            b"404" => ErrorCode::NotFound,
            b"429" => ErrorCode::RateLimited,
            b"500" => ErrorCode::Internal,
            b"501" => ErrorCode::NotImplemented,
            b"503" => ErrorCode::QueueFull,
            b"504" => ErrorCode::Expired,
            _ => return None,
        })
    }
}

/// A decoded error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    /// The code as sent (kept as text so unknown codes survive).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorReply {
    /// Builds the body frames of an error reply.
    pub fn body(code: ErrorCode, message: &str) -> Vec<Frame> {
        vec![
            Frame::from(ERROR_MARKER),
            Frame::from(code.as_str()),
            Frame::from(message),
        ]
    }

    /// Recognises an error reply body; any other body is `None`.
    pub fn parse<T: std::ops::Deref<Target = [u8]>>(body: &[T]) -> Option<Self> {
        match body {
            [marker, code, rest @ ..] if **marker == *ERROR_MARKER => Some(ErrorReply {
                code: String::from_utf8_lossy(code).into_owned(),
                message: rest
                    .first()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .unwrap_or_default(),
            }),
            _ => None,
        }
    }
}
