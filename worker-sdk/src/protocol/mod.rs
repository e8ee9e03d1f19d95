//! The wire format: the only place in plantd that builds or parses MDP frames.
//!
//! The broker speaks three dialects on one ROUTER socket (see `docs/protocol.md`):
//!
//! | dialect | client header | worker header | commands | leading empty frame |
//! |---|---|---|---|---|
//! | [`Dialect::V02`] (18/MDP, native) | `MDPC02` | `MDPW02` | one byte | never |
//! | [`Dialect::V01`] (7/MDP) | `MDPC01` | `MDPW01` | one byte (workers only) | always |
//! | [`Dialect::Go`] (the Go plantd system) | `MDPC02` | `MDPW02` | ASCII words | on messages *to* the broker |
//!
//! [`decode`] turns the frames a peer received into a typed [`Message`] and never panics: every
//! malformed shape is a [`ProtocolError`]. [`encode`] does the reverse, appending to a caller-owned
//! buffer so the broker can prepend a routing id and reuse the allocation. Frames are
//! [`zmq::Message`]s so bodies are moved between sockets without copying.
//!
//! Broker error replies (`["plantd.error", code, message]` bodies) live in [`error_reply`].

pub mod bus;
pub mod credit;
pub mod error_reply;
pub mod tag;

pub use error_reply::{ErrorCode, ErrorReply};

use thiserror::Error;

/// One frame of a multipart message.
pub type Frame = zmq::Message;

/// MDP/0.1 client header.
pub const MDPC01: &[u8] = b"MDPC01";
/// MDP/0.1 worker header.
pub const MDPW01: &[u8] = b"MDPW01";
/// MDP/0.2 client header (shared by 18/MDP and the Go dialect).
pub const MDPC02: &[u8] = b"MDPC02";
/// MDP/0.2 worker header (shared by 18/MDP and the Go dialect).
pub const MDPW02: &[u8] = b"MDPW02";

/// Which variant of the Majordomo Protocol a peer speaks.
///
/// In configs and on the command line it is the `protocol` setting: `"0.2"` (the default),
/// `"0.1"` or `"go"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// 7/MDP (MDP/0.1): zguide peers. No PARTIAL; the worker's REPLY is a FINAL.
    V01,
    /// 18/MDP (MDP/0.2): plantd's native dialect.
    #[default]
    V02,
    /// The Go plantd system's "MDP v0.2": ASCII command words, a leading empty frame on messages to
    /// the broker, and no delimiter between client address and body in worker replies.
    Go,
}

