//! The bus wire format: a multipart message `[topic, payload...]` (DESIGN.md §4).
//!
//! The topic is a dotted name matched by prefix (`org.plantd.metric.host1.load1`); the payload is
//! zero or more frames, usually one MessagePack map. Unlike the Go system (envelope and payload glued
//! into one frame, split again with a regex) the topic always travels in its own frame, so a payload
//! can contain anything. [`decode`] never fails on content: any non-empty multipart message is a
//! valid bus message, and interpreting the payload ([`parse_payload`]) is the receiver's business.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Frame;

/// One message on a bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusMessage {
    /// The topic frame, as text (invalid UTF-8 is replaced, so a bad topic is still visible).
    pub topic: String,
    /// The payload frames after the topic (usually exactly one).
    pub payload: Vec<Vec<u8>>,
}

impl BusMessage {
    /// A message with one payload frame.
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        BusMessage {
            topic: topic.into(),
            payload: vec![payload.into()],
        }
    }

    /// The first payload frame, or an empty slice for a topic-only message.
    pub fn body(&self) -> &[u8] {
        self.payload.first().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Decodes the first payload frame as a typed MessagePack (or JSON) value.
    pub fn decode_body<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        decode_typed(self.body())
    }
}

/// Why a bus message or payload could not be decoded.
#[derive(Debug, Error)]
pub enum PayloadError {
    /// A multipart message without any frame (libzmq never delivers one; kept for completeness).
    #[error("empty bus message")]
    Empty,
    /// The payload is neither valid MessagePack nor valid JSON for the requested type.
    #[error("payload is not valid MessagePack or JSON for this type: {0}")]
    Invalid(String),
    /// A value could not be encoded as MessagePack.
    #[error("cannot encode payload as MessagePack: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Builds the frames of a bus message: the topic frame, then each payload frame.
pub fn encode<T: AsRef<[u8]>>(topic: &str, payload: &[T]) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(payload.len() + 1);
    frames.push(Frame::from(topic.as_bytes()));
    frames.extend(payload.iter().map(|p| Frame::from(p.as_ref())));
    frames
}

/// Splits received frames into topic and payload. Fails only on an empty message.
pub fn decode(frames: Vec<Frame>) -> Result<BusMessage, PayloadError> {
    let mut frames = frames.into_iter();
    let topic = frames.next().ok_or(PayloadError::Empty)?;
    Ok(BusMessage {
        topic: String::from_utf8_lossy(&topic).into_owned(),
        payload: frames.map(|f| f.to_vec()).collect(),
    })
}

/// Encodes a typed payload the plantd way: a MessagePack map with field names
/// (`rmp_serde::to_vec_named`), so any language can read it without our struct layout.
pub fn encode_msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, PayloadError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decodes a typed payload: MessagePack first (the plantd encoding), then JSON (what a shell user or
/// another system may publish).
pub fn decode_typed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PayloadError> {
    match decode_msgpack_exact::<T>(bytes) {
        Some(Ok(value)) => Ok(value),
        msgpack => serde_json::from_slice(bytes).map_err(|json| {
            PayloadError::Invalid(match msgpack {
                Some(Err(e)) => e,
                _ => json.to_string(),
            })
        }),
    }
}

/// How a payload was interpreted by [`parse_payload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// A MessagePack value.
    Msgpack,
    /// A JSON text.
    Json,
}

/// Interprets an untyped payload as a JSON value, or `None` if it is neither JSON nor MessagePack.
///
/// JSON is tried first: a JSON text is (almost) never a complete MessagePack value, but short ASCII
/// strings such as `5` are both, and the reading a human meant is the JSON one. MessagePack must
/// consume the whole payload, which rejects most random bytes.
pub fn parse_payload(bytes: &[u8]) -> Option<(PayloadEncoding, serde_json::Value)> {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return Some((PayloadEncoding::Json, value));
    }
    match decode_msgpack_exact::<serde_json::Value>(bytes) {
        Some(Ok(value)) => Some((PayloadEncoding::Msgpack, value)),
        _ => None,
    }
}

/// Decodes MessagePack and insists the value spans the whole input. `None` means "not even the
/// start of a value"; `Some(Err)` carries the decoder's complaint.
fn decode_msgpack_exact<T: DeserializeOwned>(bytes: &[u8]) -> Option<Result<T, String>> {
    if bytes.is_empty() {
        return None;
    }
    let mut cursor = std::io::Cursor::new(bytes);
    let mut de = rmp_serde::Deserializer::new(&mut cursor);
    let result = T::deserialize(&mut de).map_err(|e| e.to_string());
    let consumed = cursor.position() as usize;
    Some(match result {
        Ok(_) if consumed != bytes.len() => Err(format!(
            "{} trailing bytes after the MessagePack value",
            bytes.len() - consumed
        )),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn encode_then_decode_keeps_topic_and_every_payload_frame() {
        let frames = encode("org.plantd.test", &[b"a".as_slice(), b"", b"{\"x\":1}"]);
        assert_eq!(frames.len(), 4);
        let msg = decode(frames).unwrap();
        assert_eq!(msg.topic, "org.plantd.test");
        assert_eq!(
            msg.payload,
            vec![b"a".to_vec(), vec![], b"{\"x\":1}".to_vec()]
        );
        assert_eq!(msg.body(), b"a");
    }

    #[test]
    fn topic_only_and_empty_messages() {
        let msg = decode(encode::<&[u8]>("t", &[])).unwrap();
        assert!(msg.payload.is_empty());
        assert_eq!(msg.body(), b"");
        assert!(matches!(decode(Vec::new()), Err(PayloadError::Empty)));
    }

    #[test]
    fn invalid_utf8_topic_is_kept_lossily() {
        let msg = decode(vec![Frame::from(&[0x6f, 0xff, 0x6b][..])]).unwrap();
        assert_eq!(msg.topic, "o\u{fffd}k");
    }

    #[test]
    fn typed_round_trip_is_a_named_msgpack_map() {
        let mut value = BTreeMap::new();
        value.insert("value".to_owned(), 1.5f64);
        let bytes = encode_msgpack(&value).unwrap();
        assert_eq!(bytes[0], 0x81, "a one-entry fixmap");
        let back: BTreeMap<String, f64> = decode_typed(&bytes).unwrap();
        assert_eq!(back, value);
        let from_json: BTreeMap<String, f64> = decode_typed(br#"{"value":1.5}"#).unwrap();
        assert_eq!(from_json, value);
    }

    #[test]
    fn parse_payload_accepts_json_and_msgpack_and_rejects_garbage() {
        let (enc, v) = parse_payload(br#"{"a":[1,2]}"#).unwrap();
        assert_eq!(enc, PayloadEncoding::Json);
        assert_eq!(v["a"][1], 2);
        let packed = encode_msgpack(&serde_json::json!({"k": "v"})).unwrap();
        let (enc, v) = parse_payload(&packed).unwrap();
        assert_eq!(enc, PayloadEncoding::Msgpack);
        assert_eq!(v["k"], "v");
        assert!(parse_payload(b"hello world").is_none());
        assert!(parse_payload(&[0xc1, 0x00, 0xff]).is_none());
        assert!(parse_payload(b"").is_none());
        // A valid map followed by junk is not a payload.
        let mut trailing = packed.clone();
        trailing.push(0x01);
        assert!(parse_payload(&trailing).is_none());
    }
}
