//! `plant bus pub` and `plant bus sub`: publishing to and listening on the broker's pub/sub buses.
//!
//! Bus endpoints come from `mmi.broker`, which lists every bus with the frontend publishers connect
//! to and the backend subscribers connect to; a wildcard bind such as `tcp://*:13000` is reached at
//! the host of `--endpoint`. `--frontend` / `--backend` skip the broker and name the socket directly.
//!
//! `pub` sends `[topic, payload]`: the payload argument is parsed as JSON and sent as MessagePack
//! (maps with field names, DESIGN.md §4), or sent byte for byte with `--raw`. `sub` prints one JSON
//! line per message, `{"topic","encoding","payload"}`, whatever `--output` says (a stream of JSON
//! lines is what both people and scripts can read). PUB/SUB drops what nobody has subscribed to
//! yet, so a new subscriber misses messages published before its subscription reached the
//! publisher (docs/buses.md, "slow joiners").

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::{Args, Subcommand};
use plantd_worker_sdk::bus::{
    connectable_endpoint, BusError, BusMessage, PayloadEncoding, Publisher, Subscriber,
    DEFAULT_HIGH_WATER_MARK,
};
use plantd_worker_sdk::protocol::bus::{encode_msgpack, parse_payload};
use serde_json::{json, Value};

use crate::context::{format_duration, parse_duration, Access, Context};
use crate::error::CliError;
use crate::output::{self, OutputFormat};

/// How often `pub` checks whether its connection to the frontend is up.
const CONNECT_POLL: Duration = Duration::from_millis(5);
/// Time the bus frontend gets, once connected, to hand a new publisher its subscriptions. A PUB
/// socket drops every message no subscription matches, and libzmq offers no event for "the
/// subscriptions have arrived": the frontend sends them right after the handshake, so this is
/// generous, not exact.
const SUBSCRIPTION_SETTLE: Duration = Duration::from_millis(100);
/// Time the message gets to leave the process after `send`: libzmq writes it from its I/O thread,
/// and the SDK's shared ZeroMQ context is never terminated (which is what would wait for it).
const SEND_LINGER: Duration = Duration::from_millis(100);

/// `plant bus` subcommands.
#[derive(Subcommand, Debug)]
pub enum BusCommand {
    /// Publish one message on a bus.
    Pub(PubArgs),
    /// Print a bus's messages as JSON lines until Ctrl-C, --count or --for.
    Sub(SubArgs),
}

/// Arguments of `plant bus pub`.
#[derive(Args, Debug)]
pub struct PubArgs {
    /// Bus name, as `plant broker` lists it (state, event, metric).
    pub bus: String,
    /// Topic: a dotted name subscribers match by prefix (org.plantd.event.door).
    pub topic: String,
    /// Payload: JSON, sent as MessagePack; with --raw, the text as given.
    #[arg(allow_hyphen_values = true)]
    pub payload: String,
    /// Send the payload's bytes as given instead of JSON encoded as MessagePack.
    #[arg(long)]
    pub raw: bool,
    /// Frontend endpoint to publish to, instead of asking the broker (mmi.broker).
    #[arg(long, value_name = "ENDPOINT")]
    pub frontend: Option<String>,
}

/// Arguments of `plant bus sub`.
#[derive(Args, Debug)]
pub struct SubArgs {
    /// Bus name, as `plant broker` lists it (state, event, metric).
    pub bus: String,
    /// Topic prefixes to receive; none means every message.
    pub prefixes: Vec<String>,
    /// Exit after this many messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Exit after this long (500ms, 10s, 2m); with --count, fail if fewer messages came.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print every payload as {"base64": ...} without trying to decode it.
    #[arg(long)]
    pub raw: bool,
    /// Backend endpoint to subscribe to, instead of asking the broker (mmi.broker).
    #[arg(long, value_name = "ENDPOINT")]
    pub backend: Option<String>,
}

/// Runs `plant bus ...`.
pub fn run(ctx: &Context, command: BusCommand) -> Result<(), CliError> {
    match command {
        BusCommand::Pub(args) => publish(ctx, args),
        BusCommand::Sub(args) => subscribe(ctx, args),
    }
}

/// Which side of a bus a command connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Where publishers connect (XSUB).
    Frontend,
    /// Where subscribers connect (XPUB).
    Backend,
}

impl Side {
    fn flag(self) -> &'static str {
        match self {
            Side::Frontend => "--frontend",
            Side::Backend => "--backend",
        }
    }
}