impl Dialect {
    /// Short human name (`"0.1"`, `"0.2"`, `"go"`), as used in config and CLI flags.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::V01 => "0.1",
            Dialect::V02 => "0.2",
            Dialect::Go => "go",
        }
    }
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "0.1" | "v0.1" | "mdp/0.1" | "MDP/0.1" => Ok(Dialect::V01),
            "0.2" | "v0.2" | "mdp/0.2" | "MDP/0.2" => Ok(Dialect::V02),
            "go" | "Go" => Ok(Dialect::Go),
            other => Err(format!(
                "unknown protocol {other:?} (expected 0.1, 0.2 or go)"
            )),
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Serialised as its [`name`](Dialect::name), so configs read `protocol: "0.1"`.
impl serde::Serialize for Dialect {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// Accepts every spelling [`FromStr`](std::str::FromStr) does, and the numbers `0.1` and `0.2`:
/// an unquoted `protocol: 0.1` in YAML, or `PLANTD_<SERVICE>_PROTOCOL=0.1`, arrives as a float.
impl<'de> serde::Deserialize<'de> for Dialect {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dialect;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an MDP protocol: \"0.1\", \"0.2\" or \"go\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dialect, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dialect, E> {
                // `0.1_f64` displays as "0.1": the shortest text that reads back as the same float.
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Which way a message travels. Needed because 7/MDP client messages carry no command: the same
/// frames are a REQUEST going to the broker and a reply coming from it, and because the Go dialect
/// puts an empty frame only on messages going to the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From a client or worker to the broker.
    ToBroker,
    /// From the broker to a client or worker.
    FromBroker,
}

/// The client sub-protocol (MDP/Client).
#[derive(Debug)]
pub enum ClientCommand {
    /// Client → broker: a request for `service`.
    Request { service: Frame, body: Vec<Frame> },
    /// Broker → client: an intermediate reply (18/MDP and Go only).
    Partial { service: Frame, body: Vec<Frame> },
    /// Broker → client: the last reply.
    Final { service: Frame, body: Vec<Frame> },
}

/// The worker sub-protocol (MDP/Worker).
#[derive(Debug)]
pub enum WorkerCommand {
    /// Worker → broker: register for `service`, holding up to `credit` requests at once (1 is plain
    /// MDP; more is plantd's [credit extension](credit)).
    Ready { service: Frame, credit: u32 },
    /// Broker → worker: a request from `client`.
    Request { client: Frame, body: Vec<Frame> },
    /// Worker → broker: an intermediate reply to `client` (18/MDP and Go only).
    Partial { client: Frame, body: Vec<Frame> },
    /// Worker → broker: the last reply to `client` (7/MDP calls it REPLY).
    Final { client: Frame, body: Vec<Frame> },
    /// Either way: I am alive.
    Heartbeat,
    /// Either way: this session is over.
    Disconnect,
}

/// A decoded MDP message of either sub-protocol.
#[derive(Debug)]
pub enum Message {
    /// MDP/Client.
    Client(ClientCommand),
    /// MDP/Worker.
    Worker(WorkerCommand),
}

/// Every way a multipart message can fail to be MDP. Decoding never panics.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not even a header.
    #[error("empty message")]
    Empty,
    /// The routing-id frame a ROUTER prepends is missing.
    #[error("missing routing id")]
    MissingRoutingId,
    /// Frame is not one of the four MDP headers.
    #[error("unknown protocol header")]
    UnknownHeader,
    /// A command frame is required here but the message ended.
    #[error("missing command frame")]
    MissingCommand,
    /// The command frame is not a command of this dialect.
    #[error("unknown {0} command")]
    UnknownCommand(&'static str),
    /// The service-name frame is missing or empty.
    #[error("missing or empty service name")]
    MissingService,
    /// The client-address frame is missing or empty.
    #[error("missing or empty client address")]
    MissingClientAddress,
    /// The empty frame after the client address is missing or not empty.
    #[error("missing empty delimiter after client address")]
    MissingDelimiter,
    /// READY carried an extra frame that is not `credit=N` with N in 1..=[`credit::MAX_CREDIT`].
    #[error(
        "invalid READY credit frame (expected credit=N, 1 <= N <= {})",
        credit::MAX_CREDIT
    )]
    InvalidCredit,
    /// A fixed-size command carried extra frames.
    #[error("unexpected trailing frames after {0}")]
    TrailingFrames(&'static str),
    /// The command cannot be expressed in the dialect (for example PARTIAL in 7/MDP).
    #[error("{command} cannot be sent in MDP dialect {dialect}")]
    Unsupported {
        /// The command name.
        command: &'static str,
        /// The dialect name.
        dialect: &'static str,
    },
}

// Single-byte commands. 7/MDP and 18/MDP number the worker commands differently.
const C_REQUEST: u8 = 0x01;
const C_PARTIAL: u8 = 0x02;
const C_FINAL: u8 = 0x03;
const W_READY: u8 = 0x01;
const W_REQUEST: u8 = 0x02;
const W01_REPLY: u8 = 0x03;
const W01_HEARTBEAT: u8 = 0x04;
const W01_DISCONNECT: u8 = 0x05;
const W02_PARTIAL: u8 = 0x03;
const W02_FINAL: u8 = 0x04;
const W02_HEARTBEAT: u8 = 0x05;
const W02_DISCONNECT: u8 = 0x06;

