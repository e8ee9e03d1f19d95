//! What the security tests share: a [`Keyring`] (broker key, client keys, the allow list file),
//! buses on free ports, raw CURVE peers, and a TCP [`Relay`] that records the bytes on the wire.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plantd_broker::bus::{BusConfig, BusSettings};
use plantd_broker::security::CurveSettings;
use plantd_broker::BrokerConfig;
use plantd_worker_sdk::curve::{write_key_pair, ClientCurve, PublicKey};
use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::testing::free_endpoint;

use crate::common::Peer;

/// The broker's key pair and an allow list of named keys, in a temporary directory.
pub struct Keyring {
    dir: tempfile::TempDir,
    /// The broker's public key.
    pub broker: PublicKey,
    lines: Vec<(String, String)>,
}

impl Keyring {
    pub fn new() -> Keyring {
        let dir = tempfile::tempdir().expect("tempdir");
        let (keys, _, _) = write_key_pair(&dir.path().join("broker")).expect("broker key");
        let keyring = Keyring {
            dir,
            broker: keys.public,
            lines: Vec::new(),
        };
        keyring.write();
        keyring
    }

    /// A new key `name` with `policy` on the allow list; its client settings.
    pub fn add(&mut self, name: &str, policy: &str) -> ClientCurve {
        let curve = self.unlisted(name);
        self.lines.push((
            name.to_owned(),
            format!("{} {name} {policy}", curve.public_key()),
        ));
        self.write();
        curve
    }

    /// A new key `name` that is not on the allow list.
    pub fn unlisted(&self, name: &str) -> ClientCurve {
        let (keys, _, _) = write_key_pair(&self.dir.path().join(name)).expect("key");
        ClientCurve::new(keys, self.broker)
    }

    /// Takes `name` off the allow list (the file is rewritten; the broker reloads on SIGHUP or
    /// when it notices).
    pub fn remove(&mut self, name: &str) {
        self.lines.retain(|(n, _)| n != name);
        self.write();
    }

    pub fn secret_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.key"))
    }

    pub fn list_file(&self) -> PathBuf {
        self.dir.path().join("authorized_keys")
    }

    /// The broker's `curve` settings (reloading on SIGHUP only, so tests decide when).
    pub fn settings(&self) -> CurveSettings {
        CurveSettings {
            secret_key_file: Some(self.secret_file("broker")),
            authorized_keys: Some(self.list_file()),
            reload_interval_ms: 0,
        }
    }

    fn write(&self) {
        let mut text = String::from("# test allow list\n");
        for (_, line) in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        // Write then rename, as an operator's editor would: readers never see half a file.
        let tmp = self.dir.path().join("authorized_keys.tmp");
        std::fs::write(&tmp, text).expect("write allow list");
        std::fs::rename(&tmp, self.list_file()).expect("rename allow list");
    }
}

/// Test broker settings with CURVE from `keyring` and buses `names` on free loopback ports.
pub fn curve_config(keyring: &Keyring, buses: &[&str]) -> impl FnOnce(&mut BrokerConfig) {
    let curve = keyring.settings();
    let bus = buses_on_free_ports(buses);
    move |config| {
        config.curve = curve;
        config.bus = bus;
    }
}

/// Buses `names` on free loopback ports (none: buses off).
pub fn buses_on_free_ports(names: &[&str]) -> BusSettings {
    if names.is_empty() {
        return BusSettings::disabled();
    }
    BusSettings {
        buses: names
            .iter()
            .map(|name| BusConfig {
                name: (*name).to_owned(),
                frontend: free_endpoint(),
                backend: free_endpoint(),
                capture: None,
            })
            .collect(),
        ..BusSettings::default()
    }
}

/// A raw MDP peer that is a CURVE client with `curve`, optionally with a fixed routing id.
pub fn curve_peer(
    context: &zmq::Context,
    endpoint: &str,
    dialect: Dialect,
    curve: &ClientCurve,
    routing_id: Option<&[u8]>,
) -> Peer {
    let socket = context.socket(zmq::DEALER).expect("dealer");
    socket.set_linger(0).expect("linger");
    curve.apply(&socket).expect("curve");
    if let Some(id) = routing_id {
        socket.set_identity(id).expect("routing id");
    }
    socket.connect(endpoint).expect("connect");
    Peer { socket, dialect }
}

/// A TCP relay in front of `target` that records every byte it carries, both ways.
pub struct Relay {
    /// Where to connect instead of `target`.
    pub endpoint: String,
    bytes: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(target: &str) -> Relay {
        let target = target
            .strip_prefix("tcp://")
            .expect("tcp endpoint")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
        let endpoint = format!("tcp://{}", listener.local_addr().expect("address"));
        listener.set_nonblocking(true).expect("nonblocking");
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (recorded, stopped) = (bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        let _ = inbound.set_nonblocking(false);
                        if let Ok(outbound) = TcpStream::connect(&target) {
                            pipe(&inbound, &outbound, &recorded);
                            pipe(&outbound, &inbound, &recorded);
                        }
                    }
                    // Only the accept loop polls: the copies block on their sockets.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Relay {
            endpoint,
            bytes,
            stop,
        }
    }

    /// Whether `needle` went through the relay in clear.
    pub fn saw(&self, needle: &[u8]) -> bool {
        let bytes = self.bytes.lock().unwrap();
        bytes.windows(needle.len()).any(|w| w == needle)
    }

    /// How many bytes went through.
    pub fn len(&self) -> usize {
        self.bytes.lock().unwrap().len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` on a thread, recording the bytes; closes `to` when `from` ends.
fn pipe(from: &TcpStream, to: &TcpStream, recorded: &Arc<Mutex<Vec<u8>>>) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone"),
        to.try_clone().expect("clone"),
    );
    let recorded = recorded.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    recorded.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
