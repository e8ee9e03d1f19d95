//! Printing results on stdout, as text for people or JSON for scripts (`--output`).
//!
//! Frames are shown as they are when they are UTF-8. In JSON, a frame holding a JSON object or
//! array is embedded as that value (plantd replies are one JSON frame), other UTF-8 frames are
//! strings, and binary frames are `{"base64": "..."}`; in text, binary frames print as
//! `base64:<...>`.

use std::io::Write;

use base64::Engine;
use clap::ValueEnum;
use serde_json::{json, Value};

use crate::error::CliError;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON, for scripts.
    Json,
}

/// A frame as a JSON value (see the module docs).
pub fn frame_json(frame: &[u8]) -> Value {
    match std::str::from_utf8(frame) {
        Ok(text) => match serde_json::from_str::<Value>(text) {
            Ok(value @ (Value::Object(_) | Value::Array(_))) => value,
            _ => Value::String(text.to_owned()),
        },
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(frame) }),
    }
}

/// A frame as one line of text (see the module docs).
pub fn frame_text(frame: &[u8]) -> String {
    match std::str::from_utf8(frame) {
        Ok(text) => text.to_owned(),
        Err(_) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(frame)
        ),
    }
}

/// Prints frames: one per line as text, or a JSON array.
pub fn print_frames(format: OutputFormat, frames: &[Vec<u8>]) -> Result<(), CliError> {
    match format {
        OutputFormat::Text => {
            let mut out = std::io::stdout().lock();
            for frame in frames {
                writeln!(out, "{}", frame_text(frame))?;
            }
            Ok(())
        }
        OutputFormat::Json => print_json(&Value::Array(
            frames.iter().map(|f| frame_json(f)).collect(),
        )),
    }
}

/// Prints a JSON value, pretty.
pub fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Input(format!("cannot render JSON: {e}")))?;
    print_line(&text)
}

/// Prints one line of text.
pub fn print_line(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

/// Prints rows under a header, columns padded to line up.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_render_as_json_values_strings_or_base64() {
        assert_eq!(frame_json(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(frame_json(b"[1,2]"), json!([1, 2]));
        assert_eq!(frame_json(b"123"), json!("123"));
        assert_eq!(frame_json(b"hello"), json!("hello"));
        assert_eq!(frame_json(b"\xff\x00"), json!({"base64": "/wA="}));
        assert_eq!(frame_text(b"hi"), "hi");
        assert_eq!(frame_text(b"\xff\x00"), "base64:/wA=");
    }
}