/// Decodes a message as a DEALER peer (or the broker, after removing the routing id) received it.
///
/// A leading empty frame is accepted in every dialect, so REQ-socket peers work too. `frames` is
/// anything yielding the frames in order: a `Vec`, or a `drain` of a buffer that is reused.
pub fn decode(
    direction: Direction,
    frames: impl IntoIterator<Item = Frame>,
) -> Result<(Dialect, Message), ProtocolError> {
    let mut frames = frames.into_iter();
    // Each look into a frame is two calls into libzmq, so each frame is looked into once (the
    // broker decodes every message it receives).
    let first = frames.next().ok_or(ProtocolError::Empty)?;
    let second;
    let mut header: &[u8] = &first;
    if header.is_empty() {
        second = frames.next().ok_or(ProtocolError::Empty)?;
        header = &second;
    }
    match header {
        MDPC01 => {
            let service = service_frame(frames.next())?;
            let body = frames.collect();
            let cmd = match direction {
                Direction::ToBroker => ClientCommand::Request { service, body },
                Direction::FromBroker => ClientCommand::Final { service, body },
            };
            Ok((Dialect::V01, Message::Client(cmd)))
        }
        MDPW01 => {
            let cmd = frames.next().ok_or(ProtocolError::MissingCommand)?;
            let cmd = match single_byte(&cmd) {
                Some(W_READY) => ready(frames)?,
                Some(W_REQUEST) => addressed(frames, true, |client, body| {
                    WorkerCommand::Request { client, body }
                })?,
                Some(W01_REPLY) => addressed(frames, true, |client, body| WorkerCommand::Final {
                    client,
                    body,
                })?,
                Some(W01_HEARTBEAT) => bare(frames, WorkerCommand::Heartbeat, "HEARTBEAT")?,
                Some(W01_DISCONNECT) => bare(frames, WorkerCommand::Disconnect, "DISCONNECT")?,
                _ => return Err(ProtocolError::UnknownCommand("MDP/0.1 worker")),
            };
            Ok((Dialect::V01, Message::Worker(cmd)))
        }
        MDPC02 => {
            let cmd = frames.next().ok_or(ProtocolError::MissingCommand)?;
            let cmd: &[u8] = &cmd;
            let (dialect, kind) = match (single_byte(cmd), cmd) {
                (Some(C_REQUEST), _) => (Dialect::V02, C_REQUEST),
                (Some(C_PARTIAL), _) => (Dialect::V02, C_PARTIAL),
                (Some(C_FINAL), _) => (Dialect::V02, C_FINAL),
                (_, b"REQUEST") => (Dialect::Go, C_REQUEST),
                (_, b"PARTIAL") => (Dialect::Go, C_PARTIAL),
                (_, b"FINAL") => (Dialect::Go, C_FINAL),
                _ => return Err(ProtocolError::UnknownCommand("MDP/0.2 client")),
            };
            let service = service_frame(frames.next())?;
            let body = frames.collect();
            let cmd = match kind {
                C_REQUEST => ClientCommand::Request { service, body },
                C_PARTIAL => ClientCommand::Partial { service, body },
                _ => ClientCommand::Final { service, body },
            };
            Ok((dialect, Message::Client(cmd)))
        }
        MDPW02 => {
            let cmd = frames.next().ok_or(ProtocolError::MissingCommand)?;
            let cmd: &[u8] = &cmd;
            let (dialect, cmd) = match (single_byte(cmd), cmd) {
                (Some(W_READY), _) => (Dialect::V02, ready(frames)?),
                (Some(W_REQUEST), _) => (
                    Dialect::V02,
                    addressed(frames, true, |client, body| WorkerCommand::Request {
                        client,
                        body,
                    })?,
                ),
                (Some(W02_PARTIAL), _) => (
                    Dialect::V02,
                    addressed(frames, true, |client, body| WorkerCommand::Partial {
                        client,
                        body,
                    })?,
                ),
                (Some(W02_FINAL), _) => (
                    Dialect::V02,
                    addressed(frames, true, |client, body| WorkerCommand::Final {
                        client,
                        body,
                    })?,
                ),
                (Some(W02_HEARTBEAT), _) => (
                    Dialect::V02,
                    bare(frames, WorkerCommand::Heartbeat, "HEARTBEAT")?,
                ),
                (Some(W02_DISCONNECT), _) => (
                    Dialect::V02,
                    bare(frames, WorkerCommand::Disconnect, "DISCONNECT")?,
                ),
                (_, b"READY") => (Dialect::Go, ready(frames)?),
                // The Go broker puts a delimiter in REQUEST but Go workers omit it in replies.
                (_, b"REQUEST") => (
                    Dialect::Go,
                    addressed(frames, true, |client, body| WorkerCommand::Request {
                        client,
                        body,
                    })?,
                ),
                (_, b"PARTIAL") => (
                    Dialect::Go,
                    addressed(frames, false, |client, body| WorkerCommand::Partial {
                        client,
                        body,
                    })?,
                ),
                (_, b"FINAL") => (
                    Dialect::Go,
                    addressed(frames, false, |client, body| WorkerCommand::Final {
                        client,
                        body,
                    })?,
                ),
                (_, b"HEARTBEAT") => (
                    Dialect::Go,
                    bare(frames, WorkerCommand::Heartbeat, "HEARTBEAT")?,
                ),
                (_, b"DISCONNECT") => (
                    Dialect::Go,
                    bare(frames, WorkerCommand::Disconnect, "DISCONNECT")?,
                ),
                _ => return Err(ProtocolError::UnknownCommand("MDP/0.2 worker")),
            };
            Ok((dialect, Message::Worker(cmd)))
        }
        _ => Err(ProtocolError::UnknownHeader),
    }
}