/// The endpoint to connect to for `side` of bus `name`: `explicit` if given, else what
/// `mmi.broker` says, made connectable from here.
fn bus_endpoint(
    ctx: &Context,
    name: &str,
    side: Side,
    explicit: Option<String>,
) -> Result<String, CliError> {
    if let Some(endpoint) = explicit {
        return Ok(endpoint);
    }
    let client = ctx.client(Access::Read)?;
    let info = client
        .broker_info()
        .map_err(|e| ctx.request_error(&client, "mmi.broker", e))?;
    if info.buses.is_empty() {
        let turned_off = info.extra.get("buses_enabled") == Some(&Value::Bool(false));
        return Err(CliError::Input(format!(
            "the broker at {} hosts no buses{}; give {} to use a bus elsewhere",
            ctx.endpoint,
            if turned_off {
                " (they are turned off in its configuration)"
            } else {
                ""
            },
            side.flag()
        )));
    }
    let Some(bus) = info.buses.iter().find(|b| b.name == name) else {
        let known: Vec<&str> = info.buses.iter().map(|b| b.name.as_str()).collect();
        return Err(CliError::Input(format!(
            "the broker at {} has no bus {name:?}; its buses are: {}",
            ctx.endpoint,
            known.join(", ")
        )));
    };
    let bound = match side {
        Side::Frontend => &bus.frontend,
        Side::Backend => &bus.backend,
    };
    Ok(connectable_endpoint(bound, &ctx.endpoint))
}

fn bus_error(bus: &str, error: BusError) -> CliError {
    CliError::Input(format!("bus {bus}: {error}"))
}

/// The payload frame `pub` sends: the JSON argument as MessagePack, or its bytes with `--raw`.
pub fn encode_payload(payload: &str, raw: bool) -> Result<Vec<u8>, CliError> {
    if raw {
        return Ok(payload.as_bytes().to_vec());
    }
    let value: Value = serde_json::from_str(payload).map_err(|e| {
        CliError::Input(format!(
            "payload is not valid JSON ({e}); use --raw to send the text as given"
        ))
    })?;
    encode_msgpack(&value).map_err(|e| CliError::Input(format!("cannot encode payload: {e}")))
}

/// `plant bus pub`: connects, waits until the frontend is reachable and has had time to send its
/// subscriptions, publishes one message and gives it time to leave.
fn publish(ctx: &Context, args: PubArgs) -> Result<(), CliError> {
    if args.topic.is_empty() {
        return Err(CliError::Input(
            "the topic must not be empty (topics are dotted names such as org.plantd.event.door)"
                .into(),
        ));
    }
    // Bad input fails before any network traffic.
    let payload = encode_payload(&args.payload, args.raw)?;
    let endpoint = bus_endpoint(ctx, &args.bus, Side::Frontend, args.frontend)?;
    let curve = ctx.curve()?;
    let (publisher, mut monitor) =
        Publisher::connect_with(&endpoint, DEFAULT_HIGH_WATER_MARK, curve.as_ref())
            .map_err(|e| bus_error(&args.bus, e))?;
    // PUB drops whatever is sent before a connection exists, so wait for one.
    // An absurd --timeout (beyond what Instant can add) means "wait forever", never a panic.
    let deadline = Instant::now().checked_add(ctx.timeout);
    while !monitor.is_connected() {
        if let Some(failure) = monitor.handshake_failure() {
            return Err(CliError::Input(format!(
                "bus {}: authentication failed at {endpoint}: {failure}",
                args.bus
            )));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(CliError::Input(format!(
                "cannot reach bus {} at {endpoint}: no connection within {}",
                args.bus,
                format_duration(ctx.timeout)
            )));
        }
        std::thread::sleep(CONNECT_POLL);
    }
    std::thread::sleep(SUBSCRIPTION_SETTLE);
    publisher
        .publish(&args.topic, &payload)
        .map_err(|e| bus_error(&args.bus, e))?;
    std::thread::sleep(SEND_LINGER);
    drop(publisher);
    match ctx.output {
        OutputFormat::Json => output::print_json(&json!({
            "bus": args.bus,
            "endpoint": endpoint,
            "topic": args.topic,
            "bytes": payload.len(),
            "encoding": if args.raw { "raw" } else { "msgpack" },
        })),
        OutputFormat::Text => output::print_line(&format!(
            "published {} bytes on bus {} ({endpoint}), topic {}",
            payload.len(),
            args.bus,
            args.topic
        )),
    }
}

