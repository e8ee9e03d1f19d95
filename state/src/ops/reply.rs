//! The one reply envelope (DESIGN.md §5): `{"success":true,"data":{...}}` or
//! `{"success":false,"error":{"code":"...","message":"..."}}`.

use serde::Serialize;

use crate::codes::OpError;

/// Wraps serialized `data` in a success envelope.
pub fn success(data: &[u8]) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"success\":true,\"data\":";
    let mut out = Vec::with_capacity(HEAD.len() + data.len() + 1);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

#[derive(Serialize)]
struct Failure<'a> {
    success: bool,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// The failure envelope for `error`.
pub fn failure(error: &OpError) -> Vec<u8> {
    serde_json::to_vec(&Failure {
        success: false,
        error: ErrorBody {
            code: error.code.as_str(),
            message: &error.message,
        },
    })
    // Serializing two strings and a bool cannot fail; keep a valid reply regardless.
    .unwrap_or_else(|_| {
        br#"{"success":false,"error":{"code":"STORAGE_ERROR","message":"cannot encode reply"}}"#
            .to_vec()
    })
}

/// Serializes an operation's `data` object.
pub fn data<T: Serialize>(value: &T) -> Result<Vec<u8>, OpError> {
    serde_json::to_vec(value).map_err(|e| {
        OpError::new(
            crate::codes::ErrorCode::StorageError,
            format!("cannot encode reply: {e}"),
        )
    })
}