/// Decodes a message as the broker's ROUTER received it: `[routing_id, ...]`.
pub fn decode_routed(mut frames: Vec<Frame>) -> Result<(Frame, Dialect, Message), ProtocolError> {
    if frames.is_empty() {
        return Err(ProtocolError::MissingRoutingId);
    }
    let sender = frames.remove(0);
    let (dialect, message) = decode(Direction::ToBroker, frames)?;
    Ok((sender, dialect, message))
}

fn single_byte(frame: &[u8]) -> Option<u8> {
    match frame {
        [b] => Some(*b),
        _ => None,
    }
}

fn service_frame(frame: Option<Frame>) -> Result<Frame, ProtocolError> {
    match frame {
        Some(f) if !f.is_empty() => Ok(f),
        _ => Err(ProtocolError::MissingService),
    }
}

fn ready(mut frames: impl Iterator<Item = Frame>) -> Result<WorkerCommand, ProtocolError> {
    let service = service_frame(frames.next())?;
    let credit = match frames.next() {
        Some(frame) => credit::parse_credit(&frame)?,
        None => 1,
    };
    if frames.next().is_some() {
        return Err(ProtocolError::TrailingFrames("READY"));
    }
    Ok(WorkerCommand::Ready { service, credit })
}

fn bare(
    mut frames: impl Iterator<Item = Frame>,
    cmd: WorkerCommand,
    name: &'static str,
) -> Result<WorkerCommand, ProtocolError> {
    if frames.next().is_some() {
        return Err(ProtocolError::TrailingFrames(name));
    }
    Ok(cmd)
}

/// `[client, "", body...]` (or `[client, body...]` when `delimited` is false).
fn addressed(
    mut frames: impl Iterator<Item = Frame>,
    delimited: bool,
    build: impl FnOnce(Frame, Vec<Frame>) -> WorkerCommand,
) -> Result<WorkerCommand, ProtocolError> {
    let client = match frames.next() {
        Some(f) if !f.is_empty() => f,
        _ => return Err(ProtocolError::MissingClientAddress),
    };
    if delimited {
        match frames.next() {
            Some(f) if f.is_empty() => {}
            _ => return Err(ProtocolError::MissingDelimiter),
        }
    }
    Ok(build(client, frames.collect()))
}

/// Appends the frames of `message` in `dialect` to `out` (after anything already there, such as a
/// routing id).
pub fn encode(
    dialect: Dialect,
    direction: Direction,
    message: Message,
    out: &mut Vec<Frame>,
) -> Result<(), ProtocolError> {
    let leading_empty = match dialect {
        Dialect::V01 => true,
        Dialect::V02 => false,
        Dialect::Go => direction == Direction::ToBroker,
    };
    if leading_empty {
        out.push(Frame::new());
    }
    match message {
        Message::Client(cmd) => encode_client(dialect, cmd, out),
        Message::Worker(cmd) => encode_worker(dialect, cmd, out),
    }
}

fn encode_client(
    dialect: Dialect,
    cmd: ClientCommand,
    out: &mut Vec<Frame>,
) -> Result<(), ProtocolError> {
    let (code, word, service, body) = match cmd {
        ClientCommand::Request { service, body } => (C_REQUEST, "REQUEST", service, body),
        ClientCommand::Partial { service, body } => (C_PARTIAL, "PARTIAL", service, body),
        ClientCommand::Final { service, body } => (C_FINAL, "FINAL", service, body),
    };
    match dialect {
        Dialect::V01 => {
            if code == C_PARTIAL {
                return Err(ProtocolError::Unsupported {
                    command: "PARTIAL",
                    dialect: "0.1",
                });
            }
            out.push(Frame::from(MDPC01));
        }
        Dialect::V02 => {
            out.push(Frame::from(MDPC02));
            out.push(Frame::from(&[code][..]));
        }
        Dialect::Go => {
            out.push(Frame::from(MDPC02));
            out.push(Frame::from(word));
        }
    }
    out.push(service);
    out.extend(body);
    Ok(())
}

