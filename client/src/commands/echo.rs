//! `plant echo <message>`: a round trip through the echo module (`org.plantd.module.Echo`).
//!
//! Sends the Go CLI's shape, `["echo", {"service":"org.plantd.Client","message":<message>}]`, and
//! prints the echoed message (text) or the echoed JSON payload (`--output json`).

use clap::Args;
use serde_json::{json, Value};

use crate::context::{Access, Context};
use crate::error::CliError;
use crate::output::{self, OutputFormat};

/// The echo module's service name.
pub const ECHO_SERVICE: &str = "org.plantd.module.Echo";

/// Arguments of `plant echo`.
#[derive(Args, Debug)]
pub struct EchoArgs {
    /// The message to send and get back.
    pub message: String,
}

/// Runs `plant echo`.
pub fn run(ctx: &Context, args: EchoArgs) -> Result<(), CliError> {
    let client = ctx.client(Access::Read)?;
    let payload = json!({ "service": "org.plantd.Client", "message": args.message });
    let request = vec![b"echo".to_vec(), payload.to_string().into_bytes()];
    let reply = client
        .request(ECHO_SERVICE, request)
        .map_err(|e| ctx.request_error(&client, ECHO_SERVICE, e))?;
    let echoed: Option<Value> = reply
        .get(1)
        .and_then(|frame| serde_json::from_slice(frame).ok());
    match (ctx.output, echoed) {
        (OutputFormat::Json, Some(value)) => output::print_json(&value),
        (OutputFormat::Text, Some(Value::Object(map))) if map.contains_key("message") => {
            match &map["message"] {
                Value::String(message) => output::print_line(message),
                other => output::print_line(&other.to_string()),
            }
        }
        // Not the shape we sent: show whatever came back.
        _ => output::print_frames(ctx.output, &reply),
    }
}
