//! The one reply envelope (DESIGN.md §5): `{"success":true,"data":{...}}` or
//! `{"success":false,"error":{"code":"...","message":"..."}}`.

use serde_json::{json, Value};

use crate::codes::OpError;

/// The success envelope around `data`.
pub fn success(data: Value) -> Vec<u8> {
    json!({"success": true, "data": data})
        .to_string()
        .into_bytes()
}

/// The failure envelope for `error`.
pub fn failure(error: &OpError) -> Vec<u8> {
    json!({
        "success": false,
        "error": {"code": error.code.as_str(), "message": error.message},
    })
    .to_string()
    .into_bytes()
}
