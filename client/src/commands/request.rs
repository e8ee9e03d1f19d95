//! `plant request <service> <frame>...`: send any request to any service and print the reply.
//!
//! Frames are given as text; with `--json` each must be valid JSON (sent as typed); `--file PATH`
//! appends a frame read from a file, byte for byte (repeatable). `--stream` prints PARTIAL replies
//! as they arrive (in JSON, one compact array per reply per line).

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
    /// Require every text frame to be valid JSON.
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
    let body = body(&args)?;
    let client = ctx.client(Access::Write)?;
    let service = args.service.as_str();
    if !args.stream {
        let reply = client
            .request(service, body)
            .map_err(|e| ctx.request_error(&client, service, e))?;
        return output::print_frames(ctx.output, &reply);
    }
    let replies = client
        .request_stream(service, body)
        .map_err(|e| ctx.request_error(&client, service, e))?;
    for reply in replies {
        let (Reply::Partial(frames) | Reply::Final(frames)) =
            reply.map_err(|e| ctx.request_error(&client, service, e))?;
        match ctx.output {
            OutputFormat::Text => output::print_frames(OutputFormat::Text, &frames)?,
            OutputFormat::Json => {
                let line = Value::Array(frames.iter().map(|f| output::frame_json(f)).collect());
                output::print_line(&line.to_string())?;
            }
        }
    }
    Ok(())
}

/// The request body: text frames (validated as JSON with `--json`), then file frames.
fn body(args: &RequestArgs) -> Result<Vec<Vec<u8>>, CliError> {
    let mut body = Vec::with_capacity(args.frames.len() + args.files.len());
    for (index, frame) in args.frames.iter().enumerate() {
        if args.json {
            serde_json::from_str::<Value>(frame).map_err(|e| {
                CliError::Input(format!("frame {} is not valid JSON: {e}", index + 1))
            })?;
        }
        body.push(frame.clone().into_bytes());
    }
    for path in &args.files {
        let frame = std::fs::read(path)
            .map_err(|e| CliError::Input(format!("cannot read {}: {e}", path.display())))?;
        body.push(frame);
    }
    Ok(body)
}
