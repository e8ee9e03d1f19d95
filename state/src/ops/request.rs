//! Parsing of request bodies: one JSON object whose fields are read lazily and checked one by one,
//! so every complaint names the field at fault.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::codes::{ErrorCode, OpError};

/// Size limits on names and values, enforced before anything touches the database.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Longest scope name, in bytes (`INVALID_REQUEST` beyond).
    pub max_scope_bytes: usize,
    /// Longest key, in bytes (`INVALID_REQUEST` beyond).
    pub max_key_bytes: usize,
    /// Largest value as JSON text, in bytes (`VALUE_TOO_LARGE` beyond).
    pub max_value_bytes: usize,
    /// Most keys in one `state-get-many` or `state-set-many` (`INVALID_REQUEST` beyond).
    pub max_batch_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_scope_bytes: 255,
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            max_batch_entries: 1000,
        }
    }
}

/// A request body: the top-level fields of a JSON object, each still as raw JSON.
pub struct Body<'a> {
    fields: BTreeMap<String, &'a RawValue>,
}

impl<'a> Body<'a> {
    /// Parses the body frame. A missing, empty or blank body is an empty object.
    pub fn parse(frame: Option<&'a [u8]>) -> Result<Self, OpError> {
        let text = match frame {
            None => "",
            Some(bytes) => std::str::from_utf8(bytes)
                .map_err(|_| OpError::invalid("the request body is not UTF-8"))?,
        };
        if text.trim().is_empty() {
            return Ok(Body {
                fields: BTreeMap::new(),
            });
        }
        let fields = serde_json::from_str(text).map_err(|e| {
            if serde_json::from_str::<&RawValue>(text).is_ok() {
                OpError::invalid("the request body must be a JSON object")
            } else {
                OpError::invalid(format!("the request body is not valid JSON: {e}"))
            }
        })?;
        Ok(Body { fields })
    }

    fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.fields.get(name).copied()
    }

    /// A field that must be present; any JSON value, `null` included.
    pub fn required_value(&self, name: &str) -> Result<&'a RawValue, OpError> {
        self.raw(name)
            .ok_or_else(|| OpError::invalid(format!("missing field `{name}`")))
    }

    /// An optional string field (`null` counts as absent).
    pub fn optional_str(&self, name: &str) -> Result<Option<String>, OpError> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|_| OpError::invalid(format!("field `{name}` must be a string"))),
        }
    }

    /// A non-empty string field of at most `max_bytes` bytes.
    pub fn required_str(&self, name: &str, max_bytes: usize) -> Result<String, OpError> {
        let value = self
            .optional_str(name)?
            .ok_or_else(|| OpError::invalid(format!("missing field `{name}`")))?;
        check_name(name, &value, max_bytes)?;
        Ok(value)
    }

    /// A non-empty array of non-empty strings, each at most `max_bytes`, at most `max_len` long.
    pub fn string_list(
        &self,
        name: &str,
        max_bytes: usize,
        max_len: usize,
    ) -> Result<Vec<String>, OpError> {
        let raw = self.required_value(name)?;
        let items: Vec<String> = serde_json::from_str(raw.get())
            .map_err(|_| OpError::invalid(format!("field `{name}` must be an array of strings")))?;
        check_count(name, items.len(), max_len)?;
        for item in &items {
            check_name(name, item, max_bytes)?;
        }
        Ok(items)
    }

    /// A non-empty object of at most `max_len` members: `(member name, raw value)` pairs.
    pub fn object(
        &self,
        name: &str,
        max_len: usize,
    ) -> Result<Vec<(String, &'a RawValue)>, OpError> {
        let raw = self.required_value(name)?;
        if !raw.get().starts_with('{') {
            return Err(OpError::invalid(format!(
                "field `{name}` must be a JSON object"
            )));
        }
        let members: BTreeMap<String, &'a RawValue> = serde_json::from_str(raw.get())
            .map_err(|_| OpError::invalid(format!("field `{name}` must be a JSON object")))?;
        check_count(name, members.len(), max_len)?;
        Ok(members.into_iter().collect())
    }
}

fn check_count(name: &str, len: usize, max_len: usize) -> Result<(), OpError> {
    if len == 0 {
        return Err(OpError::invalid(format!(
            "field `{name}` must not be empty"
        )));
    }
    if len > max_len {
        return Err(OpError::invalid(format!(
            "field `{name}` has {len} entries; the limit is {max_len}"
        )));
    }
    Ok(())
}

/// Checks a scope name or key: non-empty and within `max_bytes`.
pub fn check_name(field: &str, value: &str, max_bytes: usize) -> Result<(), OpError> {
    if value.is_empty() {
        return Err(OpError::invalid(format!(
            "field `{field}` must not be empty"
        )));
    }
    if value.len() > max_bytes {
        return Err(OpError::invalid(format!(
            "field `{field}` is {} bytes long; the limit is {max_bytes}",
            value.len()
        )));
    }
    Ok(())
}

/// Checks a value's size.
pub fn check_value(key: &str, value: &RawValue, max_bytes: usize) -> Result<(), OpError> {
    let len = value.get().len();
    if len > max_bytes {
        return Err(OpError::new(
            ErrorCode::ValueTooLarge,
            format!("the value of `{key}` is {len} bytes; the limit is {max_bytes}"),
        ));
    }
    Ok(())
}
