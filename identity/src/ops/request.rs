//! Request bodies: one JSON object whose fields are read one by one with the type each operation
//! expects, so every complaint names the field at fault (`INVALID_REQUEST`), never a panic.
//! Field values never appear in messages: a misplaced password must not be echoed back.

use serde_json::{Map, Value};

use crate::codes::OpError;

/// Largest body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A parsed request body.
#[derive(Debug, Default)]
pub struct Body {
    fields: Map<String, Value>,
}

impl Body {
    /// Parses the body frame. A missing, empty or blank body is an empty object.
    pub fn parse(frame: Option<&[u8]>) -> Result<Self, OpError> {
        let bytes = frame.unwrap_or_default();
        if bytes.len() > MAX_BODY_BYTES {
            return Err(OpError::invalid(format!(
                "the request body is {} bytes; the limit is {MAX_BODY_BYTES}",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| OpError::invalid("the request body is not UTF-8"))?;
        if text.trim().is_empty() {
            return Ok(Body::default());
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => Ok(Body { fields }),
            Ok(_) => Err(OpError::invalid("the request body must be a JSON object")),
            Err(e) => Err(OpError::invalid(format!(
                "the request body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))),
        }
    }

    /// A body holding `fields` (tests, internal calls).
    pub fn from_value(value: Value) -> Self {
        match value {
            Value::Object(fields) => Body { fields },
            _ => Body::default(),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).filter(|v| !v.is_null())
    }

    /// True if the field is present and not `null`.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// An optional string (`null` counts as absent), at most `max` characters.
    pub fn opt_str(&self, name: &str, max: usize) -> Result<Option<String>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.chars().count() > max => Err(OpError::invalid(format!(
                "field `{name}` is longer than {max} characters"
            ))),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(OpError::invalid(format!("field `{name}` must be a string"))),
        }
    }

    /// A required, non-empty string of at most `max` characters.
    pub fn str(&self, name: &str, max: usize) -> Result<String, OpError> {
        match self.opt_str(name, max)? {
            None => Err(OpError::invalid(format!("missing field `{name}`"))),
            Some(s) if s.is_empty() => Err(OpError::invalid(format!(
                "field `{name}` must not be empty"
            ))),
            Some(s) => Ok(s),
        }
    }

    /// An optional integer.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| OpError::invalid(format!("field `{name}` must be an integer"))),
        }
    }

    /// A required positive integer (row ids).
    pub fn id(&self, name: &str) -> Result<i64, OpError> {
        match self.opt_id(name)? {
            Some(id) => Ok(id),
            None => Err(OpError::invalid(format!("missing field `{name}`"))),
        }
    }

    /// An optional positive integer (row ids).
    pub fn opt_id(&self, name: &str) -> Result<Option<i64>, OpError> {
        match self.opt_int(name)? {
            Some(id) if id <= 0 => Err(OpError::invalid(format!(
                "field `{name}` must be a positive integer"
            ))),
            other => Ok(other),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(OpError::invalid(format!(
                "field `{name}` must be a boolean"
            ))),
        }
    }

    /// A required array of strings.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, OpError> {
        self.opt_strings(name)?
            .ok_or_else(|| OpError::invalid(format!("missing field `{name}`")))
    }

    /// An optional array of strings.
    pub fn opt_strings(&self, name: &str) -> Result<Option<Vec<String>>, OpError> {
        let wrong = || OpError::invalid(format!("field `{name}` must be an array of strings"));
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong()),
        }
    }

    /// An optional time: an RFC 3339 string or Unix seconds. Returns Unix milliseconds.
    pub fn opt_time(&self, name: &str) -> Result<Option<i64>, OpError> {
        let wrong = || {
            OpError::invalid(format!(
                "field `{name}` must be an RFC 3339 time or Unix seconds"
            ))
        };
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.timestamp_millis()))
                .map_err(|_| wrong()),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|secs| secs.is_finite() && secs.abs() < 1e11)
                .map(|secs| Some((secs * 1000.0).round() as i64))
                .ok_or_else(wrong),
            Some(_) => Err(wrong()),
        }
    }

    /// `offset` (default 0) and `limit` (default `default`, 1..=`max`).
    pub fn page(&self, default: i64, max: i64) -> Result<(i64, i64), OpError> {
        let offset = self.opt_int("offset")?.unwrap_or(0);
        if offset < 0 {
            return Err(OpError::invalid("field `offset` must not be negative"));
        }
        let limit = self.opt_int("limit")?.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            return Err(OpError::invalid(format!(
                "field `limit` must be between 1 and {max}"
            )));
        }
        Ok((offset, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_complaint_names_the_field_and_never_the_value() {
        let body = Body::from_value(json!({"a": 1, "s": "secret-value", "n": null, "l": [1]}));
        let e = body.str("a", 10).unwrap_err();
        assert!(
            e.message.contains("`a`") && e.message.contains("string"),
            "{e}"
        );
        let e = body.str("missing", 10).unwrap_err();
        assert!(e.message.contains("missing field `missing`"), "{e}");
        let e = body.str("s", 3).unwrap_err();
        assert!(!e.message.contains("secret-value"), "{e}");
        assert_eq!(body.opt_str("n", 10).unwrap(), None);
        assert!(body.opt_int("s").unwrap_err().message.contains("`s`"));
        assert!(body.strings("l").unwrap_err().message.contains("`l`"));
        assert!(body.opt_bool("a").is_err());
        assert!(body.id("a").is_ok());
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(Body::parse(None).is_ok());
        assert!(Body::parse(Some(b"  ")).is_ok());
        assert!(Body::parse(Some(b"[1]")).is_err());
        assert!(Body::parse(Some(b"{nope")).is_err());
        assert!(Body::parse(Some(&[0xff, 0xfe])).is_err());
    }
}
