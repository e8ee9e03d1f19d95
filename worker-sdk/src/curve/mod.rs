//! CURVE (RFC 26) for plantd sockets: key pairs and key files, the `curve` section every client
//! and service configuration shares ([`CurveConfig`]), and the settings a socket needs as a CURVE
//! client ([`ClientCurve`]) or server ([`ServerCurve`]).
//!
//! - **Keys** are Curve25519 key pairs, written as Z85 text (40 characters): `NAME.key` holds the
//!   secret key (mode 0600), `NAME.pub` the public key ([`write_key_pair`], `plant keys
//!   generate`). A process's public key is derived from its secret key, so configuration names
//!   only the secret key file. No key is built in.
//! - **Secret keys never show**: [`SecretKey`] has no `Display`, its `Debug` is redacted, and
//!   configurations hold the *path* of the secret key file, never the key, so `--print-config`
//!   and logs cannot carry it.
//! - **Clients** (workers, clients, bus publishers and subscribers) set their key pair and the
//!   broker's public key before connecting ([`ClientCurve::apply`]). A broker that refuses the key
//!   is seen in the socket monitor (`crate::monitor::HandshakeFailure`), never as a silent
//!   timeout.
//! - **Servers** (the broker's sockets) also set a ZAP domain and `ZMQ_ZAP_ENFORCE_DOMAIN`
//!   ([`ServerCurve::apply`]), so a missing or crashed ZAP handler admits nobody.
//!
//! - **Profiles**: [`CurveProfiles`], the settings `plant` uses per broker endpoint
//!   (`curve.json`, written by `plantd up --secure`).
//!
//! CURVE needs libzmq built with libsodium: `third_party/zmq-sys` does that for the whole
//! workspace; [`available`] tells at run time.

mod config;
mod keys;
mod profiles;

pub use config::CurveConfig;
pub use keys::{read_public_key, read_secret_key, write_key_pair, KeyPair, PublicKey, SecretKey};
pub use profiles::CurveProfiles;

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::protocol::Frame;

/// Length of a key in bytes.
pub const KEY_BYTES: usize = 32;
/// Length of a key in Z85 text.
pub const Z85_LEN: usize = 40;

/// Why a key or a CURVE setting is unusable.
#[derive(Debug, Error)]
pub enum CurveError {
    /// This libzmq was built without CURVE.
    #[error("this build of libzmq has no CURVE support")]
    Unsupported,
    /// A key is not 40 characters of Z85 (the key itself is never part of the message).
    #[error("{what} is not a CURVE key (40 characters of Z85 expected)")]
    InvalidKey {
        /// Which key (a file name, `curve.server_key`, ...).
        what: String,
    },
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The `curve` settings name only some of what a CURVE client needs.
    #[error("incomplete curve settings: {0}")]
    Incomplete(String),
    /// libzmq refused a CURVE option.
    #[error("cannot set CURVE options: {0}")]
    Zmq(#[from] zmq::Error),
}

/// Whether this libzmq supports CURVE (built with libsodium).
pub fn available() -> bool {
    zmq::has("curve") == Some(true)
}

/// What a CURVE client socket needs: its own key pair and the server's public key. Cheap to
/// clone; `Debug` shows the public keys only.
#[derive(Clone)]
pub struct ClientCurve {
    keys: Arc<KeyPair>,
    server: PublicKey,
}

impl ClientCurve {
    /// A client with `keys` talking to the server whose public key is `server`.
    pub fn new(keys: KeyPair, server: PublicKey) -> Self {
        ClientCurve {
            keys: Arc::new(keys),
            server,
        }
    }

    /// This client's public key (what the broker's allow list names).
    pub fn public_key(&self) -> PublicKey {
        self.keys.public
    }

    /// The server's public key.
    pub fn server_key(&self) -> PublicKey {
        self.server
    }

    /// Makes `socket` a CURVE client; call before it connects.
    pub fn apply(&self, socket: &zmq::Socket) -> zmq::Result<()> {
        socket.set_curve_serverkey(self.server.as_bytes())?;
        socket.set_curve_publickey(self.keys.public.as_bytes())?;
        socket.set_curve_secretkey(self.keys.secret.expose())
    }
}

impl std::fmt::Debug for ClientCurve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCurve")
            .field("public_key", &self.keys.public)
            .field("server_key", &self.server)
            .finish_non_exhaustive()
    }
}

/// Applies `curve` to `socket` if there is one (a plain NULL-mechanism socket otherwise).
pub fn apply_client(curve: Option<&ClientCurve>, socket: &zmq::Socket) -> zmq::Result<()> {
    match curve {
        Some(curve) => curve.apply(socket),
        None => Ok(()),
    }
}

/// What a CURVE server socket needs: its key pair. `Debug` shows the public key only.
#[derive(Clone)]
pub struct ServerCurve {
    keys: Arc<KeyPair>,
}

impl ServerCurve {
    /// A server with `keys`.
    pub fn new(keys: KeyPair) -> Self {
        ServerCurve {
            keys: Arc::new(keys),
        }
    }

    /// The server's public key (what clients configure as `curve.server_key`).
    pub fn public_key(&self) -> PublicKey {
        self.keys.public
    }

    /// Makes `socket` a CURVE server whose peers the ZAP handler authenticates under
    /// `zap_domain`, failing closed: with no handler, no peer is admitted. Call before binding.
    pub fn apply(&self, socket: &mut zmq::Socket, zap_domain: &str) -> zmq::Result<()> {
        socket.set_curve_server(true)?;
        socket.set_curve_secretkey(self.keys.secret.expose())?;
        // Without a domain libzmq skips ZAP altogether (any key is let in), and without
        // ENFORCE_DOMAIN it lets everyone in when no handler is bound.
        socket.set_zap_domain(zap_domain)?;
        crate::sockopt::set_int(socket, crate::sockopt::ZAP_ENFORCE_DOMAIN, 1)
    }
}

impl std::fmt::Debug for ServerCurve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCurve")
            .field("public_key", &self.keys.public)
            .finish_non_exhaustive()
    }
}

// `zmq::Message` (= `Frame`) is a struct whose only field is a `zmq_msg_t`; equal size and
// alignment mean a pointer to the message is a pointer to its `zmq_msg_t`.
const _: () = assert!(
    std::mem::size_of::<Frame>() == std::mem::size_of::<zmq_sys::zmq_msg_t>()
        && std::mem::align_of::<Frame>() == std::mem::align_of::<zmq_sys::zmq_msg_t>()
);

/// The ZAP `User-Id` of the connection `frame` arrived on (what the ZAP handler returned for the
/// peer's key), or `None` for a connection without one (NULL mechanism, inproc).
///
/// Unlike `zmq::Message::gets` this allocates nothing, so a broker can call it per message.
pub fn user_id(frame: &Frame) -> Option<&str> {
    const PROPERTY: &[u8] = b"User-Id\0";
    // SAFETY: `frame` is an initialised `zmq_msg_t` (layout assertion above) that outlives the
    // returned borrow; `zmq_msg_gets` only reads it, takes a NUL-terminated name, and returns
    // NULL or a NUL-terminated string owned by the message's metadata, which lives as long as
    // the message.
    unsafe {
        let value = zmq_sys::zmq_msg_gets(
            (frame as *const Frame).cast::<zmq_sys::zmq_msg_t>(),
            PROPERTY.as_ptr().cast(),
        );
        if value.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(value)
            .to_str()
            .ok()
            .filter(|id| !id.is_empty())
    }
}

#[cfg(test)]
mod tests;