/// One payload frame as (encoding, JSON value): MessagePack and JSON decoded, other UTF-8 as a
/// string, anything else (or everything, with `raw`) as `{"base64": ...}`.
fn frame_json(frame: &[u8], raw: bool) -> (&'static str, Value) {
    if !raw {
        match parse_payload(frame) {
            Some((PayloadEncoding::Msgpack, value)) => return ("msgpack", value),
            Some((PayloadEncoding::Json, value)) => return ("json", value),
            None => {}
        }
        if let Ok(text) = std::str::from_utf8(frame) {
            return ("text", Value::String(text.to_owned()));
        }
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(frame);
    ("base64", json!({ "base64": encoded }))
}

/// The JSON line `sub` prints for one message: `{"topic","encoding","payload"}`. A topic-only
/// message has encoding `none` and payload `null`; several payload frames have encoding
/// `multipart` and a payload array of `{"encoding","value"}`.
pub fn message_json(message: &BusMessage, raw: bool) -> Value {
    let (encoding, payload) = match message.payload.as_slice() {
        [] => ("none", Value::Null),
        [frame] => frame_json(frame, raw),
        frames => (
            "multipart",
            frames
                .iter()
                .map(|frame| {
                    let (encoding, value) = frame_json(frame, raw);
                    json!({"encoding": encoding, "value": value})
                })
                .collect(),
        ),
    };
    json!({"topic": message.topic, "encoding": encoding, "payload": payload})
}

/// `plant bus sub`: prints messages until Ctrl-C, `--count` messages, or `--for` has passed.
fn subscribe(ctx: &Context, args: SubArgs) -> Result<(), CliError> {
    let endpoint = bus_endpoint(ctx, &args.bus, Side::Backend, args.backend.clone())?;
    let curve = ctx.curve()?;
    let (subscriber, _monitor) =
        Subscriber::connect_with(&endpoint, DEFAULT_HIGH_WATER_MARK, curve.as_ref())
            .map_err(|e| bus_error(&args.bus, e))?;
    let prefixes = if args.prefixes.is_empty() {
        vec![String::new()]
    } else {
        args.prefixes.clone()
    };
    for prefix in &prefixes {
        subscriber
            .subscribe(prefix)
            .map_err(|e| bus_error(&args.bus, e))?;
    }
    let shown: Vec<String> = prefixes.iter().map(|p| format!("{p:?}")).collect();
    eprintln!(
        "listening on bus {} at {endpoint} for topics starting with {}",
        args.bus,
        shown.join(", ")
    );

    let deadline = args.duration.and_then(|d| Instant::now().checked_add(d));
    let mut received = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        if args.count.is_some_and(|n| received >= n) {
            break;
        }
        let message = match deadline {
            None => Some(subscriber.recv()),
            Some(deadline) => subscriber
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .transpose(),
        };
        let Some(message) = message else { break };
        let message = message.map_err(|e| bus_error(&args.bus, e))?;
        received += 1;
        match writeln!(out, "{}", message_json(&message, args.raw)).and_then(|_| out.flush()) {
            Ok(()) => {}
            // The reader went away (`plant bus sub ... | head -1`): that is a normal end.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    match (args.count, args.duration) {
        (Some(count), Some(duration)) if received < count => Err(CliError::Input(format!(
            "received {received} of {count} messages on bus {} within {}",
            args.bus,
            format_duration(duration)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, frames: &[&[u8]]) -> BusMessage {
        BusMessage {
            topic: topic.into(),
            payload: frames.iter().map(|f| f.to_vec()).collect(),
        }
    }

    #[test]
    fn json_payloads_become_named_msgpack_maps_and_raw_is_verbatim() {
        let packed = encode_payload(r#"{"n":1,"s":"x"}"#, false).unwrap();
        assert_eq!(packed[0], 0x82, "a two-entry map");
        assert_eq!(
            parse_payload(&packed),
            Some((PayloadEncoding::Msgpack, json!({"n": 1, "s": "x"})))
        );
        assert_eq!(encode_payload("{nope", true).unwrap(), b"{nope");
        let error = encode_payload("{nope", false).unwrap_err().to_string();
        assert!(error.starts_with("payload is not valid JSON"), "{error}");
        assert!(error.contains("--raw"), "{error}");
        assert!(encode_payload("hello", false).is_err());
    }

    #[test]
    fn messages_print_decoded_as_json_lines() {
        let packed = encode_msgpack(&json!({"n": 1})).unwrap();
        assert_eq!(
            message_json(&message("t", &[&packed]), false),
            json!({"topic": "t", "encoding": "msgpack", "payload": {"n": 1}})
        );
        assert_eq!(
            message_json(&message("t", &[b"[1,2]"]), false),
            json!({"topic": "t", "encoding": "json", "payload": [1, 2]})
        );
        assert_eq!(
            message_json(&message("t", &[b"hello world"]), false),
            json!({"topic": "t", "encoding": "text", "payload": "hello world"})
        );
        assert_eq!(
            message_json(&message("t", &[&[0xc1, 0xff, 0x00]]), false),
            json!({"topic": "t", "encoding": "base64", "payload": {"base64": "wf8A"}})
        );
        assert_eq!(
            message_json(&message("t", &[b"[1]"]), true),
            json!({"topic": "t", "encoding": "base64", "payload": {"base64": "WzFd"}})
        );
        assert_eq!(
            message_json(&message("t", &[]), false),
            json!({"topic": "t", "encoding": "none", "payload": null})
        );
        assert_eq!(
            message_json(&message("t", &[b"{}", &[0xc1]]), false),
            json!({"topic": "t", "encoding": "multipart", "payload": [
                {"encoding": "json", "value": {}},
                {"encoding": "base64", "value": {"base64": "wQ=="}},
            ]})
        );
    }
}
