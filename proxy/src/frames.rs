//! From HTTP to MDP frames and back: the JSON body of a service call (with the bearer token and
//! the client's address put in), and the `{"frames": [...]}` form of `/api/v1/request`.
//!
//! A frame in JSON is a string when it is UTF-8, else `{"base64": "..."}`; both forms are
//! accepted in requests.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use plantd_worker_sdk::Frames;
use serde_json::{Map, Value};

use crate::reply::ApiError;

/// The JSON body of a service call: an object (an empty body is `{}`), with `token` set from
/// the `Authorization: Bearer` header unless the body has one, and `ip_address` set when given
/// (identity's `auth/*` calls), overriding any the client sent.
pub fn call_body(
    body: &[u8],
    bearer: Option<&str>,
    ip_address: Option<&str>,
) -> Result<Vec<u8>, ApiError> {
    if bearer.is_none() && ip_address.is_none() && !body.is_empty() {
        // Nothing to add: check it is JSON and send the bytes as they came.
        serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        return Ok(body.to_vec());
    }
    let mut object = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(object)) => object,
            Ok(_) => {
                return Err(ApiError::bad_request(
                    "the body must be a JSON object to carry a token or an address",
                ))
            }
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "the body is not valid JSON: {e}"
                )))
            }
        }
    };
    if let Some(token) = bearer {
        object
            .entry("token")
            .or_insert_with(|| Value::String(token.to_owned()));
    }
    if let Some(ip) = ip_address {
        object.insert("ip_address".into(), Value::String(ip.to_owned()));
    }
    Ok(serde_json::to_vec(&Value::Object(object)).expect("a JSON map serializes"))
}

/// The frames of a `{"frames": [...]}` body.
pub fn decode_frames(body: &[u8]) -> Result<Frames, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Some(frames) = value.get("frames").and_then(Value::as_array) else {
        return Err(ApiError::bad_request(
            "the body must be {\"frames\": [...]} (strings or {\"base64\": ...})",
        ));
    };
    frames
        .iter()
        .enumerate()
        .map(|(i, frame)| match frame {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            Value::Object(o) => match o.get("base64").and_then(Value::as_str) {
                Some(b64) if o.len() == 1 => STANDARD
                    .decode(b64)
                    .map_err(|e| ApiError::bad_request(format!("frame {i}: bad base64: {e}"))),
                _ => Err(ApiError::bad_request(format!(
                    "frame {i}: an object frame must be {{\"base64\": \"...\"}}"
                ))),
            },
            _ => Err(ApiError::bad_request(format!(
                "frame {i}: must be a string or {{\"base64\": \"...\"}}"
            ))),
        })
        .collect()
}

/// One frame as JSON: a string when UTF-8, else `{"base64": ...}`.
pub fn encode_frame(frame: &[u8]) -> Value {
    match std::str::from_utf8(frame) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => serde_json::json!({"base64": STANDARD.encode(frame)}),
    }
}

/// `{"frames": [...]}` for a reply.
pub fn encode_frames(frames: &[Vec<u8>]) -> Value {
    serde_json::json!({"frames": frames.iter().map(|f| encode_frame(f)).collect::<Vec<_>>()})
}

/// What a service call's reply is in HTTP: its last frame when that is JSON (plantd services
/// reply with one JSON frame; echo puts the operation frame before it), else the frames.
pub fn reply_json(frames: &[Vec<u8>]) -> Value {
    frames
        .last()
        .and_then(|last| serde_json::from_slice::<Value>(last).ok())
        .unwrap_or_else(|| encode_frames(frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn the_bearer_token_goes_in_unless_the_body_has_one() {
        let body = call_body(br#"{"scope":"a"}"#, Some("t1"), None).unwrap();
        assert_eq!(parse(&body), json!({"scope": "a", "token": "t1"}));
        let body = call_body(br#"{"token":"mine"}"#, Some("t1"), None).unwrap();
        assert_eq!(parse(&body), json!({"token": "mine"}));
        let body = call_body(b"", Some("t1"), None).unwrap();
        assert_eq!(parse(&body), json!({"token": "t1"}));
    }

    #[test]
    fn the_address_overrides_what_the_client_sent() {
        let body = call_body(br#"{"ip_address":"6.6.6.6"}"#, None, Some("10.0.0.1")).unwrap();
        assert_eq!(parse(&body), json!({"ip_address": "10.0.0.1"}));
    }

    #[test]
    fn bad_bodies_are_400() {
        assert_eq!(call_body(b"{nope", None, None).unwrap_err().status, 400);
        assert_eq!(call_body(b"[1]", Some("t"), None).unwrap_err().status, 400);
        assert_eq!(decode_frames(b"{}").unwrap_err().status, 400);
        assert_eq!(
            decode_frames(br#"{"frames":[{"base64":"!!"}]}"#)
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn frames_round_trip_text_and_bytes() {
        let frames = decode_frames(br#"{"frames":["op",{"base64":"AAH/"}]}"#).unwrap();
        assert_eq!(frames, vec![b"op".to_vec(), vec![0, 1, 255]]);
        assert_eq!(
            encode_frames(&frames),
            json!({"frames": ["op", {"base64": "AAH/"}]})
        );
    }
}