fn encode_worker(
    dialect: Dialect,
    cmd: WorkerCommand,
    out: &mut Vec<Frame>,
) -> Result<(), ProtocolError> {
    let header = if dialect == Dialect::V01 {
        MDPW01
    } else {
        MDPW02
    };
    out.push(Frame::from(header));
    let command = |out: &mut Vec<Frame>, v01: u8, v02: u8, word: &str| match dialect {
        Dialect::V01 => out.push(Frame::from(&[v01][..])),
        Dialect::V02 => out.push(Frame::from(&[v02][..])),
        Dialect::Go => out.push(Frame::from(word)),
    };
    match cmd {
        WorkerCommand::Ready { service, credit } => {
            command(out, W_READY, W_READY, "READY");
            out.push(service);
            if credit != 1 {
                if !(1..=credit::MAX_CREDIT).contains(&credit) {
                    return Err(ProtocolError::InvalidCredit);
                }
                out.push(credit::credit_frame(credit));
            }
        }
        WorkerCommand::Request { client, body } => {
            command(out, W_REQUEST, W_REQUEST, "REQUEST");
            out.push(client);
            out.push(Frame::new());
            out.extend(body);
        }
        WorkerCommand::Partial { client, body } => {
            if dialect == Dialect::V01 {
                return Err(ProtocolError::Unsupported {
                    command: "PARTIAL",
                    dialect: "0.1",
                });
            }
            command(out, 0, W02_PARTIAL, "PARTIAL");
            out.push(client);
            if dialect != Dialect::Go {
                out.push(Frame::new());
            }
            out.extend(body);
        }
        WorkerCommand::Final { client, body } => {
            command(out, W01_REPLY, W02_FINAL, "FINAL");
            out.push(client);
            if dialect != Dialect::Go {
                out.push(Frame::new());
            }
            out.extend(body);
        }
        WorkerCommand::Heartbeat => command(out, W01_HEARTBEAT, W02_HEARTBEAT, "HEARTBEAT"),
        WorkerCommand::Disconnect => command(out, W01_DISCONNECT, W02_DISCONNECT, "DISCONNECT"),
    }
    Ok(())
}

/// Receives one whole multipart message as frames, without copying them.
pub fn recv_frames(socket: &zmq::Socket, flags: i32) -> zmq::Result<Vec<Frame>> {
    let mut frames = Vec::with_capacity(8);
    recv_frames_into(socket, flags, &mut frames)?;
    Ok(frames)
}

/// Like [`recv_frames`], into `frames` (cleared first), so a busy receiver reuses one buffer
/// instead of allocating per message.
pub fn recv_frames_into(
    socket: &zmq::Socket,
    flags: i32,
    frames: &mut Vec<Frame>,
) -> zmq::Result<()> {
    frames.clear();
    loop {
        let mut frame = Frame::new();
        socket.recv(&mut frame, flags)?;
        let more = frame.get_more();
        frames.push(frame);
        if !more {
            return Ok(());
        }
    }
}

/// Sends frames as one multipart message, moving them into libzmq without copying.
pub fn send_frames(socket: &zmq::Socket, frames: Vec<Frame>, flags: i32) -> zmq::Result<()> {
    let last = frames.len().saturating_sub(1);
    for (i, frame) in frames.into_iter().enumerate() {
        let more = if i < last { zmq::SNDMORE } else { 0 };
        socket.send(frame, flags | more)?;
    }
    Ok(())
}

/// Builds frames from byte slices; handy for tests and for small fixed messages.
pub fn frames_of<T: AsRef<[u8]>>(parts: &[T]) -> Vec<Frame> {
    parts.iter().map(|p| Frame::from(p.as_ref())).collect()
}

/// Copies frames into owned byte vectors (the SDK's public body type).
pub fn to_vecs(frames: &[Frame]) -> Vec<Vec<u8>> {
    frames.iter().map(|f| f.to_vec()).collect()
}

#[cfg(test)]
mod tests;
