//! `plant request <service> <frame>...`: send any request to any service and print the reply.
//!
//! Frames are given as text. With `--json` each is a JSON value instead: a JSON string is sent as
//! its text (`'"state-get"'` sends `state-get`), anything else as its compact JSON text
//! (`'{"key": "k"}'` sends `{"key":"k"}`), so a request is written the way its JSON reads.
//! `--file PATH` appends a frame read from a file, byte for byte (repeatable). `--stream` prints
//! PARTIAL replies as they arrive (in JSON, one compact array per reply per line).
//!
//! The reply is printed whatever it says; a `{"success": false, ...}` reply (or, with `--stream`,
//! such a FINAL) then fails the command with its code and message, like a broker error reply.

use std::path::PathBuf;

use clap::Args;
use plantd_worker_sdk::client::Reply;
use serde_json::Value;

use crate::context::{Access, Context};
use crate::error::CliError;
use crate::output::{self, OutputFormat};

/// Arguments of `plant request`.
#[derive(Args, Debug)]
pub struct RequestArgs {
    /// Service name, e.g. org.plantd.State.
    pub service: String,
    /// Body frames, as text (e.g. `state-get '{"key":"k"}'`).
    pub frames: Vec<String>,
    /// Read every text frame as a JSON value: a string is sent as its text, anything else as
    /// compact JSON (`--json '"state-get"' '{"service": "demo", "key": "k"}'`).
    #[arg(long)]
    pub json: bool,
    /// Append a frame read from this file (repeatable; after the text frames).
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Print PARTIAL replies as they arrive, then the FINAL.
    #[arg(long)]
    pub stream: bool,
}

/// Runs `plant request`.
pub fn run(ctx: &Context, args: RequestArgs) -> Result<(), CliError> {
    let mut body = body(&args)?;
    if crate::session::checks_tokens(&args.service) {
        crate::session::attach_to_frames(ctx, &mut body)?;
    }
    let client = ctx.client(Access::Write)?;
    let service = args.service.as_str();
    if !args.stream {
        let reply = client
            .request(service, body)
            .map_err(|e| ctx.request_error(&client, service, e))?;
        output::print_frames(ctx.output, &reply)?;
        return refused(&reply);
    }
    let replies = client
        .request_stream(service, body)
        .map_err(|e| ctx.request_error(&client, service, e))?;
    for reply in replies {
        let reply = reply.map_err(|e| ctx.request_error(&client, service, e))?;
        let (Reply::Partial(frames) | Reply::Final(frames)) = &reply;
        match ctx.output {
            OutputFormat::Text => output::print_frames(OutputFormat::Text, frames)?,
            OutputFormat::Json => {
                let line = Value::Array(frames.iter().map(|f| output::frame_json(f)).collect());
                output::print_line(&line.to_string())?;
            }
        }
        if let Reply::Final(frames) = &reply {
            return refused(frames);
        }
    }
    Ok(())
}

/// Fails with the service's error when `reply` is a `success: false` envelope.
fn refused(reply: &[Vec<u8>]) -> Result<(), CliError> {
    super::reply::refusal(reply).map_or(Ok(()), Err)
}

/// The request body: text frames (validated as JSON with `--json`), then file frames.
fn body(args: &RequestArgs) -> Result<Vec<Vec<u8>>, CliError> {
    let mut body = Vec::with_capacity(args.frames.len() + args.files.len());
    for (index, frame) in args.frames.iter().enumerate() {
        if !args.json {
            body.push(frame.clone().into_bytes());
            continue;
        }
        let value = serde_json::from_str::<Value>(frame)
            .map_err(|e| CliError::Input(format!("frame {} is not valid JSON: {e}", index + 1)))?;
        body.push(json_frame(value, frame));
    }
    for path in &args.files {
        let frame = std::fs::read(path)
            .map_err(|e| CliError::Input(format!("cannot read {}: {e}", path.display())))?;
        body.push(frame);
    }
    Ok(body)
}

/// The frame a `--json` value is sent as: a string's text, anything else its JSON `text` without
/// the whitespace between tokens (keys stay in the order they were written).
fn json_frame(value: Value, text: &str) -> Vec<u8> {
    match value {
        Value::String(string) => string.into_bytes(),
        _ => compact(text).into_bytes(),
    }
}

/// Valid JSON `text` without whitespace outside its strings.
fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            // Inside a string every character stays; only an unescaped quote ends it.
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == '"' {
            in_string = true;
        } else if c.is_whitespace() {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_sent_as_their_text_and_the_rest_compact() {
        let frame = |text: &str| json_frame(serde_json::from_str(text).unwrap(), text);
        assert_eq!(frame(r#""state-get""#), b"state-get");
        assert_eq!(
            frame(r#"{ "service": "demo", "key": "k" }"#),
            br#"{"service":"demo","key":"k"}"#
        );
        assert_eq!(frame("[1, 2]"), b"[1,2]");
        assert_eq!(frame("5"), b"5");
        assert_eq!(frame("null"), b"null");
        assert_eq!(frame(r#""""#), b"");
        assert_eq!(
            frame(r#"{ "z": "a \" b", "a": [ 1 , "\\" ] }"#),
            br#"{"z":"a \" b","a":[1,"\\"]}"#
        );
    }
}
