//! Helpers for tests that run real services on loopback.

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; we release it at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral loopback port")
}

/// `tcp://127.0.0.1:<free port>`.
pub fn free_endpoint() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}
