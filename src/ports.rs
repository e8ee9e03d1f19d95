//! The TCP ports `plantd up` binds: moving them all by `--port-offset`, listing them
//! (`--print-ports`), and checking before anything starts that none is taken, so a clash is one
//! error naming the port and its setting instead of a service failing after the others started.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use thiserror::Error;

/// Why the ports cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PortError {
    /// The offset moves a port past the last one.
    #[error("--port-offset {offset} moves {what} from port {port} past 65535")]
    Overflow {
        /// The listener whose port it is.
        what: String,
        /// The port before the offset.
        port: u16,
        /// The offset.
        offset: u16,
    },
    /// Something else already listens on a port.
    #[error(
        "port {port} is taken: {what} cannot listen on {addr} (is another plantd running? \
         move this one with --port-offset N, or set {setting})"
    )]
    Taken {
        /// The port.
        port: u16,
        /// The listener that needs it.
        what: String,
        /// The address it binds.
        addr: String,
        /// What sets the port.
        setting: &'static str,
    },
}

/// Adds `offset` to `port`, the port of `what`.
pub fn shift_port(port: u16, offset: u16, what: &str) -> Result<u16, PortError> {
    port.checked_add(offset).ok_or_else(|| PortError::Overflow {
        what: what.to_owned(),
        port,
        offset,
    })
}

/// Adds `offset` to the port of a `tcp://host:port` endpoint. Endpoints of other transports
/// (`ipc://`, `inproc://`) and wildcard ports (`tcp://*:*`) have no port to move and come back
/// unchanged.
pub fn shift_endpoint(endpoint: &str, offset: u16, what: &str) -> Result<String, PortError> {
    match tcp_port(endpoint) {
        Some((host, port)) => Ok(format!("tcp://{host}:{}", shift_port(port, offset, what)?)),
        None => Ok(endpoint.to_owned()),
    }
}

/// The host and numeric port of a `tcp://` endpoint.
fn tcp_port(endpoint: &str) -> Option<(&str, u16)> {
    let (host, port) = endpoint.strip_prefix("tcp://")?.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// One TCP port `plantd up` binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// What listens there (`broker MDP`, `state health`, `bus metric frontend`, ...).
    pub what: String,
    /// The host or address it binds (`*` and `0.0.0.0` for every interface).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The variable (or flag) that sets it.
    pub setting: &'static str,
}

impl Binding {
    /// The binding of a `tcp://host:port` endpoint; `None` for other transports.
    pub fn endpoint(what: String, endpoint: &str, setting: &'static str) -> Option<Binding> {
        let (host, port) = tcp_port(endpoint)?;
        Some(Binding {
            what,
            host: host.to_owned(),
            port,
            setting,
        })
    }

    /// The binding of an HTTP health server.
    pub fn health(what: String, host: &str, port: u16, setting: &'static str) -> Binding {
        Binding {
            what,
            host: host.to_owned(),
            port,
            setting,
        }
    }

    /// The address to bind, as the services bind it (`*` is every interface).
    fn bind_host(&self) -> &str {
        match self.host.as_str() {
            "*" => "0.0.0.0",
            host => host.trim_start_matches('[').trim_end_matches(']'),
        }
    }

    /// Where a client on this host reaches the listener: loopback for an every-interface bind.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.bind_host().parse().ok()?;
        let ip = match ip {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Some(SocketAddr::new(ip, self.port))
    }

    /// Fails with [`PortError::Taken`] if something listens on this port already. Only "address
    /// in use" counts: any other bind error (an interface name libzmq resolves but std does not)
    /// is left for the service itself to report.
    pub fn check_free(&self) -> Result<(), PortError> {
        match TcpListener::bind((self.bind_host(), self.port)) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(PortError::Taken {
                port: self.port,
                what: self.what.clone(),
                addr: format!("{}:{}", self.host, self.port),
                setting: self.setting,
            }),
            // The probe listener closes here, before the service binds the port.
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<6} {:<26} {}", self.port, self.what, self.setting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_move_tcp_ports_and_nothing_else() {
        assert_eq!(
            shift_endpoint("tcp://*:9797", 100, "mdp"),
            Ok("tcp://*:9897".into())
        );
        assert_eq!(
            shift_endpoint("tcp://127.0.0.1:13001", 1, "bus"),
            Ok("tcp://127.0.0.1:13002".into())
        );
        assert_eq!(
            shift_endpoint("tcp://[::1]:11000", 5, "bus"),
            Ok("tcp://[::1]:11005".into())
        );
        for unchanged in ["ipc:///tmp/plantd", "inproc://bus", "tcp://*:*"] {
            assert_eq!(shift_endpoint(unchanged, 7, "x"), Ok(unchanged.into()));
        }
        assert_eq!(shift_port(8081, 0, "x"), Ok(8081));
        assert_eq!(
            shift_endpoint("tcp://*:65000", 1000, "broker MDP"),
            Err(PortError::Overflow {
                what: "broker MDP".into(),
                port: 65000,
                offset: 1000
            })
        );
    }

    #[test]
    fn a_taken_port_is_named_with_its_setting() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let binding = Binding::health(
            "state health".into(),
            "127.0.0.1",
            port,
            "PLANTD_STATE_HEALTH_PORT",
        );
        let error = binding.check_free().unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("port {port} is taken")),
            "{error}"
        );
        assert!(error.contains("state health"), "{error}");
        assert!(error.contains("PLANTD_STATE_HEALTH_PORT"), "{error}");
        drop(held);
        binding.check_free().expect("free once released");

        let mdp = Binding::endpoint("broker MDP".into(), "tcp://*:9797", "--endpoint").unwrap();
        assert_eq!(mdp.local_addr(), Some("127.0.0.1:9797".parse().unwrap()));
        assert_eq!(Binding::endpoint("x".into(), "ipc:///tmp/x", "-"), None);
    }
}
