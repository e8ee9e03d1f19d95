//! The JSON reply envelope of plantd's own services (state, logger):
//! `{"success": true, "data": ...}` or `{"success": false, "error": {"code", "message"}}`.

use serde_json::Value;

use crate::error::CliError;

/// Turns `service`'s reply frame into the `data` it carries, or a one-line `CODE: message` error.
pub fn data(service: &str, reply: &[Vec<u8>]) -> Result<Value, CliError> {
    let unexpected = |what: &str| CliError::Input(format!("{service} sent {what}"));
    let frame = reply.first().ok_or_else(|| unexpected("an empty reply"))?;
    let envelope: Value =
        serde_json::from_slice(frame).map_err(|_| unexpected("a reply that is not JSON"))?;
    match envelope.get("success").and_then(Value::as_bool) {
        Some(true) => Ok(envelope.get("data").cloned().unwrap_or(Value::Null)),
        Some(false) => {
            let code = envelope["error"]["code"].as_str().unwrap_or("ERROR");
            let message = envelope["error"]["message"].as_str().unwrap_or("");
            Err(CliError::Input(format!("{code}: {message}")))
        }
        None => Err(unexpected(&format!("an unexpected reply: {envelope}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_replies_become_one_line_errors() {
        let ok = br#"{"success":true,"data":{"x":1}}"#.to_vec();
        assert_eq!(data("svc", &[ok]).unwrap(), json!({"x": 1}));
        let err =
            br#"{"success":false,"error":{"code":"KEY_NOT_FOUND","message":"no k"}}"#.to_vec();
        assert_eq!(
            data("svc", &[err]).unwrap_err().to_string(),
            "KEY_NOT_FOUND: no k"
        );
        let err = br#"{"success":false,"error":{"code":"INVALID_REQUEST","message":"since must be ..."}}"#
            .to_vec();
        assert_eq!(
            data("svc", &[err]).unwrap_err().to_string(),
            "INVALID_REQUEST: since must be ..."
        );
        assert!(data("svc", &[]).is_err());
        assert!(data("svc", &[b"nope".to_vec()]).is_err());
    }
}
