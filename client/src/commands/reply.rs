//! The JSON reply envelope of plantd's own services (state, logger):
//! `{"success": true, "data": ...}` or `{"success": false, "error": {"code", "message"}}`.
//! A `success: false` reply is a failure of the command, whichever command got it.

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
        Some(false) => Err(refused(&envelope)),
        None => Err(unexpected(&format!("an unexpected reply: {envelope}"))),
    }
}

/// The error of a reply whose first frame is a `success: false` envelope; `None` for any other
/// reply (a success, or frames that are not an envelope at all, as any service may send).
pub fn refusal(reply: &[Vec<u8>]) -> Option<CliError> {
    let envelope: Value = serde_json::from_slice(reply.first()?).ok()?;
    (envelope.get("success")? == &Value::Bool(false)).then(|| refused(&envelope))
}

fn refused(envelope: &Value) -> CliError {
    CliError::Refused {
        code: envelope["error"]["code"]
            .as_str()
            .unwrap_or("ERROR")
            .to_owned(),
        message: envelope["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
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

    #[test]
    fn only_success_false_envelopes_are_refusals() {
        let err = br#"{"success":false,"error":{"code":"UNKNOWN_OPERATION","message":"x"}}"#;
        assert_eq!(
            refusal(&[err.to_vec()]).unwrap().to_string(),
            "UNKNOWN_OPERATION: x"
        );
        for fine in [
            &br#"{"success":true,"data":{}}"#[..],
            b"hello",
            br#"{"success":"false"}"#,
            b"[false]",
        ] {
            assert!(refusal(&[fine.to_vec()]).is_none(), "{fine:?}");
        }
        assert!(refusal(&[]).is_none());
    }
}
